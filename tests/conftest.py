"""Shared fixtures: the real Redis and PostgreSQL, SQLite, the sandbox, and real workers.

Integration tests need Redis on 127.0.0.1:6379 and PostgreSQL on
127.0.0.1:5432 (override with CANCEL247_TEST_REDIS_URL and
CANCEL247_TEST_POSTGRES_URL). A missing service makes them fail, never skip.
Two runs at once on one machine need different CANCEL247_TEST_REDIS_URL
database numbers and CANCEL247_TEST_NAMESPACE values, which suffix the
PostgreSQL database names.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from cancel247.audit import migrate
from cancel247.audit.db import dispose_engines, get_engine
from cancel247.audit.history import order_history
from cancel247.audit.models import Attempt, CancelRequest
from cancel247.audit.store import AuditStore
from cancel247.config import Settings, load_settings
from cancel247.local import WorkerProcess, settings_env, wait_until_final
from cancel247.sandbox import DEFAULT_CLIENT_ID, DEFAULT_PASSWORD, DEFAULT_TOKEN, DEFAULT_USERNAME, Sandbox, SandboxState
from cancel247.sandbox.server import FaultRates
from cancel247.tasks.producer import Producer

REDIS_URL = os.environ.get("CANCEL247_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_ADMIN_URL = os.environ.get("CANCEL247_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
POSTGRES_TEST_DATABASE = "cancel247_test" + os.environ.get("CANCEL247_TEST_NAMESPACE", "")

# Retry settings of the test workers: four attempts and waits of a few
# milliseconds, so fault scenarios finish quickly.
WORKER_SETTINGS: dict[str, Any] = {
    "retry_max_attempts": 4,
    "retry_initial_seconds": 0.02,
    "retry_min_seconds": 0.005,
    "retry_max_seconds": 0.1,
    "retry_deadline_seconds": 30,
    "connect_timeout_seconds": 1,
    "read_timeout_seconds": 0.5,
    "concurrency": 4,
    "visibility_timeout_seconds": 300,
    # Off for the shared worker: outage tests count every failed call.
    "breaker_threshold": 0,
}
SANDBOX_HANG_SECONDS = 1.0
# Seconds a test waits for its requests to reach a final status.
FINAL_TIMEOUT_SECONDS = 60


def new_order_code(prefix: str = "WKH") -> str:
    """Return an order code no other test uses."""
    return f"{prefix}{uuid.uuid4().hex[:10].upper()}"


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_URL}: {exc}; start it (see .ci/run)")
    client.flushdb()
    return REDIS_URL


def _recreate_postgres_database(name: str) -> str:
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            connection.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc}; start it (see .ci/run)")
    url = make_url(POSTGRES_ADMIN_URL).set(drivername="postgresql+psycopg", database=name)
    return url.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    url = _recreate_postgres_database(POSTGRES_TEST_DATABASE)
    yield url
    dispose_engines()


@pytest.fixture
def fresh_postgres_url() -> str:
    """An empty PostgreSQL database for schema tests."""
    return _recreate_postgres_database(f"{POSTGRES_TEST_DATABASE}_schema")


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    state = SandboxState(seed=1, rates=FaultRates(hang_seconds=SANDBOX_HANG_SECONDS))
    with Sandbox(state) as server:
        yield server


@pytest.fixture
def carrier(sandbox: Sandbox) -> Iterator[SandboxState]:
    """The sandbox's state, with its fault rates restored after the test."""
    yield sandbox.state
    with sandbox.state._lock:
        sandbox.state.rates = FaultRates(hang_seconds=SANDBOX_HANG_SECONDS)
    sandbox.state.accept_fixed_token()


@dataclass
class Stack:
    """A worker on one database, with helpers to enqueue and inspect."""

    backend: str
    settings: Settings
    values: dict[str, Any]
    producer: Producer
    store: AuditStore
    worker: WorkerProcess
    sandbox: Sandbox

    def enqueue(self, *codes: str, **options: Any) -> list[str]:
        return self.producer.enqueue_many(list(codes), **options)

    def wait(self, ids: list[str], timeout_seconds: float = FINAL_TIMEOUT_SECONDS) -> None:
        if not wait_until_final(self.store, ids, timeout_seconds=timeout_seconds, worker=self.worker):
            pytest.fail(f"requests not final after {timeout_seconds} s; worker log:\n{self.worker.output()[-4000:]}")

    def request(self, request_id: str) -> CancelRequest:
        with Session(self.store.engine) as session:
            return session.execute(select(CancelRequest).where(CancelRequest.id == request_id)).scalar_one()

    def attempts(self, request_id: str) -> list[Attempt]:
        with Session(self.store.engine) as session:
            return list(
                session.execute(
                    select(Attempt).where(Attempt.request_id == request_id).order_by(Attempt.number)
                ).scalars()
            )

    def history(self, order_code: str) -> list[dict[str, Any]]:
        with Session(self.store.engine) as session:
            return order_history(session, order_code)

    def carrier_calls(self, order_code: str) -> list[dict[str, Any]]:
        return self.sandbox.state.calls(path="CancelOrder", order_code=order_code)

    def attempt_rows_for(self, order_code: str) -> int:
        return sum(len(r["attempts"]) for r in self.history(order_code))


def _database_url(backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'audit.sqlite3'}"
    return request.getfixturevalue("postgres_database")


@contextmanager
def running_stack(
    backend: str, database_url: str, redis_url: str, sandbox: Sandbox, log_dir: Path, **overrides: Any
) -> Iterator[Stack]:
    """Migrate ``database_url``, start a worker for it, and stop the worker afterwards."""
    migrate.upgrade(database_url)
    values: dict[str, Any] = {
        **WORKER_SETTINGS,
        "api_url": sandbox.url,
        "client_id": DEFAULT_CLIENT_ID,
        "token": DEFAULT_TOKEN,
        "username": DEFAULT_USERNAME,
        "password": DEFAULT_PASSWORD,
        "broker_url": redis_url,
        "database_url": database_url,
        "queue": f"cancel247-test-{backend}",
        **overrides,
    }
    settings = load_settings(**values)
    log_path = log_dir / "worker.log"
    # A node name per queue, so that the replies of workers of different stacks on one Redis stay apart.
    worker = WorkerProcess(settings_env(values), log_path, extra_args=["--hostname", f"{values['queue']}@%h"])
    try:
        worker.wait_ready()
        store = AuditStore(get_engine(database_url))
        yield Stack(backend, settings, values, Producer(settings), store, worker, sandbox)
    finally:
        worker.stop()
    _assert_no_secrets(log_path.read_text(encoding="utf-8", errors="replace"), backend)


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def stack(
    request: pytest.FixtureRequest,
    redis_url: str,
    sandbox: Sandbox,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    backend = request.param
    database_url = _database_url(backend, tmp_path_factory, request)
    with running_stack(backend, database_url, redis_url, sandbox, tmp_path_factory.mktemp(f"worker-{backend}")) as running:
        yield running


def _assert_no_secrets(log_text: str, backend: str) -> None:
    for secret in (DEFAULT_TOKEN, DEFAULT_PASSWORD):
        assert secret not in log_text, f"a secret reached the {backend} worker log"

