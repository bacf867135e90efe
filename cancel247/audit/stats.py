"""Figures over the requests received in a period, computed in the database.

Every figure covers the requests received (``created_at``) in ``[since,
until)`` and the attempts of those requests, whenever they ran. Percentiles
are nearest-rank (PostgreSQL's ``percentile_disc``): the smallest value that
at least p% of the values do not exceed. SQLite has no percentile function,
so there each percentile is one ``ORDER BY ... LIMIT 1 OFFSET k`` query.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Float, Select, cast, func, select
from sqlalchemy.orm import Session

from cancel247.audit.export import Period, in_period
from cancel247.audit.models import TERMINAL_STATUSES, Attempt, CancelRequest

LATENCY_PERCENTILES = (0.5, 0.95, 0.99)
FINAL_PERCENTILES = (0.5, 0.95)


@dataclass
class Stats:
    since: str | None
    until: str | None
    requests: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    by_error_code: dict[str, int] = field(default_factory=dict)
    attempts: int = 0
    by_outcome: dict[str, int] = field(default_factory=dict)
    # Requests with at least one carrier call, and how many of those needed more than one.
    requests_called: int = 0
    requests_retried: int = 0
    retried_share: float | None = None
    attempts_per_request_mean: float | None = None
    attempts_per_request_max: int | None = None
    # Distribution: number of attempts -> number of requests with that many.
    attempts_per_request: dict[str, int] = field(default_factory=dict)
    carrier_latency_ms: dict[str, float | None] = field(default_factory=dict)
    enqueue_to_final_seconds: dict[str, float | None] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _received_in(statement: Select[Any], period: Period) -> Select[Any]:
    return in_period(statement, CancelRequest.created_at, period)


def _seconds_between(session: Session, start: Any, end: Any) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * 86400.0


def _label(p: float) -> str:
    return f"p{p * 100:g}"


def _percentiles(session: Session, value: Any, base: Select[Any], count: int, ps: tuple[float, ...]) -> dict[str, float | None]:
    """Nearest-rank percentiles of ``value`` over the rows of ``base`` (``count`` of them, non-null)."""
    if count == 0:
        return {_label(p): None for p in ps}
    if session.get_bind().dialect.name == "postgresql":
        columns = [func.percentile_disc(p).within_group(value) for p in ps]
        row = session.execute(base.with_only_columns(*columns)).one()
        return {_label(p): round(float(v), 3) for p, v in zip(ps, row, strict=True)}
    out: dict[str, float | None] = {}
    for p in ps:
        offset = max(0, math.ceil(p * count) - 1)
        v = session.execute(base.with_only_columns(value).order_by(value).limit(1).offset(offset)).scalar_one()
        out[_label(p)] = round(float(v), 3)
    return out


def compute_stats(session: Session, period: Period) -> Stats:
    """Compute every figure of ``cancel247 stats`` for ``period``."""
    stats = Stats(
        since=period.since.isoformat() if period.since else None,
        until=period.until.isoformat() if period.until else None,
    )
    requests = _received_in(select(CancelRequest.status, func.count()).group_by(CancelRequest.status), period)
    stats.by_status = {status: n for status, n in session.execute(requests).all()}
    stats.requests = sum(stats.by_status.values())

    codes = _received_in(
        select(CancelRequest.error_code, func.count())
        .where(CancelRequest.status.in_([s.value for s in TERMINAL_STATUSES]))
        .group_by(CancelRequest.error_code),
        period,
    )
    stats.by_error_code = {code if code is not None else "none": n for code, n in session.execute(codes).all()}

    joined = _received_in(select().select_from(Attempt).join(CancelRequest, Attempt.request_id == CancelRequest.id), period)
    stats.by_outcome = {
        outcome: n
        for outcome, n in session.execute(
            joined.with_only_columns(Attempt.outcome, func.count()).group_by(Attempt.outcome)
        ).all()
    }
    stats.attempts = sum(stats.by_outcome.values())

    per_request = (
        joined.with_only_columns(Attempt.request_id.label("request_id"), func.count().label("n"))
        .group_by(Attempt.request_id)
        .subquery()
    )
    distribution = session.execute(
        select(per_request.c.n, func.count()).group_by(per_request.c.n).order_by(per_request.c.n)
    ).all()
    stats.attempts_per_request = {str(n): k for n, k in distribution}
    stats.requests_called = sum(k for _, k in distribution)
    stats.requests_retried = sum(k for n, k in distribution if n > 1)
    if stats.requests_called:
        stats.retried_share = round(stats.requests_retried / stats.requests_called, 6)
        stats.attempts_per_request_mean = round(stats.attempts / stats.requests_called, 4)
        stats.attempts_per_request_max = max(n for n, _ in distribution)

    timed = joined.where(Attempt.duration_ms.is_not(None))
    timed_count = session.execute(timed.with_only_columns(func.count())).scalar_one()
    stats.carrier_latency_ms = _percentiles(session, Attempt.duration_ms, timed, timed_count, LATENCY_PERCENTILES)

    final = _received_in(
        select()
        .select_from(CancelRequest)
        .where(
            CancelRequest.finished_at.is_not(None),
            CancelRequest.status.in_([s.value for s in TERMINAL_STATUSES]),
        ),
        period,
    )
    final_count = session.execute(final.with_only_columns(func.count())).scalar_one()
    elapsed = cast(_seconds_between(session, CancelRequest.created_at, CancelRequest.finished_at), Float)
    stats.enqueue_to_final_seconds = _percentiles(session, elapsed, final, final_count, FINAL_PERCENTILES)
    return stats

