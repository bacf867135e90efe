"""The Celery worker: ``celery -A cancel247.worker worker`` or ``cancel247 worker``."""

from cancel247.worker.app import TASK_NAME, app, celery_config, make_app
from cancel247.worker import signals as _signals  # noqa: F401  (connects the worker signals)

__all__ = ["TASK_NAME", "app", "celery_config", "make_app"]
