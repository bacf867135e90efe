"""The write-ahead audit store: what the worker writes before and after each call.

Every method runs in its own short transaction, so one failed commit cannot
poison a later task. Database errors are translated into
:class:`AuditUnavailable` at this boundary; the worker then does not call the
carrier and retries the task later.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Row, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from cancel247.audit.models import (
    CLAIMING_STATUSES,
    ORDER_CODE_COLUMN_LENGTH,
    TERMINAL_STATUSES,
    Attempt,
    CancelRequest,
    Hold,
    RequestStatus,
)
from cancel247.carrier.errors import CarrierReply, Outcome

log = logging.getLogger(__name__)


class AuditUnavailable(Exception):
    """The audit store could not be written; nothing may be sent to the carrier."""


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class NewRequest:
    request_id: str
    order_code: str
    reason: str | None = None
    source: str | None = None
    created_at: datetime | None = None


@dataclass(frozen=True)
class FinalStatus:
    """The terminal status a run gives its request, with the carrier's last code and the reason in words."""

    request_id: str
    status: RequestStatus
    error_code: str | None
    detail: str | None


@dataclass(frozen=True)
class Claim:
    """Result of claiming a received request: whether the worker may call the carrier, and the run's state."""

    status: RequestStatus
    run: int
    last_attempt_number: int
    # True when an earlier attempt of this request, in any run, may have
    # reached the carrier without a readable reply (ambiguous or interrupted).
    maybe_applied: bool
    interrupted: int = 0
    duplicate_of: str | None = None
    # Attempts already made in the current run, before a hold or a crash.
    run_attempts: int = 0
    # True when an earlier run of this request got the carrier's success.
    succeeded_before: bool = False

    @property
    def may_call(self) -> bool:
        return self.status == RequestStatus.IN_PROGRESS


def _insert_ignore(session: Session | Connection, rows: list[dict[str, object]]) -> None:
    dialect = session.dialect.name if isinstance(session, Connection) else session.get_bind().dialect.name
    table = CancelRequest.__table__
    if dialect == "postgresql":
        statement = postgresql.insert(table).on_conflict_do_nothing(index_elements=["id"])
    else:
        statement = sqlite.insert(table).on_conflict_do_nothing(index_elements=["id"])
    session.execute(statement, rows)


# Upper bound of the detail text stored with a request, in characters.
MAX_DETAIL_LENGTH = 2000
# Upper bound of the reason stored with a request. A valid message has at
# most 1000 characters, so only the reason of an invalid one is ever cut.
MAX_STORED_REASON_LENGTH = 1000
SOURCE_COLUMN_LENGTH = 100


def truncate_text(value: str | None, limit: int) -> str | None:
    """Return ``value`` cut to ``limit`` characters, ending in a marker that gives its full length."""
    if value is None or len(value) <= limit:
        return value
    marker = f"...[truncated, {len(value)} chars]"
    return value[: max(0, limit - len(marker))] + marker


def _request_row(new: NewRequest, status: RequestStatus, now: datetime) -> dict[str, object]:
    return {
        "id": new.request_id,
        "order_code": truncate_text(new.order_code, ORDER_CODE_COLUMN_LENGTH),
        "status": status.value,
        "reason": truncate_text(new.reason, MAX_STORED_REASON_LENGTH),
        "source": truncate_text(new.source, SOURCE_COLUMN_LENGTH),
        "run": 1,
        "created_at": new.created_at or now,
        "updated_at": now,
    }


@contextmanager
def _audit_errors() -> Iterator[None]:
    """Translate database errors into AuditUnavailable with a one-line message."""
    try:
        yield
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        first_line = str(cause).splitlines()[0] if str(cause) else ""
        raise AuditUnavailable(f"audit store write failed: {type(cause).__name__}: {first_line}") from exc


class AuditStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """Yield a session in one transaction; database errors become AuditUnavailable."""
        with _audit_errors(), self._sessions.begin() as session:
            yield session

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """Yield a Core connection in one transaction, like :meth:`transaction` without the ORM session.

        The worker's writes per request go through here: they need no ORM
        objects, and the session's bookkeeping was a large share of a worker's
        CPU time per request.
        """
        with _audit_errors(), self.engine.begin() as connection:
            yield connection

    # Producer side ----------------------------------------------------------

    def record_queued(self, requests: Iterable[NewRequest]) -> None:
        """Insert ``queued`` rows; rows whose id already exists are left alone."""
        now = utcnow()
        rows = [_request_row(r, RequestStatus.QUEUED, now) for r in requests]
        if not rows:
            return
        with self.transaction() as session:
            _insert_ignore(session, rows)

    def record_invalid(self, new: NewRequest, detail: str) -> None:
        """Store a request that cannot be processed, with the reason (cut to MAX_DETAIL_LENGTH)."""
        now = utcnow()
        detail = truncate_text(detail, MAX_DETAIL_LENGTH) or ""
        row = _request_row(new, RequestStatus.INVALID, now)
        row.update(finished_at=now, detail=detail)
        with self.transaction() as session:
            _insert_ignore(session, [row])
            session.execute(
                update(CancelRequest)
                .where(CancelRequest.id == new.request_id, CancelRequest.status.not_in(TERMINAL_STATUSES))
                .values(status=RequestStatus.INVALID.value, finished_at=now, updated_at=now, detail=detail)
            )

    def mark_unsent(self, request_ids: list[str], detail: str) -> None:
        """End still-queued requests whose message could not be sent as ``failed``, so ops can replay them."""
        now = utcnow()
        with self.transaction() as session:
            session.execute(
                update(CancelRequest)
                .where(CancelRequest.id.in_(request_ids), CancelRequest.status == RequestStatus.QUEUED.value)
                .values(status=RequestStatus.FAILED.value, finished_at=now, updated_at=now, detail=detail)
            )

    # Worker side --------------------------------------------------------------

    def claim(self, new: NewRequest) -> Claim:
        """Record the request as received and take its order, or mark it a duplicate.

        A redelivered message of a request already in progress continues it,
        marking the attempts left in flight as ``interrupted``. A message of a
        request that already ended changes nothing.
        """
        now = utcnow()
        with self.connection() as session:
            _insert_ignore(session, [_request_row(new, RequestStatus.QUEUED, now)])
            request = session.execute(
                select(CancelRequest.__table__).where(CancelRequest.id == new.request_id).with_for_update()
            ).one()
            status = RequestStatus(request.status)

            if status == RequestStatus.QUEUED and request.run == 1:
                # A first run that was never claimed has no attempts: skip the queries below.
                holder = self._take_order(session, request, now)
                if holder is not None:
                    return Claim(RequestStatus.DUPLICATE, 1, 0, False, duplicate_of=holder)
                return Claim(RequestStatus.IN_PROGRESS, 1, 0, False)

            if status in TERMINAL_STATUSES:
                last_number = session.execute(
                    select(func.coalesce(func.max(Attempt.number), 0)).where(Attempt.request_id == request.id)
                ).scalar_one()
                return Claim(status, request.run, last_number, maybe_applied=False, duplicate_of=request.duplicate_of)

            interrupted = 0
            if status == RequestStatus.IN_PROGRESS:
                result = session.execute(
                    update(Attempt)
                    .where(Attempt.request_id == request.id, Attempt.outcome == Outcome.IN_FLIGHT.value)
                    .values(
                        outcome=Outcome.INTERRUPTED.value,
                        finished_at=now,
                        detail="worker stopped during the call; the carrier may have acted",
                    )
                )
                interrupted = result.rowcount or 0
            else:
                holder = self._take_order(session, request, now)
                if holder is not None:
                    return Claim(RequestStatus.DUPLICATE, request.run, 0, False, duplicate_of=holder)

            maybe_outcomes = [Outcome.AMBIGUOUS.value, Outcome.INTERRUPTED.value]
            last_number, maybe_applied, succeeded_before, run_attempts = session.execute(
                select(
                    func.coalesce(func.max(Attempt.number), 0),
                    func.count().filter(Attempt.outcome.in_(maybe_outcomes)),
                    func.count().filter(Attempt.outcome == Outcome.SUCCEEDED.value),
                    func.count().filter(Attempt.run == request.run),
                ).where(Attempt.request_id == request.id)
            ).one()
            return Claim(
                RequestStatus.IN_PROGRESS, request.run, last_number, maybe_applied > 0, interrupted,
                succeeded_before=succeeded_before > 0, run_attempts=run_attempts,
            )

    def _take_order(self, session: Connection, request: Row[Any], now: datetime) -> str | None:
        """Move ``request`` to in_progress; return the holder's id if another request has the order."""
        try:
            with session.begin_nested():
                session.execute(
                    update(CancelRequest)
                    .where(CancelRequest.id == request.id)
                    .values(status=RequestStatus.IN_PROGRESS.value, started_at=now, updated_at=now)
                )
            return None
        except IntegrityError:
            pass

        holder = session.execute(
            select(CancelRequest.id, CancelRequest.status)
            .where(
                CancelRequest.order_code == request.order_code,
                CancelRequest.status.in_([s.value for s in CLAIMING_STATUSES]),
                CancelRequest.id != request.id,
            )
            .limit(1)
        ).first()
        holder_id = holder.id if holder else None
        if holder is None:
            detail = "another request holds this order"
        elif holder.status == RequestStatus.SUCCEEDED:
            detail = f"order already cancelled by request {holder.id}"
        else:
            detail = f"order is being cancelled by request {holder.id}"
        session.execute(
            update(CancelRequest)
            .where(CancelRequest.id == request.id)
            .values(
                status=RequestStatus.DUPLICATE.value,
                duplicate_of=holder_id,
                detail=detail,
                finished_at=now,
                updated_at=now,
            )
        )
        return holder_id or ""

    def start_attempt(self, *, request_id: str, run: int, number: int, worker: str) -> int:
        """Insert an ``in_flight`` attempt row and return its id; raises AuditUnavailable."""
        row = {
            "request_id": request_id,
            "run": run,
            "number": number,
            "outcome": Outcome.IN_FLIGHT.value,
            "started_at": utcnow(),
            "worker": worker,
        }
        with self.connection() as session:
            return int(session.execute(insert(Attempt).returning(Attempt.id), row).scalar_one())

    def finish_attempt(
        self, attempt_id: int, reply: CarrierReply, *, duration_ms: float, final: FinalStatus | None = None
    ) -> None:
        """Complete an attempt row with what the carrier returned; with ``final``, end the request too, atomically."""
        with self.connection() as session:
            if final is not None:
                self._finish_request(session, final)
            session.execute(
                update(Attempt)
                .where(Attempt.id == attempt_id)
                .values(
                    outcome=reply.outcome.value,
                    finished_at=utcnow(),
                    duration_ms=round(duration_ms, 3),
                    http_status=reply.http_status,
                    error_code=reply.error_code,
                    message=reply.message,
                    body_excerpt=reply.body_excerpt,
                    detail=reply.detail,
                )
            )

    def set_wait(self, attempt_id: int, wait_seconds: float) -> None:
        """Record the wait chosen after an attempt, before the next one."""
        with self.connection() as session:
            session.execute(
                update(Attempt).where(Attempt.id == attempt_id).values(wait_seconds=round(wait_seconds, 6))
            )

    def record_hold(self, request_id: str, run: int, *, seconds: float, reason: str) -> None:
        """Record that the request waits ``seconds`` before its next call, and why."""
        now = utcnow()
        with self.connection() as session:
            session.execute(
                insert(Hold).values(
                    request_id=request_id, run=run, reason=reason, held_at=now, resume_at=now + timedelta(seconds=seconds)
                )
            )
            session.execute(update(CancelRequest).where(CancelRequest.id == request_id).values(updated_at=now))

    def finish_request(self, final: FinalStatus) -> None:
        """Set the request's terminal status."""
        with self.connection() as session:
            self._finish_request(session, final)

    @staticmethod
    def _finish_request(session: Connection, final: FinalStatus) -> None:
        now = utcnow()
        session.execute(
            update(CancelRequest)
            .where(CancelRequest.id == final.request_id)
            .values(
                status=final.status.value, error_code=final.error_code, detail=final.detail, finished_at=now, updated_at=now
            )
        )
