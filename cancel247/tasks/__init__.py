"""The cancel task and the producer API."""

from cancel247.tasks.producer import EnqueueError, Producer, enqueue_cancel, enqueue_cancels

__all__ = ["EnqueueError", "Producer", "enqueue_cancel", "enqueue_cancels"]
