"""The circuit breaker and the rate limit shared through Redis, alone and through a real worker."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cancel247.audit.models import Attempt, Hold
from cancel247.carrier.errors import Outcome
from cancel247.carrier.guard import CircuitBreaker, RateLimit
from cancel247.local import settings_env
from cancel247.sandbox import Sandbox
from tests.conftest import Stack, new_order_code, running_stack
from tests.test_cli import run_cli

pytestmark = pytest.mark.integration


def make_breaker(redis_url: str, *, threshold: int = 3, cooldown: float = 0.4) -> CircuitBreaker:
    return CircuitBreaker(
        redis.Redis.from_url(redis_url),
        f"unit-{uuid.uuid4().hex[:8]}",
        threshold=threshold,
        cooldown_seconds=cooldown,
        failure_window_seconds=60,
        probe_seconds=2,
    )


def test_breaker_opens_after_threshold(redis_url: str) -> None:
    breaker = make_breaker(redis_url)
    for _ in range(2):
        assert breaker.before_call("w1") is None
        breaker.record(Outcome.TRANSIENT, "w1")
    assert breaker.state() == "closed"

    breaker.record(Outcome.AMBIGUOUS, "w2")
    assert breaker.state() == "open"
    hold = breaker.before_call("w3")
    assert hold is not None
    assert 0 < hold.seconds <= 0.4
    assert "circuit open" in hold.reason


def test_breaker_success_resets_the_count(redis_url: str) -> None:
    breaker = make_breaker(redis_url)
    for _ in range(5):
        breaker.record(Outcome.TRANSIENT, "w1")
        breaker.record(Outcome.TRANSIENT, "w1")
        breaker.record(Outcome.SUCCEEDED, "w2")
    assert breaker.state() == "closed"
    breaker.record(Outcome.AUTH, "w1")
    assert breaker.state() == "closed"


def test_breaker_half_open_lets_one_probe(redis_url: str) -> None:
    breaker = make_breaker(redis_url, threshold=1, cooldown=0.2)
    breaker.record(Outcome.TRANSIENT, "w1")
    assert breaker.state() == "open"
    time.sleep(0.3)
    assert breaker.state() == "half-open"

    assert breaker.before_call("prober") is None
    held = breaker.before_call("other")
    assert held is not None
    assert "another worker is probing" in held.reason

    breaker.record(Outcome.TRANSIENT, "prober")
    assert breaker.state() == "open"
    time.sleep(0.3)
    assert breaker.before_call("second-prober") is None
    breaker.record(Outcome.PERMANENT, "second-prober")
    assert breaker.state() == "closed"
    assert breaker.before_call("other") is None


def test_rate_limit_waits_for_a_slot(redis_url: str) -> None:
    limit = RateLimit(redis_url, "4/second", f"unit-{uuid.uuid4().hex[:8]}")
    started = time.monotonic()
    granted = []
    waited = []
    for _ in range(10):
        waited.append(limit.acquire(5))
        granted.append(time.monotonic())
    assert waited[:4] == [0.0] * 4
    assert waited[4] > 0
    # Ten slots at four per second: the ninth waits for the second window.
    assert granted[-1] - started >= 2.0 - 0.05
    for index in range(len(granted) - 4):
        assert granted[index + 4] - granted[index] > 0.95


def test_rate_limit_gives_up_after_max_wait(redis_url: str) -> None:
    limit = RateLimit(redis_url, "2/minute", f"unit-{uuid.uuid4().hex[:8]}")
    assert limit.acquire(0) == 0.0
    assert limit.acquire(0) == 0.0
    with pytest.raises(TimeoutError, match="no carrier call slot within 0 s"):
        limit.acquire(0)


def calls_in(stack: Stack, codes: list[str]) -> list[dict]:
    return [c for c in stack.sandbox.state.calls(path="CancelOrder") if c["order_code"] in codes]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_breaker_holds_requests_through_outage(backend: str, redis_url: str, sandbox: Sandbox, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    database_url = f"sqlite:///{tmp_path / 'guard.sqlite3'}" if backend == "sqlite" else request.getfixturevalue("postgres_database")
    queue = f"cancel247-guard-{uuid.uuid4().hex[:6]}"
    overrides = {"breaker_threshold": 3, "breaker_cooldown_seconds": 2.0, "queue": queue}
    with running_stack(backend, database_url, redis_url, sandbox, tmp_path, **overrides) as stack:
        codes = [new_order_code("BRK") for _ in range(8)]
        sandbox.state.configure(outage=True)
        try:
            ids = stack.enqueue(*codes)
            time.sleep(3.0)
            during = len(calls_in(stack, codes))
        finally:
            sandbox.state.configure(outage=False)
        stack.wait(ids, timeout_seconds=60)

        # Without the breaker the outage would have cost every request all its attempts.
        assert during < len(codes) * stack.settings.retry_max_attempts
        # Three failures open it; calls already under way and one trial per cool-down may add a few.
        assert during <= 3 + stack.settings.concurrency + 2
        statuses = [stack.request(i).status for i in ids]
        assert statuses == ["succeeded"] * len(codes)
        with Session(stack.store.engine) as session:
            holds = session.execute(select(func.count()).select_from(Hold).where(Hold.request_id.in_(ids))).scalar_one()
            attempts = session.execute(select(func.count()).select_from(Attempt).where(Attempt.request_id.in_(ids))).scalar_one()
        assert holds >= 1
        assert attempts == len(calls_in(stack, codes))
        assert all(len(stack.attempts(i)) <= stack.settings.retry_max_attempts for i in ids)

        held_id = next(i for i in ids if stack.history(stack.request(i).order_code)[0]["holds"])
        code = stack.request(held_id).order_code
        [record] = json.loads(run_cli("history", code, "--json", env=settings_env(stack.values)).stdout)
        assert record["holds"][0]["reason"].startswith("carrier circuit")
        table = run_cli("history", code, env=settings_env(stack.values) | {"COLUMNS": "250"})
        assert "│ held" in table.stdout
        assert "carrier circuit" in table.stdout


def test_rate_limit_across_a_worker(redis_url: str, sandbox: Sandbox, tmp_path: Path) -> None:
    overrides = {"rate_limit": "5/second", "queue": f"cancel247-rate-{uuid.uuid4().hex[:6]}", "concurrency": 4}
    with running_stack("sqlite", f"sqlite:///{tmp_path / 'rate.sqlite3'}", redis_url, sandbox, tmp_path, **overrides) as stack:
        codes = [new_order_code("RAT") for _ in range(15)]
        ids = stack.enqueue(*codes)
        stack.wait(ids, timeout_seconds=60)
        times = sorted(c["at"] for c in calls_in(stack, codes))
    assert len(times) == 15
    # Fifteen calls at five a second need three windows: two full seconds at least.
    assert times[-1] - times[0] > 1.9
    for index in range(len(times) - 5):
        # Any six consecutive calls span about a second; the slack covers the
        # audit write and the HTTP request between taking a slot and arriving.
        assert times[index + 5] - times[index] > 0.75
