"""The audit store's schema and concurrency on PostgreSQL and SQLite."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select
from sqlalchemy.orm import Session

from cancel247.audit import migrate
from cancel247.audit.db import create_audit_engine
from cancel247.audit.models import Attempt, Base, CancelRequest
from cancel247.audit.store import AuditStore, NewRequest
from cancel247.carrier.errors import CarrierReply, Outcome

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'schema.sqlite3'}"
    return request.getfixturevalue("fresh_postgres_url")


def test_migrations_match_models(empty_database: str) -> None:
    migrate.upgrade(empty_database)
    engine = create_audit_engine(empty_database)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
        assert migrate.current_revision(engine) == migrate.head_revision()
    finally:
        engine.dispose()


def test_downgrade_then_upgrade(empty_database: str) -> None:
    migrate.upgrade(empty_database)
    command.downgrade(migrate.alembic_config(empty_database), "base")
    engine = create_audit_engine(empty_database)
    try:
        assert "cancel_requests" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()
    migrate.upgrade(empty_database)


@pytest.fixture
def store(empty_database: str) -> AuditStore:
    migrate.upgrade(empty_database)
    return AuditStore(create_audit_engine(empty_database, pool_size=16))


def test_timestamps_come_back_utc(store: AuditStore) -> None:
    request_id = str(uuid.uuid4())
    store.record_queued([NewRequest(request_id, "WKH1")])
    with Session(store.engine) as session:
        created = session.execute(select(CancelRequest.created_at).where(CancelRequest.id == request_id)).scalar_one()
    assert created.utcoffset() is not None
    assert created.utcoffset().total_seconds() == 0


def test_one_claim_per_order(store: AuditStore) -> None:
    ids = [str(uuid.uuid4()) for _ in range(6)]
    barrier = threading.Barrier(len(ids))
    claims = {}

    def claim(request_id: str) -> None:
        barrier.wait()
        claims[request_id] = store.claim(NewRequest(request_id, "WKH-SAME"))

    threads = [threading.Thread(target=claim, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(c.status.value for c in claims.values())
    assert statuses == ["duplicate"] * 5 + ["in_progress"]
    winner = next(i for i, c in claims.items() if c.may_call)
    assert all(c.duplicate_of == winner for c in claims.values() if not c.may_call)


def test_redelivery_marks_in_flight_interrupted(store: AuditStore) -> None:
    request_id = str(uuid.uuid4())
    new = NewRequest(request_id, "WKH-REDELIVER")
    first = store.claim(new)
    store.start_attempt(request_id=request_id, run=first.run, number=1, worker="test:1")

    again = store.claim(new)
    assert again.may_call
    assert again.interrupted == 1
    assert again.maybe_applied
    assert again.last_attempt_number == 1
    with Session(store.engine) as session:
        outcome = session.execute(select(Attempt.outcome).where(Attempt.request_id == request_id)).scalar_one()
    assert outcome == "interrupted"


def test_concurrent_writers_lose_no_row(store: AuditStore) -> None:
    """Sixteen threads writing attempts at once: every row lands (no "database is locked")."""
    threads_count, per_thread = 16, 25
    ids = [str(uuid.uuid4()) for _ in range(threads_count)]
    store.record_queued([NewRequest(i, f"WKH-C{n}") for n, i in enumerate(ids)])
    errors: list[BaseException] = []
    reply = CarrierReply(Outcome.TRANSIENT, http_status=200, error_code="6", message="Có lỗi xảy ra trong quá trình xử lý.")

    def write(request_id: str) -> None:
        try:
            store.claim(NewRequest(request_id, "unused"))
            for number in range(1, per_thread + 1):
                attempt_id = store.start_attempt(request_id=request_id, run=1, number=number, worker="t")
                store.finish_attempt(attempt_id, reply, duration_ms=1.0)
                store.set_wait(attempt_id, 0.01)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with Session(store.engine) as session:
        total = session.execute(select(func.count()).select_from(Attempt)).scalar_one()
        in_flight = session.execute(
            select(func.count()).select_from(Attempt).where(Attempt.outcome == "in_flight")
        ).scalar_one()
    assert total == threads_count * per_thread
    assert in_flight == 0
