"""The retry policy: one budget of attempts, waits and a deadline, built on tenacity.

The wait before attempt ``n + 1`` is drawn uniformly ("full jitter") from
``[min_seconds, min(max_seconds, initial_seconds * 2 ** (n - 1))]``, and is
never shorter than a ``Retry-After`` the carrier sent. No attempt starts once
``deadline_seconds`` have passed since the first one began. Each call builds
its own :class:`tenacity.Retrying`, so attempt numbers and waits belong to
that call even when many calls fail at once in one worker.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import tenacity

from cancel247.carrier.errors import CarrierError, RetryableError
from cancel247.config import Settings


class RetryNow(RetryableError):
    """Retry at once, without waiting: used after a re-login with fresh credentials."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    initial_seconds: float
    min_seconds: float
    max_seconds: float
    deadline_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            max_attempts=settings.retry_max_attempts,
            initial_seconds=settings.retry_initial_seconds,
            min_seconds=settings.retry_min_seconds,
            max_seconds=settings.retry_max_seconds,
            deadline_seconds=settings.retry_deadline_seconds,
        )

    def backoff_cap_seconds(self, attempt_number: int) -> float:
        """Return the upper bound of the wait after attempt ``attempt_number`` (1-based)."""
        exponential = self.initial_seconds * 2 ** (attempt_number - 1)
        return max(self.min_seconds, min(self.max_seconds, exponential))

    def wait_seconds(
        self,
        attempt_number: int,
        *,
        retry_after_seconds: float | None = None,
        rng: random.Random | None = None,
    ) -> float:
        """Draw the wait after attempt ``attempt_number``, honouring ``Retry-After``."""
        uniform = (rng or random).uniform
        wait = uniform(self.min_seconds, self.backoff_cap_seconds(attempt_number))
        if retry_after_seconds is not None:
            wait = max(wait, retry_after_seconds)
        return wait

    def retrying(
        self,
        *,
        sleep: Callable[[float], None] = time.sleep,
        before_sleep: Callable[[tenacity.RetryCallState], None] | None = None,
        rng: random.Random | None = None,
        attempts_made: int = 0,
    ) -> tenacity.Retrying:
        """Build a fresh Retrying for one call; the last real error is re-raised.

        ``attempts_made`` counts the attempts this run made before it was held
        or interrupted, so a resumed run gets only what is left (at least one).
        """
        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(max(1, self.max_attempts - attempts_made))
            | tenacity.stop_before_delay(self.deadline_seconds),
            wait=_PolicyWait(self, rng),
            retry=tenacity.retry_if_exception_type(RetryableError),
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=True,
        )


class _PolicyWait(tenacity.wait.wait_base):
    def __init__(self, policy: RetryPolicy, rng: random.Random | None) -> None:
        self._policy = policy
        self._rng = rng

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(error, RetryNow):
            return 0.0
        retry_after = error.reply.retry_after_seconds if isinstance(error, CarrierError) else None
        return self._policy.wait_seconds(
            retry_state.attempt_number, retry_after_seconds=retry_after, rng=self._rng
        )
