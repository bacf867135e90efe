"""The ``cancel247.cancel_order`` Celery task."""

from __future__ import annotations

import logging
import math
import random
from typing import Any

from celery import Task

from cancel247.audit.store import AuditUnavailable, NewRequest
from cancel247.config import Settings
from cancel247.tasks.message import InvalidMessage, order_code_of, parse_message
from cancel247.tasks.runner import RequestHeld, RequestRun
from cancel247.worker.app import TASK_NAME, app
from cancel247.worker.runtime import get_runtime

log = logging.getLogger(__name__)

# Waits between re-deliveries while the audit store cannot be written, in
# seconds: the carrier is never called without its audit row, so the task
# waits for the database instead, without limit.
AUDIT_RETRY_INITIAL_SECONDS = 2
AUDIT_RETRY_MAX_SECONDS = 60


@app.task(name=TASK_NAME, bind=True, typing=False, max_retries=None, acks_late=True, reject_on_worker_lost=True)
def cancel_order(self: Task, *args: Any, **kwargs: Any) -> str:
    """Cancel one order with the carrier and record every attempt."""
    request_id = str(self.request.id)
    runtime = get_runtime()
    try:
        message = parse_message(args, kwargs)
    except InvalidMessage as exc:
        log.warning("request=%s rejected as invalid: %s", request_id, exc)
        new = NewRequest(
            request_id=request_id,
            order_code=order_code_of(kwargs, args),
            reason=kwargs.get("reason") if isinstance(kwargs.get("reason"), str) else None,
            source=kwargs.get("source") if isinstance(kwargs.get("source"), str) else None,
        )
        _with_audit_retry(self, lambda: runtime.store.record_invalid(new, f"invalid message: {exc}"))
        return "invalid"

    new = NewRequest(
        request_id=request_id,
        order_code=message.order_code,
        reason=message.reason,
        source=message.source,
        created_at=message.enqueued_at,
    )
    try:
        status = _with_audit_retry(self, lambda: RequestRun(runtime, new).execute())
    except RequestHeld as held:
        # Spread the resumptions, so held requests do not all come back at once.
        countdown = min(held.seconds + random.uniform(0, 1), 0.9 * runtime.settings.max_countdown_seconds)
        raise self.retry(countdown=countdown, exc=held) from None
    return str(status)


def audit_retry_countdown(retries: int, settings: Settings) -> int:
    """Return the seconds to wait before retry number ``retries + 1`` of a task the audit store refused.

    Capped by ``settings.max_countdown_seconds``: a longer countdown would let
    Redis deliver the waiting message a second time.
    """
    countdown = min(AUDIT_RETRY_MAX_SECONDS, AUDIT_RETRY_INITIAL_SECONDS * 2**retries)
    # The largest whole number of seconds strictly below the cap.
    return min(countdown, max(0, math.ceil(settings.max_countdown_seconds) - 1))


def _with_audit_retry(task: Task, work: Any) -> Any:
    try:
        return work()
    except AuditUnavailable as exc:
        retries = task.request.retries or 0
        countdown = audit_retry_countdown(retries, get_runtime().settings)
        log.error(
            "request=%s audit store unavailable, carrier not called; retrying the task in %d s: %s",
            task.request.id, countdown, exc,
        )
        raise task.retry(countdown=countdown, exc=exc) from None
