"""The retry policy, with an injected sleep: nothing here waits on a real clock."""

from __future__ import annotations

import random
import threading

import pytest
import tenacity

from cancel247.carrier.errors import CarrierReply, FinalError, Outcome, RetryableError
from cancel247.retry import RetryNow, RetryPolicy

POLICY = RetryPolicy(max_attempts=5, initial_seconds=1, min_seconds=0.1, max_seconds=4, deadline_seconds=60)


def transient(retry_after: float | None = None) -> RetryableError:
    return RetryableError(CarrierReply(Outcome.TRANSIENT, error_code="6", retry_after_seconds=retry_after))


class MaxRandom(random.Random):
    """Always draws the top of the window, to check the window itself."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_caps_double_up_to_max() -> None:
    assert [POLICY.backoff_cap_seconds(n) for n in range(1, 6)] == [1, 2, 4, 4, 4]


def test_waits_grow_at_top_of_window() -> None:
    sleeps: list[float] = []
    calls = 0

    def always_fails() -> None:
        nonlocal calls
        calls += 1
        raise transient()

    with pytest.raises(RetryableError):
        POLICY.retrying(sleep=sleeps.append, rng=MaxRandom())(always_fails)
    assert calls == 5
    assert sleeps == [1, 2, 4, 4]


def test_waits_stay_in_window() -> None:
    rng = random.Random(7)
    for attempt in range(1, 8):
        for _ in range(200):
            wait = POLICY.wait_seconds(attempt, rng=rng)
            assert POLICY.min_seconds <= wait <= POLICY.backoff_cap_seconds(attempt)


def test_retry_after_raises_wait() -> None:
    assert POLICY.wait_seconds(1, retry_after_seconds=3.5, rng=random.Random(1)) >= 3.5


def test_last_real_error_reraised() -> None:
    errors = iter([transient(), transient(), FinalError(CarrierReply(Outcome.PERMANENT, error_code="13"))])

    def fails() -> None:
        raise next(errors)

    with pytest.raises(FinalError) as caught:
        POLICY.retrying(sleep=lambda _s: None)(fails)
    assert caught.value.reply.error_code == "13"
    assert not isinstance(caught.value, tenacity.RetryError)


def test_permanent_not_retried() -> None:
    calls = 0

    def fails() -> None:
        nonlocal calls
        calls += 1
        raise FinalError(CarrierReply(Outcome.PERMANENT, error_code="14"))

    with pytest.raises(FinalError):
        POLICY.retrying(sleep=lambda _s: None)(fails)
    assert calls == 1


def test_retry_now_waits_zero() -> None:
    sleeps: list[float] = []
    errors = iter([RetryNow(CarrierReply(Outcome.AUTH, http_status=401))])

    def once() -> str:
        error = next(errors, None)
        if error:
            raise error
        return "ok"

    assert POLICY.retrying(sleep=sleeps.append)(once) == "ok"
    assert sleeps == [0.0]


def test_deadline_stops_before_next_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = RetryPolicy(max_attempts=100, initial_seconds=1, min_seconds=1, max_seconds=1, deadline_seconds=2.5)
    clock = [0.0]
    calls = 0

    def fake_sleep(seconds: float) -> None:
        clock[0] += seconds

    def fails() -> None:
        nonlocal calls
        calls += 1
        raise transient()

    # The deadline is measured on tenacity's clock; drive it with the fake sleep.
    monkeypatch.setattr(tenacity.RetryCallState, "seconds_since_start", property(lambda _self: clock[0]))
    with pytest.raises(RetryableError):
        policy.retrying(sleep=fake_sleep)(fails)
    # Attempts start at 0, 1 and 2 s; one at 3 s would start past the 2.5 s deadline.
    assert calls == 3


def test_concurrent_calls_keep_own_numbers() -> None:
    """Many failing calls at once in one process each see attempts 1..n."""
    barrier = threading.Barrier(8)
    seen: dict[int, list[int]] = {}

    def worker(index: int) -> None:
        numbers: list[int] = []

        def fails() -> None:
            numbers.append(len(numbers) + 1)
            barrier.wait() if len(numbers) == 1 else None
            raise transient()

        def record(state: tenacity.RetryCallState) -> None:
            assert state.attempt_number == len(numbers)

        retrying = POLICY.retrying(sleep=lambda _s: None)
        retrying.before_sleep = record
        with pytest.raises(RetryableError):
            retrying(fails)
        seen[index] = numbers

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {i: [1, 2, 3, 4, 5] for i in range(8)}
