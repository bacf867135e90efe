"""Engines for the audit store, safe across fork and threads.

Engines are cached per process: a child created by fork (Celery's prefork
pool) never reuses a socket its parent opened, because the cache is keyed by
the process id and inherited engines are dropped without closing the parent's
connections. Within a process, threads share one engine whose pool holds a
connection per thread.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

# How long a SQLite writer waits for the lock before "database is locked".
SQLITE_BUSY_TIMEOUT_SECONDS = 60
# Extra PostgreSQL connections beyond one per worker thread, for the
# producer side and short bursts.
POSTGRES_POOL_OVERFLOW = 4
# Seconds to wait for a PostgreSQL connection, unless the URL sets
# connect_timeout: without it a host that drops packets blocks a worker
# thread for the operating system's TCP timeout, minutes.
POSTGRES_CONNECT_TIMEOUT_SECONDS = 10

_engines: dict[tuple[int, str, int], Engine] = {}
_lock = threading.Lock()


def _configure_sqlite(engine: Engine) -> None:
    # pysqlite starts transactions lazily, so a reader that later writes can
    # fail with "database is locked" without waiting. Taking the write lock
    # up front (BEGIN IMMEDIATE) makes every transaction wait its turn.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_SECONDS * 1000}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_audit_engine(url: str, *, pool_size: int = 5) -> Engine:
    """Create an engine for ``url`` with the settings the audit store relies on."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            parsed,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
            pool_size=pool_size,
            max_overflow=POSTGRES_POOL_OVERFLOW,
        )
        _configure_sqlite(engine)
        return engine
    connect_args = {} if "connect_timeout" in parsed.query else {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_SECONDS}
    # pool_pre_ping replaces connections that died with a database restart
    # before a transaction uses them.
    return create_engine(
        parsed,
        pool_size=pool_size,
        max_overflow=POSTGRES_POOL_OVERFLOW,
        pool_pre_ping=True,
        connect_args=connect_args,
    )


def get_engine(url: str, *, pool_size: int = 5) -> Engine:
    """Return this process's engine for ``url``, creating it on first use."""
    key = (os.getpid(), url, pool_size)
    engine = _engines.get(key)
    if engine is not None:
        return engine
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = create_audit_engine(url, pool_size=pool_size)
            _engines[key] = engine
        return engine


def _drop_inherited_engines() -> None:
    global _lock
    _lock = threading.Lock()
    for engine in _engines.values():
        engine.dispose(close=False)
    _engines.clear()


def dispose_engines() -> None:
    """Close every engine of this process (used by tests and at shutdown)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


os.register_at_fork(after_in_child=_drop_inherited_engines)
