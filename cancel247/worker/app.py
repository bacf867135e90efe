"""The Celery application and its settings.

``celery -A cancel247.worker worker`` finds :data:`app` here. Its
configuration is read from :func:`cancel247.config.get_settings` the first
time it is needed, so importing this module never fails on a bad setting.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from cancel247.config import Settings, get_settings

TASK_NAME = "cancel247.cancel_order"


def celery_config(settings: Settings) -> dict[str, Any]:
    """Return the Celery settings every cancel247 app uses."""
    return {
        "broker_url": settings.broker_url.get_secret_value(),
        "broker_connection_retry_on_startup": True,
        # Redis redelivers unacknowledged messages after this many seconds.
        "broker_transport_options": {"visibility_timeout": settings.visibility_timeout_seconds},
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "result_accept_content": ["json"],
        "result_backend": None,
        "task_ignore_result": True,
        "task_default_queue": settings.queue,
        "task_routes": {TASK_NAME: {"queue": settings.queue}},
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # A task that raises is acknowledged; one whose worker dies is not
        # (reject_on_worker_lost), so Redis redelivers it.
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "worker_pool": settings.pool,
        "worker_concurrency": settings.concurrency,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": True,
        "worker_redirect_stdouts": False,
        "timezone": "UTC",
        "enable_utc": True,
    }


def make_app(settings: Settings, *, main: str = "cancel247") -> Celery:
    """Create a Celery app configured from ``settings`` (used by producers)."""
    celery_app = Celery(main, set_as_current=False)
    celery_app.conf.update(celery_config(settings))
    return celery_app


app = Celery("cancel247", include=["cancel247.tasks.cancel"])


@app.on_configure.connect
def _configure(sender: Celery, **_: Any) -> None:
    sender.conf.update(celery_config(get_settings()))
