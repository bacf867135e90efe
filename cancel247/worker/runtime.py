"""Per-process objects a worker needs: settings, audit store, carrier client, policy."""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass

import redis

from cancel247.audit.db import get_engine
from cancel247.audit.store import AuditStore
from cancel247.carrier.client import CarrierClient
from cancel247.carrier.guard import CarrierGuard, CircuitBreaker, RateLimit
from cancel247.config import Settings, get_settings
from cancel247.retry import RetryPolicy


@dataclass
class Runtime:
    settings: Settings
    store: AuditStore
    client: CarrierClient
    policy: RetryPolicy
    worker_name: str
    guard: CarrierGuard


_runtime: tuple[int, Runtime] | None = None
_lock = threading.Lock()


def build_runtime(settings: Settings) -> Runtime:
    engine = get_engine(settings.database_url.get_secret_value(), pool_size=settings.concurrency)
    return Runtime(
        settings=settings,
        store=AuditStore(engine),
        client=CarrierClient(settings),
        policy=RetryPolicy.from_settings(settings),
        worker_name=f"{socket.gethostname()}:{os.getpid()}",
        guard=build_guard(settings),
    )


def redis_client_url(broker_url: str) -> str:
    """Return the broker URL in the form redis-py reads: kombu's ``redis+socket://`` becomes ``unix://``."""
    if broker_url.startswith("redis+socket://"):
        return "unix://" + broker_url.removeprefix("redis+socket://")
    return broker_url


def build_guard(settings: Settings) -> CarrierGuard:
    """Build the circuit breaker and rate limit that settings ask for, on the broker's Redis."""
    broker_url = redis_client_url(settings.broker_url.get_secret_value())
    breaker = None
    if settings.breaker_threshold > 0:
        breaker = CircuitBreaker(
            redis.Redis.from_url(broker_url, socket_timeout=5, socket_connect_timeout=5),
            settings.queue,
            threshold=settings.breaker_threshold,
            cooldown_seconds=settings.breaker_cooldown_seconds,
            failure_window_seconds=settings.breaker_failure_window_seconds,
            probe_seconds=settings.longest_attempt_seconds,
        )
    # The limits library spells a Unix socket redis+unix://.
    limits_url = broker_url.replace("unix://", "redis+unix://", 1) if broker_url.startswith("unix://") else broker_url
    rate_limit = RateLimit(limits_url, settings.rate_limit, settings.queue) if settings.rate_limit else None
    return CarrierGuard(breaker, rate_limit, max_wait_seconds=settings.read_timeout_seconds + settings.connect_timeout_seconds)


def get_runtime() -> Runtime:
    """Return this process's runtime, building it after start-up or a fork."""
    global _runtime
    current = _runtime
    if current is not None and current[0] == os.getpid():
        return current[1]
    with _lock:
        if _runtime is None or _runtime[0] != os.getpid():
            _runtime = (os.getpid(), build_runtime(get_settings()))
        return _runtime[1]


def _reset_after_fork() -> None:
    global _lock, _runtime
    _lock = threading.Lock()
    _runtime = None


os.register_at_fork(after_in_child=_reset_after_fork)
