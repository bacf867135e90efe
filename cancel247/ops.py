"""Operations on finished requests: find them, preview a replay, replay them.

The ``cancel247 failed`` and ``cancel247 replay`` commands are thin layers
over this module, which ops scripts can use directly.

A replay re-runs the same request. Its status goes back to ``queued`` and
its run number goes up by one. A :class:`~cancel247.audit.models.Replay` row
records who, when, why and the selection used, and the same request id is
sent to the queue again. The status change is a compare-and-set on
(status, run) in the database, so two operators replaying overlapping sets
at once enqueue each request once.
"""

from __future__ import annotations

import getpass
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, and_, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from cancel247.audit.models import (
    REPLAYABLE_STATUSES,
    TERMINAL_STATUSES,
    Attempt,
    CancelRequest,
    Replay,
    RequestStatus,
)
from cancel247.audit.store import NewRequest, utcnow
from cancel247.carrier.errors import Outcome
from cancel247.tasks.producer import EnqueueError, Producer

# Replays sent per second unless --rate sets another value: a few seconds'
# worth of normal traffic, so a replay after an outage does not cause the next one.
DEFAULT_REPLAY_RATE_PER_SECOND = 20.0
# Rows fetched per query while replaying a large selection.
REPLAY_PAGE_SIZE = 500
DEFAULT_STATUSES = (RequestStatus.FAILED, RequestStatus.UNCERTAIN)
MAX_ACTOR_LENGTH = 100

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class SelectionError(ValueError):
    """A selection that cannot be used. The message names the value and the problem."""


def parse_time(value: str, *, zone: ZoneInfo, now: datetime | None = None) -> datetime:
    """Parse ``2h``, ``3d``, ``30m`` (before now) or an ISO date or time (in ``zone`` if it has no offset)."""
    text = value.strip()
    relative = _RELATIVE.match(text)
    if relative:
        amount, unit = relative.groups()
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: float(amount)})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise SelectionError(
            f"invalid time {value!r}: use an ISO date or time such as 2026-12-01 or "
            "2026-12-01T08:00+07:00, or a relative age such as 30m, 2h, 3d"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(UTC)


@dataclass(frozen=True)
class Selection:
    """Filters choosing the requests to list or replay. Empty fields do not filter."""

    request_ids: tuple[str, ...] = ()
    order_codes: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    error_codes: tuple[str, ...] = ()
    outcomes: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    everything: bool = False

    def __post_init__(self) -> None:
        known = {s.value for s in RequestStatus}
        for status in self.statuses:
            if status not in known:
                raise SelectionError(f"invalid status {status!r}: use one of {', '.join(sorted(known))}")
        outcomes = {o.value for o in Outcome}
        for outcome in self.outcomes:
            if outcome not in outcomes:
                raise SelectionError(f"invalid outcome {outcome!r}: use one of {', '.join(sorted(outcomes))}")
        for request_id in self.request_ids:
            try:
                uuid.UUID(request_id)
            except ValueError:
                raise SelectionError(f"invalid request id {request_id!r}: expected a UUID") from None
        if self.since and self.until and self.since >= self.until:
            raise SelectionError(f"--since {self.since.isoformat()} is not before --until {self.until.isoformat()}")

    @property
    def names_requests(self) -> bool:
        """True when the selection lists requests or orders explicitly."""
        return bool(self.request_ids or self.order_codes)

    @property
    def has_selector(self) -> bool:
        return self.everything or any(
            (self.request_ids, self.order_codes, self.statuses, self.since, self.until, self.error_codes, self.outcomes, self.sources)
        )

    def effective_statuses(self) -> tuple[str, ...]:
        """Statuses filtered on: as given, else failed and uncertain unless requests are named."""
        if self.statuses:
            return self.statuses
        if self.names_requests:
            return ()
        return tuple(s.value for s in DEFAULT_STATUSES)

    def describe(self) -> dict[str, Any]:
        """Return the selection as JSON-ready data, as stored with each replay."""
        data = asdict(self)
        for key in ("since", "until"):
            data[key] = data[key].isoformat() if data[key] else None
        data["statuses"] = list(self.effective_statuses())
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in data.items() if v not in ((), None, False)}


def _last_attempt() -> Any:
    latest = (
        select(Attempt.request_id, func.max(Attempt.number).label("number"))
        .group_by(Attempt.request_id)
        .subquery("latest")
    )
    last = aliased(Attempt, name="last_attempt")
    return latest, last


def build_query(selection: Selection) -> Select[Any]:
    """Select (request, last attempt outcome, attempt count) for ``selection``."""
    latest, last = _last_attempt()
    counts = (
        select(Attempt.request_id, func.count().label("attempts"))
        .group_by(Attempt.request_id)
        .subquery("counts")
    )
    query = (
        select(CancelRequest, last.outcome.label("last_outcome"), func.coalesce(counts.c.attempts, 0).label("attempts"))
        .outerjoin(latest, latest.c.request_id == CancelRequest.id)
        .outerjoin(last, and_(last.request_id == CancelRequest.id, last.number == latest.c.number))
        .outerjoin(counts, counts.c.request_id == CancelRequest.id)
    )
    statuses = selection.effective_statuses()
    if statuses:
        query = query.where(CancelRequest.status.in_(statuses))
    # Request ids and order codes name targets: a request matches if it is any of them.
    targets = []
    if selection.request_ids:
        targets.append(CancelRequest.id.in_(selection.request_ids))
    if selection.order_codes:
        targets.append(CancelRequest.order_code.in_(selection.order_codes))
    if targets:
        query = query.where(or_(*targets))
    if selection.since is not None:
        query = query.where(CancelRequest.created_at >= selection.since)
    if selection.until is not None:
        query = query.where(CancelRequest.created_at < selection.until)
    if selection.error_codes:
        query = query.where(CancelRequest.error_code.in_(selection.error_codes))
    if selection.outcomes:
        query = query.where(last.outcome.in_(selection.outcomes))
    if selection.sources:
        query = query.where(CancelRequest.source.in_(selection.sources))
    return query.order_by(CancelRequest.created_at, CancelRequest.id)


@dataclass(frozen=True)
class RequestRow:
    request_id: str
    order_code: str
    status: str
    run: int
    error_code: str | None
    last_outcome: str | None
    attempts: int
    source: str | None
    request_reason: str | None
    created_at: datetime
    finished_at: datetime | None
    detail: str | None

    @property
    def reason_key(self) -> str:
        """Group label for breakdowns: status, final code and last outcome."""
        code = f"code {self.error_code}" if self.error_code else "no code"
        return f"{self.status}, {code}, last {self.last_outcome or 'no call'}"

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        data["finished_at"] = self.finished_at.isoformat() if self.finished_at else None
        return data


def _row(result: Any) -> RequestRow:
    request: CancelRequest = result[0]
    return RequestRow(
        request_id=request.id,
        order_code=request.order_code,
        status=request.status,
        run=request.run,
        error_code=request.error_code,
        last_outcome=result.last_outcome,
        attempts=result.attempts,
        source=request.source,
        request_reason=request.reason,
        created_at=request.created_at,
        finished_at=request.finished_at,
        detail=request.detail,
    )


@dataclass
class Listing:
    """Matching requests: the total, a breakdown by reason, and the first rows."""

    total: int
    by_reason: Counter[str]
    by_status: Counter[str]
    rows: list[RequestRow]


def find_requests(session: Session, selection: Selection, *, limit: int | None = 50) -> Listing:
    """Count every request matching ``selection`` and return the first ``limit`` rows."""
    by_reason: Counter[str] = Counter()
    by_status: Counter[str] = Counter()
    rows: list[RequestRow] = []
    total = 0
    for result in session.execute(build_query(selection).execution_options(yield_per=REPLAY_PAGE_SIZE)):
        row = _row(result)
        total += 1
        by_reason[row.reason_key] += 1
        by_status[row.status] += 1
        if limit is None or len(rows) < limit:
            rows.append(row)
    return Listing(total, by_reason, by_status, rows)


@dataclass
class ReplayPlan:
    """Preview of a replay: the matching requests and the ones it would not send."""

    listing: Listing
    force: bool
    # Statuses of matched requests that need --force, with their counts.
    needs_force: Counter[str] = field(default_factory=Counter)
    # Statuses of matched requests that cannot be replayed at all (still running).
    not_final: Counter[str] = field(default_factory=Counter)

    @property
    def to_replay(self) -> int:
        blocked = sum(self.not_final.values()) + (0 if self.force else sum(self.needs_force.values()))
        return self.listing.total - blocked


def plan_replay(session: Session, selection: Selection, *, force: bool, preview_rows: int = 10) -> ReplayPlan:
    """Count what ``selection`` matches and what a replay of it would send; changes nothing."""
    listing = find_requests(session, selection, limit=preview_rows)
    plan = ReplayPlan(listing, force)
    for status, count in listing.by_status.items():
        if RequestStatus(status) not in TERMINAL_STATUSES:
            plan.not_final[status] = count
        elif RequestStatus(status) not in REPLAYABLE_STATUSES:
            plan.needs_force[status] = count
    return plan


@dataclass
class ReplayResult:
    batch_id: str
    enqueued: list[str] = field(default_factory=list)
    # Requests another replay (or a worker) changed between selection and update.
    skipped_changed: list[str] = field(default_factory=list)
    needs_force: list[str] = field(default_factory=list)
    not_final: list[str] = field(default_factory=list)
    # Requests whose message could not be sent; they are set to failed again.
    send_failed: list[str] = field(default_factory=list)
    send_error: str | None = None

    @property
    def complete(self) -> bool:
        return not (self.skipped_changed or self.needs_force or self.not_final or self.send_failed)


def default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _take_for_replay(
    session: Session, row: RequestRow, *, actor: str, reason: str, selection_json: str, forced: bool, batch_id: str
) -> bool:
    """Move one request back to queued with a new run, unless its status or run changed since it was read."""
    now = utcnow()
    result = session.execute(
        update(CancelRequest)
        .where(CancelRequest.id == row.request_id, CancelRequest.status == row.status, CancelRequest.run == row.run)
        .values(
            status=RequestStatus.QUEUED.value,
            run=row.run + 1,
            updated_at=now,
            started_at=None,
            finished_at=None,
            error_code=None,
            detail=None,
            duplicate_of=None,
        )
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
            forced=forced,
            batch_id=batch_id,
            created_at=now,
        )
    )
    return True


class _Pacer:
    """Spaces sends evenly at ``rate`` per second."""

    def __init__(self, rate: float, sleep: Callable[[float], None]) -> None:
        self._interval = 1.0 / rate
        self._sleep = sleep
        self._next = time.monotonic()

    def wait(self) -> None:
        now = time.monotonic()
        if self._next > now:
            self._sleep(self._next - now)
        self._next = max(self._next, now) + self._interval


def replay(
    producer: Producer,
    selection: Selection,
    *,
    reason: str,
    actor: str | None = None,
    force: bool = False,
    rate_per_second: float = DEFAULT_REPLAY_RATE_PER_SECOND,
    on_progress: Callable[[int], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ReplayResult:
    """Replay every request ``selection`` matches; see the module docstring."""
    if not selection.has_selector:
        raise SelectionError("no selection: give request ids, order codes or filters, or replay everything with --all")
    if not reason or not reason.strip():
        raise SelectionError("a reason is required: say why these requests are replayed")
    if rate_per_second <= 0:
        raise SelectionError(f"invalid rate {rate_per_second}: give a positive number of requests per second")
    actor = (actor or default_actor())[:MAX_ACTOR_LENGTH]
    result = ReplayResult(batch_id=str(uuid.uuid4()))
    selection_json = json.dumps(selection.describe(), ensure_ascii=False, sort_keys=True)
    pacer = _Pacer(rate_per_second, sleep)
    store = producer.store

    with Session(store.engine) as session:
        candidates = [_row(r) for r in session.execute(build_query(selection))]
    try:
        _replay_rows(producer, candidates, result, actor=actor, reason=reason, force=force,
                     selection_json=selection_json, pacer=pacer, on_progress=on_progress)
    finally:
        if result.send_failed:
            store.mark_unsent(result.send_failed, f"replay not sent: {result.send_error}")
    return result


def _replay_rows(
    producer: Producer,
    candidates: list[RequestRow],
    result: ReplayResult,
    *,
    actor: str,
    reason: str,
    force: bool,
    selection_json: str,
    pacer: _Pacer,
    on_progress: Callable[[int], None] | None,
) -> None:
    store = producer.store

    for row in candidates:
        status = RequestStatus(row.status)
        if status not in TERMINAL_STATUSES:
            result.not_final.append(row.request_id)
        elif status not in REPLAYABLE_STATUSES and not force:
            result.needs_force.append(row.request_id)
        else:
            pacer.wait()
            with store.transaction() as session:
                claimed = _take_for_replay(
                    session, row, actor=actor, reason=reason, selection_json=selection_json,
                    forced=status not in REPLAYABLE_STATUSES, batch_id=result.batch_id,
                )
            if not claimed:
                result.skipped_changed.append(row.request_id)
            elif result.send_error is not None:
                result.send_failed.append(row.request_id)
            else:
                try:
                    producer.publish([NewRequest(row.request_id, row.order_code, reason=row.request_reason, source=row.source)])
                    result.enqueued.append(row.request_id)
                except EnqueueError as exc:
                    # Stop sending once the broker fails; the rest are set to failed again.
                    result.send_error = str(exc)
                    result.send_failed.append(row.request_id)
        if on_progress is not None:
            on_progress(1)


def request_ids_or_codes(values: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split values into request ids (UUIDs) and order codes."""
    ids: list[str] = []
    codes: list[str] = []
    for value in values:
        try:
            ids.append(str(uuid.UUID(value)))
        except ValueError:
            codes.append(value)
    return tuple(ids), tuple(codes)
