"""Processes, databases and probes shared by the benchmark scripts in bench/.

Everything runs on 127.0.0.1: the sandbox carrier in its own process, Redis
and PostgreSQL that are already running, SQLite files in a temporary folder.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import psutil
import psycopg
import redis
import requests
from requests.adapters import HTTPAdapter
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import NullPool
from urllib3.util.retry import Retry

from cancel247.carrier.client import CANCEL_PATH, LOGIN_PATH, USER_AGENT

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO / "bench"
PACKAGES = ("celery", "kombu", "redis", "requests", "urllib3", "SQLAlchemy", "psycopg", "tenacity", "alembic", "psutil")

# Markers around each script's part of RESULTS.md; text outside them is kept.
SECTION_START = "<!-- {name}:start -->"
SECTION_END = "<!-- {name}:end -->"
RESULTS_HEADER = """# Benchmarks

Figures measured by the scripts in `bench/` on one machine, against the
sandbox carrier on 127.0.0.1 (the real carrier is never contacted). Each
script rewrites only its own section of this page; `make bench` runs them all.
"""


class BenchError(Exception):
    """A benchmark that could not run. The message names what failed and what to check."""


# Sandbox ---------------------------------------------------------------------


class SandboxProcess:
    """`cancel247 sandbox --port 0` in a child process, scripted through its admin endpoints.

    The sandbox runs apart from the benchmark so that neither the client
    loops nor the workers share its interpreter lock.
    """

    def __init__(self, log_path: Path, *, seed: int = 1) -> None:
        self._log: IO[bytes] = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cancel247", "sandbox", "--port", "0", "--seed", str(seed)],
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            env={k: v for k, v in os.environ.items() if not k.startswith("CANCEL247_")},
        )
        assert self.process.stdout is not None
        first = self.process.stdout.readline().decode()
        prefix = "sandbox listening on "
        if not first.startswith(prefix):
            self.stop()
            raise BenchError(f"the sandbox did not start; it printed {first!r}; see {log_path}")
        self.url = first[len(prefix) :].strip()
        self.admin = requests.Session()
        self.admin.trust_env = False
        self.psutil = psutil.Process(self.process.pid)

    def reset(self, *, latency_ms: float = 0.0) -> None:
        """Forget orders, calls and tokens, then set the latency added to every CancelOrder reply."""
        self.admin.post(self.url + "/_sandbox/reset", timeout=30).raise_for_status()
        if latency_ms:
            self.admin.post(self.url + "/_sandbox/config", json={"latency_ms": latency_ms}, timeout=30).raise_for_status()

    def cancel_calls(self) -> list[dict[str, Any]]:
        response = self.admin.get(self.url + "/_sandbox/calls", timeout=120)
        response.raise_for_status()
        return [c for c in response.json()["calls"] if c["path"] == "CancelOrder"]

    def cpu_seconds(self) -> float:
        times = self.psutil.cpu_times()
        return times.user + times.system

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def call_times(calls: Sequence[dict[str, Any]]) -> list[datetime]:
    return sorted(datetime.fromisoformat(c["time"]) for c in calls)


# Client loop -----------------------------------------------------------------


@dataclass
class LoopResult:
    calls: int
    errors: int
    seconds: float
    started: float
    finished: float
    error_samples: list[str] = field(default_factory=list)


def carrier_session(pool_size: int) -> requests.Session:
    """Return a requests session set up as cancel247's carrier client sets up its own."""
    session = requests.Session()
    session.trust_env = False
    session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
    adapter = HTTPAdapter(
        pool_connections=1,
        pool_maxsize=pool_size,
        max_retries=Retry(total=0, connect=0, read=False, redirect=False, status=0, other=0),
        pool_block=False,
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def call_loop(
    url: str,
    username: str,
    password: str,
    *,
    threads: int,
    prefix: str,
    total_calls: int | None = None,
    seconds: float | None = None,
    start_at: float | None = None,
) -> LoopResult:
    """Log in once, then POST CancelOrder from ``threads`` threads sharing one pool.

    Stops after ``total_calls`` calls or ``seconds`` seconds. Each call uses a
    new order code, so the sandbox returns code 0. ``start_at`` (a
    ``time.time()`` value) lets several processes start together.
    """
    session = carrier_session(threads)
    login = session.post(url + LOGIN_PATH, json={"UserName": username, "Password": password}, timeout=(5, 15))
    login.raise_for_status()
    data = login.json()
    headers = {"Content-Type": "application/json", "ClientID": str(data["ClientID"]), "Token": data["Token"]}
    counter = iter(range(total_calls if total_calls is not None else 10**12))
    errors: list[str] = []
    done = [0]
    lock = threading.Lock()
    if start_at is not None:
        time.sleep(max(0.0, start_at - time.time()))
    deadline = time.monotonic() + seconds if seconds is not None else None

    def work() -> None:
        local_done = 0
        local_errors: list[str] = []
        for index in counter:
            if deadline is not None and time.monotonic() >= deadline:
                break
            try:
                response = session.post(
                    url + CANCEL_PATH,
                    data=json.dumps({"OrderCode": f"{prefix}{index:08d}"}),
                    headers=headers,
                    timeout=(5, 15),
                    allow_redirects=False,
                )
                if response.status_code != 200 or response.json().get("ErrorCode") != "0":
                    local_errors.append(f"HTTP {response.status_code}: {response.text[:100]}")
            except requests.RequestException as exc:
                local_errors.append(f"{type(exc).__name__}: {exc}"[:200])
            local_done += 1
        with lock:
            done[0] += local_done
            errors.extend(local_errors)

    pool = [threading.Thread(target=work, name=f"client-{i}") for i in range(threads)]
    started_wall = time.time()
    started = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - started
    session.close()
    return LoopResult(done[0], len(errors), elapsed, started_wall, started_wall + elapsed, errors[:5])


# Databases -------------------------------------------------------------------


def postgres_url(admin_url: str, database: str, *, driver: str = "postgresql+psycopg") -> str:
    url = make_url(admin_url).set(drivername=driver, database=database)
    return url.render_as_string(hide_password=False)


def recreate_postgres_database(admin_url: str, name: str) -> None:
    plain = make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(plain, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            connection.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        raise BenchError(f"PostgreSQL is not reachable at {make_url(admin_url).render_as_string()}: {exc}") from None


def postgres_version(admin_url: str) -> str:
    plain = make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(plain) as connection:
        row = connection.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"


def probe_engine(url: str) -> Engine:
    """Return an engine for read-only polling, without the audit store's BEGIN IMMEDIATE on SQLite."""
    return create_engine(url, poolclass=NullPool)


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as connection:
        return connection.execute(text(sql), params).scalar()


def flush_redis(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    except redis.ConnectionError as exc:
        raise BenchError(f"Redis is not reachable at {url}: {exc}") from None
    finally:
        client.close()


def redis_version(url: str) -> str:
    client = redis.Redis.from_url(url)
    try:
        return str(client.info("server").get("redis_version", "unknown"))
    finally:
        client.close()


# Processes -------------------------------------------------------------------


class TreeSampler:
    """CPU time and peak RSS of a process and all its children, sampled on demand."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.peak_rss = 0
        self._cpu: dict[int, float] = {}
        self.sample()
        self.cpu_at_start = self.cpu_seconds()

    def _processes(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def sample(self) -> None:
        rss = 0
        for process in self._processes():
            try:
                rss += process.memory_info().rss
                times = process.cpu_times()
                self._cpu[process.pid] = times.user + times.system
            except psutil.NoSuchProcess:
                continue
        self.peak_rss = max(self.peak_rss, rss)

    def cpu_seconds(self) -> float:
        """CPU seconds of every process seen so far, exited children at their last sample."""
        return sum(self._cpu.values())


def wait_for_log(process: subprocess.Popen[bytes], log_path: Path, needle: str, timeout_seconds: float) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
            raise BenchError(f"process exited with {process.returncode} before {needle!r}:\n{tail}")
        if needle in log_path.read_text(encoding="utf-8", errors="replace"):
            return
        time.sleep(0.1)
    raise BenchError(f"{needle!r} not logged in {timeout_seconds} s; see {log_path}")


def stop_process(process: subprocess.Popen[bytes], grace_seconds: float = 20) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace_seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# Statistics and the results page ---------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the nearest-rank percentile, ``fraction`` in (0, 1]."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.4999)))
    return ordered[rank - 1]


def machine_info() -> dict[str, Any]:
    cpu_model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "cpu_model": cpu_model,
        "logical_cpus": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
    }


def replace_section(path: Path, name: str, body: str) -> None:
    """Write ``body`` between this script's markers in ``path``, keeping the rest of the file."""
    start = SECTION_START.format(name=name)
    end = SECTION_END.format(name=name)
    block = f"{start}\n{body.rstrip()}\n{end}"
    current = path.read_text(encoding="utf-8") if path.exists() else RESULTS_HEADER
    if start in current and end in current:
        before, rest = current.split(start, 1)
        _, after = rest.split(end, 1)
        updated = before + block + after
    else:
        updated = current.rstrip() + "\n\n" + block + "\n"
    path.write_text(updated, encoding="utf-8")
