"""cancel247: cancel 247Express shipments through Celery, with a SQL audit trail."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "enqueue_cancel", "enqueue_cancels"]

if TYPE_CHECKING:
    from cancel247.tasks.producer import enqueue_cancel, enqueue_cancels


def __getattr__(name: str) -> Any:
    # Imported on first use so that `import cancel247` stays cheap and never
    # reads settings.
    if name in ("enqueue_cancel", "enqueue_cancels"):
        from cancel247.tasks import producer

        return getattr(producer, name)
    raise AttributeError(f"module 'cancel247' has no attribute {name!r}")
