"""Protection of the carrier shared by every worker through Redis: a circuit breaker and a rate limit.

The breaker is written here on a few Redis keys rather than taken from
pybreaker: pybreaker holds one lock around every protected call, which would
let a threaded worker make one carrier call at a time. Its states are the
usual ones:

- closed: calls go through; transient and ambiguous outcomes add to a failure
  count that any success resets and that expires after ``failure_window``;
- open: after ``threshold`` failures in a row, no worker calls the carrier
  for ``cooldown`` seconds;
- half-open: after the cool-down, one worker (the holder of a short-lived
  probe key) makes a trial call. Success closes the breaker, failure opens it
  for another cool-down, and the others keep waiting meanwhile.

The rate limit is a moving window from the ``limits`` library on the same
Redis, so it caps calls per second across all workers and hosts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from cancel247.carrier.errors import Outcome

log = logging.getLogger(__name__)

# Outcomes that count as the carrier being unwell.
FAILURE_OUTCOMES = frozenset({Outcome.TRANSIENT, Outcome.AMBIGUOUS})


@dataclass(frozen=True)
class Hold:
    """A reason not to call the carrier now, and the seconds to wait before trying again."""

    seconds: float
    reason: str


class CircuitBreaker:
    """A circuit breaker whose state lives in Redis, shared by all workers of one queue."""

    def __init__(
        self,
        client: redis.Redis,
        name: str,
        *,
        threshold: int,
        cooldown_seconds: float,
        failure_window_seconds: float,
        probe_seconds: float,
    ) -> None:
        self.client = client
        self.threshold = threshold
        self.cooldown_ms = max(1, int(cooldown_seconds * 1000))
        self.failure_window_ms = max(1, int(failure_window_seconds * 1000))
        # Maximum duration of a trial call; after it, another worker may probe.
        self.probe_ms = max(1, int(probe_seconds * 1000))
        prefix = f"cancel247:breaker:{name}"
        self.open_key = f"{prefix}:open"
        self.tripped_key = f"{prefix}:tripped"
        self.failures_key = f"{prefix}:failures"
        self.probe_key = f"{prefix}:probe"

    def before_call(self, token: str) -> Hold | None:
        """Return None when the caller may call the carrier, else how long to hold.

        ``token`` identifies the caller, so that its own trial call is known.
        """
        is_open, tripped = self.client.mget(self.open_key, self.tripped_key)
        if is_open is not None:
            remaining = self.client.pttl(self.open_key)
            return Hold(max(remaining, 1) / 1000, "carrier circuit open after repeated transient failures")
        if tripped is None:
            return None
        if self.client.set(self.probe_key, token, nx=True, px=self.probe_ms):
            log.info("carrier circuit half-open: %s makes the trial call", token)
            return None
        if self._is_prober(token):
            return None
        return Hold(min(self.cooldown_ms, self.probe_ms) / 1000, "carrier circuit half-open: another worker is probing")

    def _is_prober(self, token: str) -> bool:
        holder = self.client.get(self.probe_key)
        return holder is not None and holder.decode() == token

    def record(self, outcome: Outcome, token: str) -> None:
        """Count the outcome of a call made after :meth:`before_call` allowed it."""
        if outcome in FAILURE_OUTCOMES:
            if self._is_prober(token):
                self._open("trial call failed")
                return
            with self.client.pipeline() as pipe:
                pipe.incr(self.failures_key)
                pipe.pexpire(self.failures_key, self.failure_window_ms)
                failures = pipe.execute()[0]
            if failures >= self.threshold and not self.client.exists(self.open_key):
                self._open(f"{failures} transient failures in a row")
            return
        if outcome == Outcome.SUCCEEDED or outcome == Outcome.PERMANENT:
            # A success or a refusal shows that the carrier is working again.
            # One round trip: this runs after almost every call.
            with self.client.pipeline(transaction=False) as pipe:
                pipe.delete(self.tripped_key)
                pipe.delete(self.failures_key, self.probe_key)
                was_tripped = pipe.execute()[0]
            if was_tripped:
                log.warning("carrier circuit closed: %s got a reply", token)

    def _open(self, why: str) -> None:
        with self.client.pipeline() as pipe:
            pipe.set(self.open_key, "1", px=self.cooldown_ms)
            pipe.set(self.tripped_key, "1")
            pipe.delete(self.failures_key, self.probe_key)
            pipe.execute()
        log.warning("carrier circuit opened for %.1f s: %s", self.cooldown_ms / 1000, why)

    def reset(self) -> None:
        """Close the breaker and forget all failures."""
        self.client.delete(self.open_key, self.tripped_key, self.failures_key, self.probe_key)

    def state(self) -> str:
        """Return ``closed``, ``open`` or ``half-open``."""
        if self.client.exists(self.open_key):
            return "open"
        return "half-open" if self.client.exists(self.tripped_key) else "closed"


class RateLimit:
    """At most ``limit`` carrier calls per period across all workers, waiting for a free slot."""

    def __init__(self, storage_url: str, limit: str, name: str, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.item: RateLimitItem = parse(limit)
        self.limiter = MovingWindowRateLimiter(storage_from_string(storage_url))
        self.name = name
        self.sleep = sleep

    def acquire(self, max_wait_seconds: float) -> float:
        """Take a slot, sleeping until one is free; return the seconds waited.

        Raises TimeoutError when no slot comes within ``max_wait_seconds``.
        """
        waited = 0.0
        while not self.limiter.hit(self.item, "cancel247", self.name):
            stats = self.limiter.get_window_stats(self.item, "cancel247", self.name)
            pause = min(max(stats.reset_time - time.time(), 0.001), 1.0)
            if waited + pause > max_wait_seconds:
                raise TimeoutError(f"no carrier call slot within {max_wait_seconds:.0f} s under the rate limit {self.item}")
            self.sleep(pause)
            waited += pause
        return waited


class CarrierGuard:
    """The breaker and the rate limit together, failing open when Redis cannot be reached.

    Without Redis no worker receives new tasks anyway, so a call already under
    way is better made than dropped.
    """

    def __init__(self, breaker: CircuitBreaker | None, rate_limit: RateLimit | None, *, max_wait_seconds: float) -> None:
        self.breaker = breaker
        self.rate_limit = rate_limit
        self.max_wait_seconds = max_wait_seconds

    def before_call(self, token: str) -> Hold | None:
        """Return None when a carrier call may start now (after any rate-limit wait), else the hold."""
        try:
            if self.breaker is not None:
                hold = self.breaker.before_call(token)
                if hold is not None:
                    return hold
            if self.rate_limit is not None:
                try:
                    self.rate_limit.acquire(self.max_wait_seconds)
                except TimeoutError as exc:
                    return Hold(1.0, str(exc))
        except redis.RedisError as exc:
            log.warning("circuit breaker and rate limit skipped for this call: Redis failed: %s", exc)
        return None

    def record(self, outcome: Outcome, token: str) -> None:
        if self.breaker is None:
            return
        try:
            self.breaker.record(outcome, token)
        except redis.RedisError as exc:
            log.warning("circuit breaker not updated: Redis failed: %s", exc)
