"""Streaming export of the audit store: one row per attempt or per request, as CSV or JSON Lines.

Rows are read with ``yield_per``, so the database driver hands them over in
batches (a server-side cursor on PostgreSQL) and memory stays flat whatever
the period holds. The column lists below are the documented, stable format:
columns may be added at the end, none is renamed, removed or moved.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from cancel247.audit.models import Attempt, CancelRequest, Replay

# Rows fetched from the database per round trip.
BATCH_ROWS = 2000

FORMATS = ("csv", "jsonl")
GRAINS = ("attempt", "request")

REQUEST_FIELDS: tuple[tuple[str, Any], ...] = (
    ("request_id", CancelRequest.id),
    ("order_code", CancelRequest.order_code),
    ("request_status", CancelRequest.status),
    ("request_run", CancelRequest.run),
    ("request_reason", CancelRequest.reason),
    ("request_source", CancelRequest.source),
    ("request_created_at", CancelRequest.created_at),
    ("request_started_at", CancelRequest.started_at),
    ("request_finished_at", CancelRequest.finished_at),
    ("request_error_code", CancelRequest.error_code),
    ("request_detail", CancelRequest.detail),
    ("duplicate_of", CancelRequest.duplicate_of),
)

ATTEMPT_FIELDS: tuple[tuple[str, Any], ...] = REQUEST_FIELDS + (
    ("attempt_id", Attempt.id),
    ("attempt_run", Attempt.run),
    ("attempt_number", Attempt.number),
    ("outcome", Attempt.outcome),
    ("started_at", Attempt.started_at),
    ("finished_at", Attempt.finished_at),
    ("duration_ms", Attempt.duration_ms),
    ("http_status", Attempt.http_status),
    ("error_code", Attempt.error_code),
    ("message", Attempt.message),
    ("detail", Attempt.detail),
    ("wait_seconds", Attempt.wait_seconds),
    ("worker", Attempt.worker),
    ("body_excerpt", Attempt.body_excerpt),
)

_attempt_count = (
    select(func.count()).where(Attempt.request_id == CancelRequest.id).correlate(CancelRequest).scalar_subquery()
)
_replay_count = (
    select(func.count()).where(Replay.request_id == CancelRequest.id).correlate(CancelRequest).scalar_subquery()
)
_last_attempt = (
    select(Attempt.id)
    .where(Attempt.request_id == CancelRequest.id)
    .order_by(Attempt.number.desc())
    .limit(1)
    .correlate(CancelRequest)
    .scalar_subquery()
)
_last = Attempt.__table__.alias("last_attempt")

PER_REQUEST_FIELDS: tuple[tuple[str, Any], ...] = REQUEST_FIELDS + (
    ("request_updated_at", CancelRequest.updated_at),
    ("attempts", _attempt_count),
    ("replays", _replay_count),
    ("last_outcome", _last.c.outcome),
    ("last_started_at", _last.c.started_at),
    ("last_http_status", _last.c.http_status),
    ("last_error_code", _last.c.error_code),
    ("last_message", _last.c.message),
)


def columns(grain: str) -> list[str]:
    """Return the column names of an export, in order."""
    fields = ATTEMPT_FIELDS if grain == "attempt" else PER_REQUEST_FIELDS
    return [name for name, _ in fields]


@dataclass(frozen=True)
class Period:
    """A half-open period ``[since, until)``; either end may be open."""

    since: datetime | None = None
    until: datetime | None = None
    statuses: tuple[str, ...] = ()


def in_period(statement: Select[Any], time_column: Any, period: Period) -> Select[Any]:
    """Restrict ``statement`` to rows whose ``time_column`` lies in ``period``, and to its statuses."""
    if period.since is not None:
        statement = statement.where(time_column >= period.since)
    if period.until is not None:
        statement = statement.where(time_column < period.until)
    if period.statuses:
        statement = statement.where(CancelRequest.status.in_(period.statuses))
    return statement


def export_query(grain: str, period: Period) -> Select[Any]:
    """Rows of an export: attempts by the time they started, or requests by the time they were received."""
    if grain == "attempt":
        statement = select(*(column.label(name) for name, column in ATTEMPT_FIELDS)).join_from(
            Attempt, CancelRequest, Attempt.request_id == CancelRequest.id
        )
        return in_period(statement, Attempt.started_at, period).order_by(Attempt.started_at, Attempt.id)
    statement = select(*(column.label(name) for name, column in PER_REQUEST_FIELDS)).outerjoin(
        _last, _last.c.id == _last_attempt
    )
    return in_period(statement, CancelRequest.created_at, period).order_by(
        CancelRequest.created_at, CancelRequest.id
    )


def count_rows(session: Session, grain: str, period: Period) -> int:
    """How many rows :func:`export_rows` will yield."""
    if grain == "attempt":
        statement = select(func.count()).select_from(Attempt).join(CancelRequest, Attempt.request_id == CancelRequest.id)
        statement = in_period(statement, Attempt.started_at, period)
    else:
        statement = in_period(select(func.count()).select_from(CancelRequest), CancelRequest.created_at, period)
    return int(session.execute(statement).scalar_one())


def export_rows(session: Session, grain: str, period: Period) -> Iterator[dict[str, Any]]:
    """Yield the export's rows as dicts, streamed from the database."""
    result = session.execute(export_query(grain, period).execution_options(yield_per=BATCH_ROWS))
    for row in result.mappings():
        yield dict(row)


def _text(value: Any, zone: ZoneInfo) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(zone).isoformat(timespec="microseconds")
    return value


class Writer:
    """Writes export rows to a text stream in one format."""

    def __init__(self, stream: IO[str], fmt: str, fieldnames: list[str], zone: ZoneInfo) -> None:
        self.stream = stream
        self.zone = zone
        self.fieldnames = fieldnames
        self._write: Callable[[dict[str, Any]], None]
        if fmt == "csv":
            writer = csv.DictWriter(stream, fieldnames=fieldnames, extrasaction="raise")
            writer.writeheader()
            self._write = writer.writerow
        else:
            self._write = self._write_json

    def _write_json(self, row: dict[str, Any]) -> None:
        self.stream.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")))
        self.stream.write("\n")

    def write(self, row: dict[str, Any]) -> None:
        self._write({key: _text(value, self.zone) for key, value in row.items()})
