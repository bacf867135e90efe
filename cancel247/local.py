"""Helpers to run a worker as a child process and wait for requests to finish.

Used by the demo, the tests and the benchmarks, which all need a real worker
process next to them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from sqlalchemy import func, select

from cancel247.audit.models import TERMINAL_STATUSES, CancelRequest
from cancel247.audit.store import AuditStore
from cancel247.config import ENV_PREFIX

# Seconds between polls of the audit store while waiting for requests.
POLL_SECONDS = 0.2
# Seconds a worker gets to finish its tasks after SIGTERM before SIGKILL.
STOP_GRACE_SECONDS = 20


def settings_env(values: Mapping[str, object]) -> dict[str, str]:
    """Return the current environment with CANCEL247_* set from ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update({f"{ENV_PREFIX}{name.upper()}": str(value) for name, value in values.items()})
    return env


class WorkerProcess:
    """A `cancel247 worker` child process with its output in a log file."""

    def __init__(self, env: Mapping[str, str], log_path: Path, *, extra_args: Sequence[str] = ()) -> None:
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cancel247", "worker", "--loglevel", "INFO", *extra_args],
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def wait_ready(self, timeout_seconds: float = 60) -> None:
        """Block until the worker logs that it is ready; raise RuntimeError if it exits or stalls."""
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}:\n{self.output()[-3000:]}")
            if " ready." in self.output():
                return
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready after {timeout_seconds} s:\n{self.output()[-3000:]}")

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> int:
        """Warm-stop the worker (SIGTERM), killing it if it does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


def count_final(store: AuditStore, request_ids: Sequence[str]) -> int:
    """Count how many of ``request_ids`` have a terminal status."""
    final = 0
    with store.transaction() as session:
        for start in range(0, len(request_ids), 500):
            chunk = request_ids[start : start + 500]
            final += session.execute(
                select(func.count())
                .select_from(CancelRequest)
                .where(CancelRequest.id.in_(chunk), CancelRequest.status.in_([s.value for s in TERMINAL_STATUSES]))
            ).scalar_one()
    return final


def wait_until_final(
    store: AuditStore,
    request_ids: Sequence[str],
    *,
    timeout_seconds: float,
    on_progress: Callable[[int], None] | None = None,
    worker: WorkerProcess | None = None,
) -> bool:
    """Poll until every request is final; return False on timeout or if the worker died."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        final = count_final(store, request_ids)
        if on_progress is not None:
            on_progress(final)
        if final == len(request_ids):
            return True
        if time.monotonic() > deadline:
            return False
        if worker is not None and worker.process.poll() is not None:
            return False
        time.sleep(POLL_SECONDS)
