"""The Celery application and its settings.

``celery -A cancel247.worker worker`` finds :data:`app` here. Its
configuration is read from :func:`cancel247.config.get_settings` the first
time it is needed, so importing this module never fails on a bad setting.
"""

from __future__ import annotations

import ssl
from typing import Any

from celery import Celery

from cancel247.config import Settings, get_settings

TASK_NAME = "cancel247.cancel_order"
# Re-sends requests that stopped progressing; run by celery beat when
# CANCEL247_RECOVER_INTERVAL_SECONDS is set (see cancel247.recover).
RECOVER_TASK_NAME = "cancel247.recover"


def celery_config(settings: Settings) -> dict[str, Any]:
    """Return the Celery settings every cancel247 app uses."""
    return {
        "broker_url": settings.broker_url.get_secret_value(),
        "broker_connection_retry_on_startup": True,
        # Reconnect to Redis for as long as it is down (Celery gives up after
        # 100 attempts by default, about 50 minutes), logging every attempt.
        "broker_connection_max_retries": None,
        # Tasks running when the broker connection drops finish and write
        # their audit rows. Their acknowledgement is lost with the connection,
        # so Redis redelivers the message after the visibility timeout and
        # the claim finds the request final and does not call the carrier.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "broker_transport_options": {
            # Redis redelivers unacknowledged messages after this many seconds.
            "visibility_timeout": settings.visibility_timeout_seconds,
            # kombu 5.7 scans for such messages every interval x throttle
            # seconds, 10 x 10 by default. A throttle of 1 makes the interval
            # the whole delay.
            "unacked_restore_interval": settings.unacked_restore_interval_seconds,
            "unacked_restore_throttle": 1,
        },
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "result_accept_content": ["json"],
        "result_backend": None,
        "task_ignore_result": True,
        "task_default_queue": settings.queue,
        "task_routes": {TASK_NAME: {"queue": settings.queue}, RECOVER_TASK_NAME: {"queue": settings.queue}},
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # A task that raises is acknowledged; one whose worker dies is not
        # (reject_on_worker_lost), so Redis redelivers it.
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "worker_pool": settings.pool,
        "worker_concurrency": settings.concurrency,
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": settings.task_events,
        "worker_hijack_root_logger": True,
        "worker_redirect_stdouts": False,
        "timezone": "UTC",
        "enable_utc": True,
        # Bad messages get one log line, an invalid request and deletion
        # instead of a traceback or a stopped worker.
        "worker_consumer": "cancel247.worker.consumer:Consumer",
        "beat_schedule": _recover_schedule(settings),
        **_broker_tls(settings),
    }


def _recover_schedule(settings: Settings) -> dict[str, Any]:
    if not settings.recover_interval_seconds:
        return {}
    return {
        "cancel247-recover": {
            "task": RECOVER_TASK_NAME,
            "schedule": float(settings.recover_interval_seconds),
            # A run that waited a whole interval in the queue is dropped, so
            # runs do not pile up behind a backlog.
            "options": {"queue": settings.queue, "expires": float(settings.recover_interval_seconds)},
        }
    }


def _broker_tls(settings: Settings) -> dict[str, Any]:
    # kombu 5.7 connects to a rediss:// URL without checking the server's
    # certificate unless configured to. Here the broker certificate is always
    # verified against the system CAs (or SSL_CERT_FILE).
    if settings.broker_url.get_secret_value().startswith("rediss://"):
        return {"broker_use_ssl": {"ssl_cert_reqs": ssl.CERT_REQUIRED}}
    return {}


def make_app(settings: Settings, *, main: str = "cancel247") -> Celery:
    """Create a Celery app configured from ``settings`` (used by producers)."""
    celery_app = Celery(main, set_as_current=False)
    celery_app.conf.update(celery_config(settings))
    return celery_app


app = Celery("cancel247", include=["cancel247.tasks.cancel", "cancel247.tasks.recover"])


@app.on_configure.connect
def _configure(sender: Celery, **_: Any) -> None:
    sender.conf.update(celery_config(get_settings()))
