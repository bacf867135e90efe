"""Find requests that stopped progressing and send their messages again.

A request stays ``queued`` or ``in_progress`` for good when its message is
lost: Redis restarted without persistence, a producer died between the audit
row and the send, or someone deleted the queue. :func:`recover` finds such
requests and sends the same request id again. The worker's claim continues
an ``in_progress`` request (marking attempts left ``in_flight`` as
``interrupted``) and starts a ``queued`` one.

A request counts as stuck when its row and its attempts have not changed for
longer than the threshold, and its message is neither waiting in the queue
nor held unacknowledged by a worker. The threshold must exceed the longest a
task can run (:attr:`Settings.longest_task_seconds`), or a running request
could be sent twice. Each recovery starts a new run and is recorded as a
:class:`~cancel247.audit.models.Replay` row with the actor ``recover``, so
``cancel247 history`` shows it between the runs. The update is a
compare-and-set on (status, run, no recent progress) done in the same
transaction as the send, so two recovers at once send each request once, and
a failed send changes nothing.

``cancel247 recover`` and the ``cancel247.recover`` Celery task (run by celery
beat when ``CANCEL247_RECOVER_INTERVAL_SECONDS`` is set) are thin layers over
this module.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kombu.exceptions import OperationalError
from redis.exceptions import RedisError
from sqlalchemy import ColumnElement, Select, or_, select, update
from sqlalchemy.orm import Session

from cancel247.audit.models import Attempt, CancelRequest, Replay, RequestStatus
from cancel247.audit.store import NewRequest, utcnow
from cancel247.config import Settings
from cancel247.ops import DEFAULT_REPLAY_RATE_PER_SECOND, _Pacer
from cancel247.tasks.producer import EnqueueError, Producer

log = logging.getLogger(__name__)

RECOVER_ACTOR = "recover"
STUCK_STATUSES = (RequestStatus.QUEUED.value, RequestStatus.IN_PROGRESS.value)
# Added to the redelivery bound for the default threshold, in seconds: Redis
# redelivers the message of a killed worker first, and recover handles only
# messages that are gone.
DEFAULT_MARGIN_SECONDS = 60
# Messages read per round trip while scanning the queue.
SCAN_PAGE_SIZE = 1000

_AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class RecoverError(ValueError):
    """An unusable recover option. The message names the value and the fix."""


def minimum_age_seconds(settings: Settings) -> float:
    """Return the shortest safe threshold: the longest a task can run with ``settings``."""
    return settings.longest_task_seconds


def default_age_seconds(settings: Settings) -> float:
    """Return CANCEL247_RECOVER_AFTER_SECONDS, or the redelivery bound plus DEFAULT_MARGIN_SECONDS."""
    if settings.recover_after_seconds is not None:
        return float(settings.recover_after_seconds)
    return float(settings.redelivery_bound_seconds + DEFAULT_MARGIN_SECONDS)


def parse_age(value: str) -> float:
    """Parse ``900``, ``900s``, ``15m``, ``2h`` or ``1d`` into seconds."""
    match = _AGE.match(value.strip())
    if not match:
        raise RecoverError(f"invalid age {value!r}: give seconds (900) or a number with s, m, h or d (15m, 2h)")
    amount, unit = match.groups()
    return float(amount) * _UNIT_SECONDS[unit]


def check_age(settings: Settings, seconds: float, *, name: str = "--older-than") -> None:
    """Raise RecoverError unless ``seconds`` exceeds the longest possible task."""
    minimum = minimum_age_seconds(settings)
    if seconds <= minimum:
        raise RecoverError(
            f"{name} {seconds:g} s is too short: a task can run up to {minimum:.0f} s with the current "
            f"retry and timeout settings, so a request still running would be sent twice; "
            f"give at least {math.floor(minimum) + 1} s"
        )


def _no_recent_attempt(cutoff: datetime) -> ColumnElement[bool]:
    recent = (
        select(Attempt.id)
        .where(
            Attempt.request_id == CancelRequest.id,
            or_(Attempt.started_at >= cutoff, Attempt.finished_at >= cutoff),
        )
        .exists()
    )
    return ~recent


def stuck_query(cutoff: datetime) -> Select[Any]:
    """Select queued and in_progress requests with no change to the row or its attempts since ``cutoff``."""
    return (
        select(CancelRequest)
        .where(
            CancelRequest.status.in_(STUCK_STATUSES),
            CancelRequest.updated_at < cutoff,
            _no_recent_attempt(cutoff),
        )
        .order_by(CancelRequest.updated_at, CancelRequest.id)
    )


@dataclass(frozen=True)
class StuckRequest:
    request_id: str
    order_code: str
    status: str
    run: int
    updated_at: datetime
    reason: str | None
    source: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "order_code": self.order_code,
            "status": self.status,
            "run": self.run,
            "updated_at": self.updated_at.isoformat(),
        }


def find_stuck(session: Session, cutoff: datetime) -> list[StuckRequest]:
    return [
        StuckRequest(r.id, r.order_code, r.status, r.run, r.updated_at, r.reason, r.source)
        for r in session.execute(stuck_query(cutoff)).scalars()
    ]


def _message_ids(raw_items: list[Any], *, unacked: bool) -> set[str]:
    ids: set[str] = set()
    for raw in raw_items:
        try:
            data = json.loads(raw)
            # kombu keeps an unacknowledged message as [envelope, exchange, routing key].
            envelope = data[0] if unacked else data
            task_id = envelope["headers"]["id"]
        except (ValueError, TypeError, KeyError, IndexError):
            continue
        if isinstance(task_id, str):
            ids.add(task_id)
    return ids


def ids_in_broker(producer: Producer) -> set[str]:
    """Return the task ids waiting in the queue or held unacknowledged by a worker.

    Reads kombu's Redis layout (kombu 5.7): one list per queue and priority
    step, and one hash of unacknowledged messages for all queues.
    """
    # NOTE: a message a worker has just popped but not yet added to the
    # unacknowledged hash is in neither place for a moment. Its request is
    # still protected unless it also looks older than the threshold.
    queue = producer.settings.queue
    ids: set[str] = set()
    with producer.app.connection_for_write() as connection:
        channel = connection.default_channel
        client = channel.client
        for step in channel.priority_steps:
            key = channel._q_for_pri(queue, step)
            for start in range(0, int(client.llen(key)), SCAN_PAGE_SIZE):
                ids |= _message_ids(client.lrange(key, start, start + SCAN_PAGE_SIZE - 1), unacked=False)
        for _, values in _hash_pages(client, channel.unacked_key):
            ids |= _message_ids(values, unacked=True)
    return ids


def _hash_pages(client: Any, key: str) -> Any:
    cursor = 0
    while True:
        cursor, page = client.hscan(key, cursor, count=SCAN_PAGE_SIZE)
        yield cursor, list(page.values())
        if cursor == 0:
            return


@dataclass
class RecoverPlan:
    """Preview of a recover: the stuck requests, and the old ones whose message still exists."""

    cutoff: datetime
    older_than_seconds: float
    stuck: list[StuckRequest]
    in_broker: list[StuckRequest]

    @property
    def by_status(self) -> Counter[str]:
        return Counter(r.status for r in self.stuck)


def plan_recover(producer: Producer, older_than_seconds: float, *, now: datetime | None = None) -> RecoverPlan:
    """Find the requests a recover would send; changes nothing."""
    check_age(producer.settings, older_than_seconds)
    cutoff = (now or utcnow()) - timedelta(seconds=older_than_seconds)
    with Session(producer.store.engine) as session:
        candidates = find_stuck(session, cutoff)
    try:
        present = ids_in_broker(producer) if candidates else set()
    except (OperationalError, RedisError) as exc:
        reason = f"could not read the queue from the broker: {exc}"
        raise EnqueueError(reason, reason=reason) from exc
    stuck = [r for r in candidates if r.request_id not in present]
    in_broker = [r for r in candidates if r.request_id in present]
    return RecoverPlan(cutoff, older_than_seconds, stuck, in_broker)


@dataclass
class RecoverResult:
    batch_id: str
    plan: RecoverPlan
    enqueued: list[str] = field(default_factory=list)
    # Requests a worker or another recover changed between selection and update.
    skipped_changed: list[str] = field(default_factory=list)
    # Requests whose message could not be sent; they are left as they were.
    send_failed: list[str] = field(default_factory=list)
    send_error: str | None = None

    @property
    def complete(self) -> bool:
        return not (self.skipped_changed or self.send_failed)


def _take_for_recovery(
    session: Session, row: StuckRequest, cutoff: datetime, *, actor: str, reason: str, selection_json: str, batch_id: str
) -> bool:
    now = utcnow()
    result = session.execute(
        update(CancelRequest)
        .where(
            CancelRequest.id == row.request_id,
            CancelRequest.status == row.status,
            CancelRequest.run == row.run,
            CancelRequest.updated_at < cutoff,
            _no_recent_attempt(cutoff),
        )
        .values(run=row.run + 1, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    session.add(
        Replay(
            request_id=row.request_id,
            run=row.run + 1,
            previous_status=row.status,
            actor=actor,
            reason=reason,
            selection=selection_json,
            forced=False,
            batch_id=batch_id,
            created_at=now,
        )
    )
    session.flush()
    return True


def recover(
    producer: Producer,
    older_than_seconds: float,
    *,
    actor: str = RECOVER_ACTOR,
    rate_per_second: float = DEFAULT_REPLAY_RATE_PER_SECOND,
    on_progress: Callable[[int], None] | None = None,
    plan: RecoverPlan | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> RecoverResult:
    """Send every stuck request again; see the module docstring."""
    if rate_per_second <= 0:
        raise RecoverError(f"invalid rate {rate_per_second}: give a positive number of requests per second")
    plan = plan or plan_recover(producer, older_than_seconds)
    result = RecoverResult(batch_id=str(uuid.uuid4()), plan=plan)
    selection_json = json.dumps(
        {"older_than_seconds": older_than_seconds, "statuses": list(STUCK_STATUSES)}, sort_keys=True
    )
    pacer = _Pacer(rate_per_second, sleep)
    for row in plan.stuck:
        if result.send_error is not None:
            result.send_failed.append(row.request_id)
        else:
            pacer.wait()
            _recover_one(producer, row, plan, result, actor=actor, selection_json=selection_json)
        if on_progress is not None:
            on_progress(1)
    if result.enqueued or result.send_failed:
        log.warning(
            "recover batch %s: %d stuck request(s) sent again, %d changed meanwhile, %d not sent%s",
            result.batch_id, len(result.enqueued), len(result.skipped_changed), len(result.send_failed),
            f": {result.send_error}" if result.send_error else "",
        )
    return result


def _recover_one(
    producer: Producer, row: StuckRequest, plan: RecoverPlan, result: RecoverResult, *, actor: str, selection_json: str
) -> None:
    age = (utcnow() - row.updated_at).total_seconds()
    reason = (
        f"no progress for {age:.0f} s (threshold {plan.older_than_seconds:g} s) while {row.status} "
        "and no message in the broker: message sent again"
    )
    try:
        # The message is sent inside the transaction that records it: a
        # failed send rolls the record back, and a worker's claim of the
        # request waits for the commit. If the commit itself fails after the
        # send, the worker runs the request in its old run, unrecorded as a
        # recovery.
        with producer.store.transaction() as session:
            if not _take_for_recovery(
                session, row, plan.cutoff, actor=actor, reason=reason,
                selection_json=selection_json, batch_id=result.batch_id,
            ):
                result.skipped_changed.append(row.request_id)
                return
            producer.publish([NewRequest(row.request_id, row.order_code, reason=row.reason, source=row.source)])
    except EnqueueError as exc:
        result.send_error = str(exc)
        result.send_failed.append(row.request_id)
        return
    result.enqueued.append(row.request_id)
    log.warning(
        "request=%s order=%s %s with no progress for %.0f s: message sent again as run %d (recover batch %s)",
        row.request_id, row.order_code, row.status, age, row.run + 1, result.batch_id,
    )
