"""Enqueue cancellation requests from Python.

Each request is first stored as ``queued`` in the audit store, then sent to
the ``cancel247`` queue as a JSON Celery message whose task id is the request
id. A request whose message was lost on the way can therefore still be found
(and re-sent) from the audit store.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import redis
from celery import Celery
from kombu.exceptions import OperationalError
from kombu.utils.json import dumps as json_dumps

from cancel247.audit.db import get_engine
from cancel247.audit.store import AuditStore, NewRequest
from cancel247.config import Settings, get_settings
from cancel247.tasks.message import MAX_REASON_LENGTH, MAX_SOURCE_LENGTH
from cancel247.validation import validate_order_code
from cancel247.worker.app import TASK_NAME, make_app

# Rows inserted and messages published per round trip by enqueue_many.
BULK_CHUNK = 1000


class EnqueueError(Exception):
    """The broker could not be reached; the unsent requests are recorded as ``failed``."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def _check_text(name: str, value: str | None, limit: int) -> None:
    if value is not None and len(value) > limit:
        raise ValueError(f"{name} is {len(value)} characters long; the maximum is {limit}")


class Producer:
    """Sends cancellation requests to the queue of the given settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app: Celery = make_app(settings)
        self.store = AuditStore(get_engine(settings.database_url.get_secret_value()))

    def enqueue(self, order_code: str, *, reason: str | None = None, source: str | None = None) -> str:
        """Enqueue one request and return its id."""
        return self.enqueue_many([order_code], reason=reason, source=source)[0]

    def enqueue_many(
        self,
        order_codes: Iterable[str],
        *,
        reason: str | None = None,
        source: str | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> list[str]:
        """Validate every code first, then enqueue them all; return the request ids in order.

        Raises InvalidOrderCode for the first bad code before anything is sent.
        """
        codes = [validate_order_code(code) for code in order_codes]
        _check_text("reason", reason, MAX_REASON_LENGTH)
        _check_text("source", source, MAX_SOURCE_LENGTH)
        ids: list[str] = []
        for start in range(0, len(codes), BULK_CHUNK):
            chunk = codes[start : start + BULK_CHUNK]
            now = datetime.now(UTC)
            batch = [
                NewRequest(str(uuid.uuid4()), code, reason=reason, source=source, created_at=now)
                for code in chunk
            ]
            self.store.record_queued(batch)
            try:
                self.publish(batch)
            except EnqueueError as exc:
                unsent = [r.request_id for r in batch]
                self.store.mark_unsent(unsent, f"not sent: {exc.reason}")
                raise EnqueueError(
                    f"{exc.reason}; {len(ids)} request(s) were sent, the next {len(unsent)} are recorded as failed "
                    "and can be sent with `cancel247 replay` once the broker is back",
                    reason=exc.reason,
                ) from exc.__cause__
            ids.extend(r.request_id for r in batch)
            if on_progress is not None:
                on_progress(len(chunk))
        return ids

    def publish(self, batch: list[NewRequest]) -> None:
        """Send one message per request, the whole batch in one Redis transaction; raise EnqueueError if the broker fails.

        Celery builds each message (``as_task_v2``) and kombu wraps it for Redis
        exactly as its own publish does. Only the push is batched, which makes
        bulk enqueue several times faster than one ``send_task`` round trip
        per message.
        """
        queue = self.settings.queue
        try:
            with self.app.connection_for_write() as connection:
                channel = connection.default_channel
                pipe = channel.client.pipeline(transaction=True)
                for new in batch:
                    kwargs: dict[str, Any] = {"order_code": new.order_code, "reason": new.reason, "source": new.source}
                    if new.created_at is not None:
                        kwargs["enqueued_at"] = new.created_at.isoformat()
                    task = self.app.amqp.as_task_v2(new.request_id, TASK_NAME, args=(), kwargs=kwargs)
                    message = channel.prepare_message(
                        json_dumps(task.body), 0, "application/json", "utf-8", task.headers,
                        {**task.properties, "delivery_mode": 2, "reply_to": self.app.thread_oid},
                    )
                    channel._inplace_augment_message(message, "", queue)
                    pipe.lpush(queue, json_dumps(message))
                pipe.execute()
        except (OperationalError, redis.RedisError) as exc:
            reason = f"could not send to the broker: {exc}"
            raise EnqueueError(reason, reason=reason) from exc


_default: Producer | None = None


def default_producer() -> Producer:
    global _default
    if _default is None:
        _default = Producer(get_settings())
    return _default


def enqueue_cancel(order_code: str, *, reason: str | None = None, source: str | None = None) -> str:
    """Enqueue the cancellation of ``order_code`` and return the request id (a UUID string)."""
    return default_producer().enqueue(order_code, reason=reason, source=source)


def enqueue_cancels(
    order_codes: Iterable[str], *, reason: str | None = None, source: str | None = None
) -> list[str]:
    """Enqueue many cancellations; every code is validated before any is sent."""
    return default_producer().enqueue_many(order_codes, reason=reason, source=source)
