"""The worker's message consumer: bad messages are logged on one line, recorded and deleted.

Celery 5.7 handles a message it cannot use in several ways: an unregistered
task name, a disallowed content type (pickle) or a body that is not JSON are
logged with a traceback and a dump of the body, then deleted. A missing
``id`` header, a body that is not a ``[args, kwargs, embed]`` list, or a
Redis list item that is not a kombu JSON envelope raises out of the event loop
and stops the worker ("Unrecoverable error").

:class:`Consumer` (set as Celery's ``worker_consumer``) checks each message
before Celery handles it. A bad message gets one log line with the request id,
task name and reason, is stored as an ``invalid`` request when it carries a
usable request id, and is deleted from the queue so that it is never
redelivered.
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer
from kombu.exceptions import ContentDisallowed, DecodeError
from kombu.message import Message

from cancel247.audit.store import AuditUnavailable, NewRequest
from cancel247.tasks.message import order_code_of
from cancel247.worker.app import RECOVER_TASK_NAME, TASK_NAME
from cancel247.worker.runtime import get_runtime

log = logging.getLogger(__name__)

KNOWN_TASKS = (TASK_NAME, RECOVER_TASK_NAME)
# Characters of a header value or of a non-JSON item quoted in a log line.
MAX_QUOTED_CHARS = 120


class RejectedMessage(Exception):
    """A message the worker does not run. The text is the reason, one line."""


def _quote(value: object) -> str:
    if value is None:
        return "-"
    text = value if isinstance(value, str) else repr(value)
    shown = repr(text[:MAX_QUOTED_CHARS])
    if len(text) > MAX_QUOTED_CHARS:
        shown += f"...({len(text)} chars)"
    return shown


def request_id_of(headers: object) -> str | None:
    """Return the ``id`` header if it is a UUID string, the form the audit store files requests under."""
    if not isinstance(headers, dict):
        return None
    value = headers.get("id")
    if not isinstance(value, str) or len(value) > 36:
        return None
    try:
        uuid.UUID(value)
    except ValueError:
        return None
    return value


def check_message(message: Message) -> tuple[str, list[Any], dict[str, Any]]:
    """Return (task name, args, kwargs) of a usable Celery protocol 2 message; raise RejectedMessage."""
    headers = message.headers
    if not isinstance(headers, dict):
        raise RejectedMessage("message headers are not a JSON object; send Celery protocol 2 messages")

    task = headers.get("task")
    if task is None:
        raise RejectedMessage("no 'task' header; send Celery protocol 2 messages with task cancel247.cancel_order")
    if task not in KNOWN_TASKS:
        raise RejectedMessage(f"unknown task {_quote(task)}; this worker runs only {', '.join(KNOWN_TASKS)}")
    if "id" not in headers:
        raise RejectedMessage("no 'id' header; set it to a new UUID, the request id")
    if request_id_of(headers) is None:
        raise RejectedMessage(f"'id' header {_quote(headers['id'])} is not a UUID; use a new UUID per request")

    try:
        body = message.decode()
    except ContentDisallowed:
        raise RejectedMessage(
            f"content type {_quote(message.content_type)} is not accepted; send JSON (application/json)"
        ) from None
    except (DecodeError, ValueError, TypeError) as exc:
        raise RejectedMessage(f"body is not valid {_quote(message.content_type)}: {_quote(str(exc))}") from None

    if not (isinstance(body, list | tuple) and len(body) == 3):
        raise RejectedMessage("body is not the JSON array [args, kwargs, embed] of Celery protocol 2")
    args, kwargs, embed = body
    if not isinstance(args, list | tuple):
        raise RejectedMessage("args (body[0]) is not a JSON array; send [] and put the fields in kwargs")
    if not isinstance(kwargs, dict):
        raise RejectedMessage("kwargs (body[1]) is not a JSON object such as {\"order_code\": \"...\"}")
    if embed is not None and not isinstance(embed, dict):
        raise RejectedMessage("embed (body[2]) is not a JSON object or null")

    if task == RECOVER_TASK_NAME and (args or kwargs):
        raise RejectedMessage(f"{RECOVER_TASK_NAME} takes no arguments")
    return task, list(args), kwargs


class Consumer(CeleryConsumer):
    """Celery's consumer with the checks described in the module docstring."""

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Any:
        celery_handler = super().create_task_handler(*args, **kwargs)
        self._guard_envelope_reads()

        def on_task_received(message: Message) -> Any:
            try:
                check_message(message)
            except RejectedMessage as exc:
                return self.discard(message, str(exc))
            try:
                return celery_handler(message)
            except Exception as exc:  # noqa: BLE001  (anything left would stop the worker)
                return self.discard(message, f"Celery could not read the message: {type(exc).__name__}: {_quote(str(exc))}")

        return on_task_received

    def _guard_envelope_reads(self) -> None:
        """Make the Redis channel drop list items that are not kombu envelopes instead of stopping the worker."""
        channel = getattr(self.task_consumer, "channel", None)
        handlers = getattr(channel, "handlers", None)
        # kombu's Redis channel reads queues through handlers["BRPOP"] (kombu 5.7).
        if not isinstance(handlers, dict) or "BRPOP" not in handlers:
            return
        read = handlers["BRPOP"]
        if getattr(read, "cancel247_guarded", False):
            return

        @functools.wraps(read)
        def guarded_read(**options: Any) -> Any:
            try:
                return read(**options)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                # json.JSONDecodeError keeps the item it could not parse in .doc.
                item = getattr(exc, "doc", None)
                log.error(
                    "message rejected and deleted: a queue item is not a kombu JSON envelope (%s: %s)%s",
                    type(exc).__name__, _quote(str(exc)), f"; item starts {_quote(item)}" if item else "",
                )
                return True

        guarded_read.cancel247_guarded = True  # type: ignore[attr-defined]
        handlers["BRPOP"] = guarded_read

    def discard(self, message: Message, reason: str) -> None:
        """Log ``reason`` on one line, record an invalid request if the message has a request id, delete it."""
        headers = message.headers if isinstance(message.headers, dict) else {}
        request_id = request_id_of(headers)
        queue = (message.delivery_info or {}).get("routing_key")
        recorded = self._record_invalid(message, request_id, reason) if request_id else "no request id, not recorded"
        log.error(
            "message rejected and deleted: request=%s task=%s queue=%s: %s (%s)",
            request_id or _quote(headers.get("id")), _quote(headers.get("task")), queue, reason, recorded,
        )
        if not message.acknowledged:
            # For Redis a reject without requeue deletes the message for good.
            message.reject(requeue=False)

    def _record_invalid(self, message: Message, request_id: str, reason: str) -> str:
        kwargs: dict[str, Any] = {}
        args: tuple[Any, ...] = ()
        try:
            body = json.loads(message.body) if message.content_type == "application/json" else None
            if isinstance(body, list) and len(body) == 3 and isinstance(body[1], dict):
                kwargs = body[1]
                args = tuple(body[0]) if isinstance(body[0], list) else ()
        except (ValueError, TypeError):
            pass
        new = NewRequest(
            request_id=request_id,
            order_code=order_code_of(kwargs, args),
            reason=kwargs.get("reason") if isinstance(kwargs.get("reason"), str) else None,
            source=kwargs.get("source") if isinstance(kwargs.get("source"), str) else None,
        )
        try:
            get_runtime().store.record_invalid(new, f"invalid message: {reason}")
        except AuditUnavailable as exc:
            # The message is deleted anyway: requeueing a message that can
            # never run would loop.
            return f"NOT recorded, {exc}"
        return "recorded as invalid"

    # Celery calls these for the cases it detects itself; each is reduced to one line.

    def on_unknown_message(self, body: Any, message: Message) -> None:
        self.discard(message, "not a Celery task message")

    def on_unknown_task(self, body: Any, message: Message, exc: Exception) -> None:
        self.discard(message, f"unknown task {_quote(message.headers.get('task'))}")

    def on_invalid_task(self, body: Any, message: Message, exc: Exception) -> None:
        self.discard(message, f"invalid task message: {_quote(str(exc))}")

    def on_decode_error(self, message: Message, exc: Exception) -> None:
        self.discard(message, f"body cannot be decoded: {_quote(str(exc))}")
