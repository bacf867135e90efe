"""SQLAlchemy models of the audit store: one row per request, one per carrier call."""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from cancel247.carrier.errors import Outcome

# Longer than any valid order code, so that an invalid one can still be
# stored (cut to this length) with the reason it was refused.
ORDER_CODE_COLUMN_LENGTH = 255

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class RequestStatus(enum.StrEnum):
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    SUCCEEDED = "succeeded"
    REJECTED = "rejected"
    FAILED = "failed"
    UNCERTAIN = "uncertain"
    DUPLICATE = "duplicate"
    INVALID = "invalid"


TERMINAL_STATUSES = frozenset(
    {
        RequestStatus.SUCCEEDED,
        RequestStatus.REJECTED,
        RequestStatus.FAILED,
        RequestStatus.UNCERTAIN,
        RequestStatus.DUPLICATE,
        RequestStatus.INVALID,
    }
)

# The partial unique index below lets at most one request per order code be
# in one of these statuses at a time, which is what makes later ones duplicates.
CLAIMING_STATUSES = (RequestStatus.IN_PROGRESS, RequestStatus.SUCCEEDED)


def _sql_list(values: object) -> str:
    return ", ".join(f"'{v}'" for v in values)  # type: ignore[attr-defined]


class UTCDateTime(TypeDecorator[datetime]):
    """A time-zone-aware timestamp stored in UTC; SQLite gets it back aware too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: audit timestamps must carry a time zone")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class CancelRequest(Base):
    """One cancellation request: the unit a producer enqueues and ops replay."""

    __tablename__ = "cancel_requests"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    order_code: Mapped[str] = mapped_column(String(ORDER_CODE_COLUMN_LENGTH))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(String(100))
    run: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    error_code: Mapped[str | None] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text)
    duplicate_of: Mapped[str | None] = mapped_column(String(36))

    attempts: Mapped[list[Attempt]] = relationship(
        back_populates="request", order_by="Attempt.number", passive_deletes=True
    )
    replays: Mapped[list[Replay]] = relationship(
        back_populates="request", order_by="Replay.run", passive_deletes=True
    )
    holds: Mapped[list[Hold]] = relationship(
        back_populates="request", order_by="Hold.id", passive_deletes=True
    )

    __table_args__ = (
        CheckConstraint(f"status IN ({_sql_list(RequestStatus)})", name="status"),
        Index(
            "uq_cancel_requests_claimed_order",
            "order_code",
            unique=True,
            postgresql_where=text(f"status IN ({_sql_list(CLAIMING_STATUSES)})"),
            sqlite_where=text(f"status IN ({_sql_list(CLAIMING_STATUSES)})"),
        ),
        Index("ix_cancel_requests_order_code_created_at", "order_code", "created_at"),
        Index("ix_cancel_requests_created_at", "created_at"),
        Index("ix_cancel_requests_status_updated_at", "status", "updated_at"),
        Index("ix_cancel_requests_finished_at", "finished_at"),
    )


class Attempt(Base):
    """One CancelOrder call, written before the call and completed after it."""

    __tablename__ = "cancel_attempts"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    request_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("cancel_requests.id", ondelete="CASCADE")
    )
    run: Mapped[int] = mapped_column(Integer)
    number: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    duration_ms: Mapped[float | None] = mapped_column(Float)
    http_status: Mapped[int | None] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(32))
    message: Mapped[str | None] = mapped_column(Text)
    body_excerpt: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[str | None] = mapped_column(Text)
    wait_seconds: Mapped[float | None] = mapped_column(Float)
    worker: Mapped[str | None] = mapped_column(String(255))

    request: Mapped[CancelRequest] = relationship(back_populates="attempts")

    __table_args__ = (
        UniqueConstraint("request_id", "number"),
        CheckConstraint(f"outcome IN ({_sql_list(Outcome)})", name="outcome"),
        Index("ix_cancel_attempts_started_at_id", "started_at", "id"),
    )


class Hold(Base):
    """A pause of a request before a carrier call: the shared circuit breaker was open, or no rate-limit slot came."""

    __tablename__ = "cancel_holds"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    request_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("cancel_requests.id", ondelete="CASCADE")
    )
    run: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    held_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # When the request is due to be taken up again.
    resume_at: Mapped[datetime] = mapped_column(UTCDateTime)

    request: Mapped[CancelRequest] = relationship(back_populates="holds")

    __table_args__ = (Index("ix_cancel_holds_request_id", "request_id"),)


# Statuses ops may replay without --force; queued and in_progress never are.
REPLAYABLE_STATUSES = frozenset({RequestStatus.FAILED, RequestStatus.UNCERTAIN})


class Replay(Base):
    """One replay of a request by an operator: who, when, why, and how it was selected."""

    __tablename__ = "cancel_replays"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    request_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("cancel_requests.id", ondelete="CASCADE")
    )
    # The run this replay started; the request's attempts of that run follow it.
    run: Mapped[int] = mapped_column(Integer)
    previous_status: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str] = mapped_column(Text)
    # The selection that matched the request, as JSON.
    selection: Mapped[str] = mapped_column(Text)
    forced: Mapped[bool] = mapped_column(Boolean)
    batch_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    request: Mapped[CancelRequest] = relationship(back_populates="replays")

    __table_args__ = (
        UniqueConstraint("request_id", "run"),
        Index("ix_cancel_replays_batch_id", "batch_id"),
        Index("ix_cancel_replays_created_at", "created_at"),
        Index("ix_cancel_replays_request_id", "request_id"),
    )
