"""One run of a cancellation request: claim it, call the carrier under the retry policy, record all.

Kept apart from Celery so that the whole path can be driven with an injected
sleep. The Celery task in :mod:`cancel247.tasks.cancel` is a thin shell.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import tenacity

from cancel247.audit.models import RequestStatus
from cancel247.audit.store import AuditUnavailable, FinalStatus, NewRequest
from cancel247.carrier.errors import (
    CODE_STATUS_INVALID,
    CarrierReply,
    FinalError,
    LoginError,
    Outcome,
    RetryableError,
    error_for,
)
from cancel247.retry import RetryNow
from cancel247.worker.runtime import Runtime

log = logging.getLogger(__name__)

# How long a worker keeps retrying the audit write that records a carrier
# reply, in seconds. It adds to the longest task, so it stays well under the
# 60 s margin the visibility timeout check allows for audit writes.
AUDIT_WRITE_PATIENCE_SECONDS = 30


class RequestHeld(Exception):
    """The request must wait before its next carrier call; the task is re-sent with a countdown."""

    def __init__(self, seconds: float, reason: str) -> None:
        super().__init__(f"held for {seconds:.1f} s: {reason}")
        self.seconds = seconds
        self.reason = reason


def _final_status(reply: CarrierReply, *, maybe_applied: bool, succeeded_before: bool = False) -> RequestStatus:
    """Map the last reply of a run to the request's terminal status."""
    if reply.outcome == Outcome.SUCCEEDED:
        return RequestStatus.SUCCEEDED
    if reply.outcome == Outcome.PERMANENT and reply.error_code == CODE_STATUS_INVALID and succeeded_before:
        # A forced replay of a cancelled order: 14 confirms the earlier success.
        return RequestStatus.SUCCEEDED
    if reply.outcome == Outcome.PERMANENT:
        # "Status invalid" after a call that may have gone through is most
        # likely our own earlier cancellation: ops must check the order.
        if reply.error_code == CODE_STATUS_INVALID and maybe_applied:
            return RequestStatus.UNCERTAIN
        return RequestStatus.REJECTED
    if reply.retryable and maybe_applied:
        return RequestStatus.UNCERTAIN
    return RequestStatus.FAILED


class RequestRun:
    """State of one run of one request inside a worker thread."""

    def __init__(
        self,
        runtime: Runtime,
        new: NewRequest,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.runtime = runtime
        self.new = new
        self.sleep = sleep
        self.run = 1
        self.number = 0
        self.calls = 0
        self.maybe_applied = False
        self.succeeded_before = False
        self.relogged = False
        self.last_attempt_id: int | None = None
        # The reply whose attempt row already carried the request's final status.
        self.written: tuple[CarrierReply, FinalStatus] | None = None
        # Identifies this thread's calls to the shared circuit breaker.
        self.token = f"{runtime.worker_name}:{threading.get_ident()}:{new.request_id}"

    def _log_prefix(self) -> str:
        return f"request={self.new.request_id} order={self.new.order_code} attempt={self.number}"

    def execute(self) -> RequestStatus:
        """Process the request to a terminal status (or leave it alone if already final)."""
        store = self.runtime.store
        claim = store.claim(self.new)
        if claim.status == RequestStatus.DUPLICATE:
            log.warning(
                "request=%s order=%s duplicate of request %s: carrier not called",
                self.new.request_id, self.new.order_code, claim.duplicate_of,
            )
            return claim.status
        if not claim.may_call:
            log.info(
                "request=%s order=%s already %s: nothing to do",
                self.new.request_id, self.new.order_code, claim.status.value,
            )
            return claim.status
        if claim.interrupted:
            log.warning(
                "request=%s order=%s resumed after a worker stopped: %d attempt(s) marked interrupted",
                self.new.request_id, self.new.order_code, claim.interrupted,
            )

        self.run = claim.run
        self.number = claim.last_attempt_number
        self.maybe_applied = claim.maybe_applied
        self.succeeded_before = claim.succeeded_before

        retrying = self.runtime.policy.retrying(
            sleep=self.sleep, before_sleep=self._before_sleep, attempts_made=claim.run_attempts
        )
        try:
            reply = retrying(self._attempt)
        except RequestHeld as held:
            self.runtime.store.record_hold(self.new.request_id, self.run, seconds=held.seconds, reason=held.reason)
            log.warning("%s carrier not called, %s", self._log_prefix(), held)
            raise
        except RetryableError as exc:
            return self._finish(exc.reply, exhausted=True)
        except FinalError as exc:
            return self._finish(exc.reply, exhausted=False)
        except LoginError as exc:
            return self._finish(exc.reply, exhausted=False, login=True)
        return self._finish(reply, exhausted=False)

    def _attempt(self) -> CarrierReply:
        client = self.runtime.client
        self.last_attempt_id = None
        try:
            credentials = client.credentials()
        except LoginError as exc:
            if exc.reply.retryable:
                log.info("%s login failed, will retry: %s", self._log_prefix(), exc.reply.summary())
                raise RetryableError(exc.reply) from None
            raise

        hold = self.runtime.guard.before_call(self.token)
        if hold is not None:
            raise RequestHeld(hold.seconds, hold.reason)

        self.number += 1
        attempt_id = self.runtime.store.start_attempt(
            request_id=self.new.request_id, run=self.run, number=self.number, worker=self.runtime.worker_name
        )
        self.last_attempt_id = attempt_id
        started = time.monotonic()
        reply = client.cancel_order(self.new.order_code, credentials)
        duration_ms = (time.monotonic() - started) * 1000
        self.calls += 1
        self.runtime.guard.record(reply.outcome, self.token)
        # A reply that ends the run is written with the request's final status
        # in one transaction: one commit fewer, and no gap between the two.
        final = self._final(reply) if reply.outcome in (Outcome.SUCCEEDED, Outcome.PERMANENT) else None
        self._keep_trying(
            lambda: self.runtime.store.finish_attempt(attempt_id, reply, duration_ms=duration_ms, final=final)
        )
        if final is not None:
            self.written = (reply, final)

        if reply.outcome == Outcome.SUCCEEDED:
            return reply
        if reply.outcome == Outcome.AMBIGUOUS:
            self.maybe_applied = True
        if reply.outcome == Outcome.AUTH and client.can_login and not self.relogged:
            self.relogged = True
            log.info("%s credentials rejected (%s): logging in again", self._log_prefix(), reply.summary())
            try:
                client.relogin(credentials)
            except LoginError as exc:
                if exc.reply.retryable:
                    raise RetryableError(exc.reply) from None
                raise
            raise RetryNow(reply)
        raise error_for(reply)

    def _keep_trying(self, write: Callable[[], None]) -> None:
        """Run an audit write that follows a carrier call, retrying while the store is unavailable.

        The reply exists only in memory until it is written: giving up at once
        would leave the attempt in flight, and its request would end uncertain
        even when the carrier replied. After the store has been down for
        AUDIT_WRITE_PATIENCE_SECONDS, the error goes to the task, which retries.
        """
        for attempt in tenacity.Retrying(
            stop=tenacity.stop_after_delay(AUDIT_WRITE_PATIENCE_SECONDS),
            wait=tenacity.wait_exponential(multiplier=0.2, max=5),
            retry=tenacity.retry_if_exception_type(AuditUnavailable),
            sleep=self.sleep,
            reraise=True,
            before_sleep=lambda state: log.warning(
                "%s audit store unavailable after the carrier replied, retrying the write: %s",
                self._log_prefix(), state.outcome.exception() if state.outcome else "",
            ),
        ):
            with attempt:
                write()

    def _before_sleep(self, retry_state: tenacity.RetryCallState) -> None:
        wait = retry_state.upcoming_sleep
        error = retry_state.outcome.exception() if retry_state.outcome else None
        summary = error.reply.summary() if isinstance(error, RetryableError) else repr(error)
        log.info("%s %s: retrying in %.3f s", self._log_prefix(), summary, wait)
        if self.last_attempt_id is not None:
            self.runtime.store.set_wait(self.last_attempt_id, wait)

    def _final(self, reply: CarrierReply, *, exhausted: bool = False, login: bool = False) -> FinalStatus:
        """Return the final status, code and reason that ``reply`` gives this run."""
        status = _final_status(reply, maybe_applied=self.maybe_applied, succeeded_before=self.succeeded_before)
        if login and status == RequestStatus.REJECTED:
            status = RequestStatus.FAILED
        detail = reply.summary()
        if login:
            detail = f"carrier login failed: {detail}"
        if exhausted:
            detail = f"retries exhausted after {self.calls} call(s): {detail}"
        if status == RequestStatus.SUCCEEDED and reply.outcome != Outcome.SUCCEEDED:
            detail += "; the order was already cancelled by an earlier run of this request"
        if status == RequestStatus.UNCERTAIN:
            detail += "; an earlier call may have cancelled the order: check it with the carrier"
        return FinalStatus(self.new.request_id, status, reply.error_code, detail)

    # NOTE: after retries run out, the last attempt's row and the request's
    # final status are written in two transactions. If the second still fails
    # after AUDIT_WRITE_PATIENCE_SECONDS, the redelivered task runs the
    # request again and may call the carrier once more.
    def _finish(self, reply: CarrierReply, *, exhausted: bool, login: bool = False) -> RequestStatus:
        if self.written is not None and self.written[0] is reply and not exhausted and not login:
            final = self.written[1]
        else:
            final = self._final(reply, exhausted=exhausted, login=login)
            self._keep_trying(lambda: self.runtime.store.finish_request(final))

        if final.status == RequestStatus.SUCCEEDED:
            log.info("%s succeeded", self._log_prefix())
        else:
            log.warning("%s ended %s: %s", self._log_prefix(), final.status.value, final.detail)
        return final.status
