"""Find where a worker spends its time per request at zero carrier latency.

Three measurements, written as small text files to bench/profiles/:

- ``sql-<backend>.txt``: SQL statements and transactions per request, counted
  with SQLAlchemy engine events while ``RequestRun`` runs requests in this
  process, plus the producer's statements per enqueued request;
- ``runner-<backend>.txt``: requests per second of ``RequestRun`` driven by
  a thread pool in this process (no Celery, no broker), next to the bare
  HTTP loop, which splits the cost between the audit store and Celery;
- ``pyspy-<backend>.txt``: a py-spy profile (samples of the thread holding
  the GIL) of a real ``cancel247 worker`` process working through a queue,
  summed by package and by function.

Usage: ``python bench/profile_worker.py [--backend postgresql|sqlite] [--requests N]``.
Needs py-spy (the ``dev`` extra) and permission to trace a child process.
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import event

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import SandboxProcess  # noqa: E402

from cancel247.audit import migrate  # noqa: E402
from cancel247.audit.db import dispose_engines  # noqa: E402
from cancel247.audit.store import NewRequest  # noqa: E402
from cancel247.config import load_settings  # noqa: E402
from cancel247.local import WorkerProcess, settings_env, wait_until_final  # noqa: E402
from cancel247.sandbox import DEFAULT_PASSWORD, DEFAULT_USERNAME  # noqa: E402
from cancel247.tasks.producer import Producer  # noqa: E402
from cancel247.tasks.runner import RequestRun  # noqa: E402
from cancel247.worker.runtime import build_runtime  # noqa: E402

PROFILES = harness.BENCH_DIR / "profiles"
BROKER_URL = "redis://127.0.0.1:6379/10"
POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE = "cancel247_bench"
CONCURRENCY = 16
# Package buckets for the py-spy summary, matched against a frame's file path in order.
BUCKETS = (
    ("cancel247", r"\(cancel247/"),
    ("sqlalchemy", r"\(sqlalchemy/"),
    ("psycopg", r"\(psycopg"),
    ("sqlite3", r"\(sqlite3/"),
    ("requests+urllib3+http.client", r"\((requests|urllib3)/|\(http/client\.py"),
    ("celery", r"\(celery/"),
    ("kombu", r"\(kombu/"),
    ("redis-py", r"\(redis/"),
    ("logging", r"\(logging/"),
    ("json", r"\(json/"),
    ("tenacity", r"\(tenacity/"),
    ("pydantic", r"\(pydantic"),
    ("concurrent.futures", r"\(concurrent/futures/"),
    ("socket/ssl/selectors", r"\((socket|ssl|selectors)\.py"),
    ("threading/queue", r"\((threading|queue)\.py"),
)

# Frames every stack of the worker's main thread starts with; not attributed to cancel247.
ENTRY_FRAMES = re.compile(r"\(cancel247/(cli|__main__)\.py|\(click/|<frozen runpy>")


class StatementCounter:
    """Statement, commit and pool checkout counts of one engine, from its events."""

    def __init__(self, engine: Any) -> None:
        self.statements: Counter[str] = Counter()
        self.commits = 0
        self.checkouts = 0
        event.listen(engine, "before_cursor_execute", self._on_execute)
        event.listen(engine, "commit", self._on_commit)
        event.listen(engine.pool, "checkout", self._on_checkout)

    def _on_execute(self, _conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, executemany: bool) -> None:
        words = re.sub(r"\s+", " ", statement).strip()
        key = " ".join(words.split(" ")[:4]) + (" (executemany)" if executemany else "")
        self.statements[key] += 1

    def _on_commit(self, _conn: Any) -> None:
        self.commits += 1

    def _on_checkout(self, *_: Any) -> None:
        self.checkouts += 1

    def reset(self) -> None:
        self.statements.clear()
        self.commits = 0
        self.checkouts = 0


def database_url(backend: str, folder: Path) -> str:
    dispose_engines()
    if backend == "postgresql":
        harness.recreate_postgres_database(POSTGRES_ADMIN_URL, DATABASE)
        url = harness.postgres_url(POSTGRES_ADMIN_URL, DATABASE)
    else:
        url = f"sqlite:///{folder / f'profile-{uuid.uuid4().hex[:6]}.sqlite3'}"
    migrate.upgrade(url)
    return url


def settings_values(sandbox: SandboxProcess, url: str, queue: str) -> dict[str, Any]:
    return {
        "api_url": sandbox.url,
        "username": DEFAULT_USERNAME,
        "password": DEFAULT_PASSWORD,
        "broker_url": BROKER_URL,
        "database_url": url,
        "queue": queue,
        "concurrency": CONCURRENCY,
        "pool": "threads",
    }


def count_sql(backend: str, sandbox: SandboxProcess, folder: Path, requests: int) -> str:
    url = database_url(backend, folder)
    values = settings_values(sandbox, url, "cancel247-profile")
    settings = load_settings(**values)
    runtime = build_runtime(settings)
    worker_counter = StatementCounter(runtime.store.engine)
    producer = Producer(settings)
    producer_counter = StatementCounter(producer.store.engine)
    harness.flush_redis(BROKER_URL)

    # Warm up: the first login, the engines' first connections, statement caches.
    RequestRun(runtime, NewRequest(str(uuid.uuid4()), "PROFWARMUP")).execute()
    worker_counter.reset()
    producer_counter.reset()

    codes = [f"PROF{uuid.uuid4().hex[:8].upper()}" for _ in range(requests)]
    producer.enqueue_many(codes, source="profile")
    bulk = (sum(producer_counter.statements.values()), producer_counter.commits, dict(producer_counter.statements))
    producer_counter.reset()
    for code in codes[:20]:
        producer.enqueue(code + "X", source="profile")
    single = (sum(producer_counter.statements.values()) / 20, producer_counter.commits / 20)
    harness.flush_redis(BROKER_URL)

    worker_counter.reset()
    started = time.perf_counter()
    for code in codes:
        RequestRun(runtime, NewRequest(str(uuid.uuid4()), code + "W")).execute()
    sequential_ms = (time.perf_counter() - started) * 1000 / requests
    total = sum(worker_counter.statements.values())
    lines = [
        f"SQL per request on {backend}, {requests} requests run one after another by RequestRun in one process",
        "(zero carrier latency, every request succeeds at its first attempt).",
        "",
        f"worker: {total / requests:.2f} statements and {worker_counter.commits / requests:.2f} commits per request, "
        f"{worker_counter.checkouts / requests:.2f} pool checkouts (each a pre-ping on PostgreSQL); "
        f"{sequential_ms:.2f} ms wall per request, sequential",
    ]
    for statement, count in worker_counter.statements.most_common():
        lines.append(f"  {count / requests:5.2f}  {statement}")
    lines += [
        "",
        f"producer, enqueue_many of {requests}: {bulk[0]} statements and {bulk[1]} commit(s) in all",
    ]
    for statement, count in sorted(bulk[2].items()):
        lines.append(f"  {count:5d}  {statement}")
    lines.append(f"producer, enqueue one by one: {single[0]:.2f} statements and {single[1]:.2f} commits per request")
    runtime.client.close()
    dispose_engines()
    return "\n".join(lines) + "\n"


def runner_throughput(backend: str, sandbox: SandboxProcess, folder: Path, requests: int) -> str:
    url = database_url(backend, folder)
    settings = load_settings(**settings_values(sandbox, url, "cancel247-profile"))
    runtime = build_runtime(settings)
    RequestRun(runtime, NewRequest(str(uuid.uuid4()), "PROFWARMUP")).execute()
    sandbox.reset()
    codes = [f"RUN{uuid.uuid4().hex[:10].upper()}" for _ in range(requests)]
    started = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        statuses = Counter(
            str(s) for s in pool.map(lambda code: RequestRun(runtime, NewRequest(str(uuid.uuid4()), code)).execute(), codes)
        )
    seconds = time.perf_counter() - started
    runtime.client.close()
    dispose_engines()
    sandbox.reset()
    loop = harness.call_loop(sandbox.url, DEFAULT_USERNAME, DEFAULT_PASSWORD, threads=CONCURRENCY, prefix="RLIM", total_calls=requests)
    return (
        f"RequestRun without Celery on {backend}: {requests} requests from {CONCURRENCY} threads in one process, "
        f"{requests / seconds:,.0f} requests/s ({dict(statuses)})\n"
        f"bare HTTP loop, same threads and pool: {loop.calls / loop.seconds:,.0f} calls/s\n"
    )


def summarize_pyspy(raw: Path, title: str) -> str:
    """Sum py-spy's collapsed stacks by package (inclusive) and by function (self)."""
    inclusive: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    leaf_package: Counter[str] = Counter()
    thread_kind: Counter[str] = Counter()
    total = 0

    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        in_pool = any("(concurrent/futures/thread.py" in frame for frame in frames)
        thread_kind["pool threads (tasks)" if in_pool else "main thread (consumer loop) and others"] += count
        seen = set()
        for frame in frames:
            if ENTRY_FRAMES.search(frame):
                continue
            for bucket, pattern in BUCKETS:
                if re.search(pattern, frame) and bucket not in seen:
                    seen.add(bucket)
                    inclusive[bucket] += count
        leaf = frames[-1] if frames else "?"
        self_time[re.sub(r"\s+", " ", leaf)] += count
        package = next((b for b, p in BUCKETS if re.search(p, leaf)), "other")
        leaf_package[package] += count
    if not total:
        return f"{title}\nno samples\n"

    lines = [title, f"{total} samples of the thread holding the GIL", "", "share by thread:"]
    lines += [f"  {100 * c / total:5.1f}%  {name}" for name, c in thread_kind.most_common()]
    lines += ["", "inclusive share by package (a sample counts once per package on its stack):"]
    lines += [f"  {100 * c / total:5.1f}%  {name}" for name, c in inclusive.most_common()]
    lines += ["", "self share by package of the innermost frame:"]
    lines += [f"  {100 * c / total:5.1f}%  {name}" for name, c in leaf_package.most_common()]
    lines += ["", "top 30 innermost functions:"]
    lines += [f"  {100 * c / total:5.1f}%  {name}" for name, c in self_time.most_common(30)]
    return "\n".join(lines) + "\n"


def pyspy_worker(backend: str, sandbox: SandboxProcess, folder: Path, requests: int) -> str:
    pyspy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if pyspy is None:
        raise harness.BenchError("py-spy is not installed: pip install -e '.[dev]'")

    url = database_url(backend, folder)
    harness.flush_redis(BROKER_URL)
    sandbox.reset()
    values = settings_values(sandbox, url, f"cancel247-profile-{backend}")
    settings = load_settings(**values)
    worker = WorkerProcess(settings_env(values), folder / f"worker-{backend}.log")
    raw = folder / f"pyspy-{backend}.raw"
    try:
        worker.wait_ready(timeout_seconds=120)
        producer = Producer(settings)
        ids = producer.enqueue_many([f"SPY{uuid.uuid4().hex[:10].upper()}" for _ in range(requests)], source="profile")
        spy = subprocess.Popen(
            [pyspy, "record", "--pid", str(worker.process.pid), "--gil", "--rate", "250", "--format", "raw",
             "--output", str(raw), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        cpu_before = process_cpu()
        started = time.perf_counter()
        finished = wait_until_final(producer.store, ids, timeout_seconds=300, worker=worker)
        seconds = time.perf_counter() - started
        cpu_after = process_cpu()
        spy.send_signal(signal.SIGINT)
        _, spy_errors = spy.communicate(timeout=60)

        if not finished:
            raise harness.BenchError(f"requests not final; see {worker.log_path}")
    finally:
        worker.stop()
        dispose_engines()

    if not raw.exists():
        raise harness.BenchError(f"py-spy wrote no profile: {spy_errors.decode(errors='replace')[-500:]}")
    title = (
        f"py-spy of a cancel247 worker on {backend}, pool threads, concurrency {CONCURRENCY}, zero carrier latency: "
        f"{requests} requests in {seconds:.1f} s ({requests / seconds:,.0f} requests/s while sampled at 250 Hz)"
    )
    return summarize_pyspy(raw, title) + cpu_table(cpu_before, cpu_after, seconds, requests, worker.process.pid, sandbox.process.pid)


def process_cpu() -> dict[int, tuple[str, float]]:
    """Return CPU seconds of every process on the machine, by pid."""
    usage = {}
    for process in psutil.process_iter(["name", "cpu_times"]):
        times = process.info["cpu_times"]
        if times is not None:
            usage[process.pid] = (process.info["name"], times.user + times.system)
    return usage


def cpu_table(
    before: dict[int, tuple[str, float]],
    after: dict[int, tuple[str, float]],
    seconds: float,
    requests: int,
    worker_pid: int,
    sandbox_pid: int,
) -> str:
    """Sum the CPU time used during the run by process name (the worker apart); other users' processes count too."""
    by_name: Counter[str] = Counter()
    for pid, (name, cpu) in after.items():
        label = {worker_pid: "cancel247 worker", sandbox_pid: "sandbox"}.get(pid, name)
        by_name[label] += cpu - before.get(pid, (name, 0.0))[1]
    lines = ["", f"CPU used on the whole machine while the {requests} requests ran ({seconds:.1f} s wall, {psutil.cpu_count()} CPUs):"]
    for name, cpu in by_name.most_common(8):
        lines.append(f"  {cpu:6.2f} s  {100 * cpu / seconds:5.1f}% of one CPU  {1000 * cpu / requests:6.2f} ms/request  {name}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), action="append", help="Audit store(s) to profile (default: both).")
    parser.add_argument("--requests", type=int, default=1000, help="Requests per measurement (default: %(default)s).")
    parser.add_argument("--step", choices=("sql", "runner", "pyspy"), action="append", help="Measurement(s) to run (default: all).")
    args = parser.parse_args()
    backends = args.backend or ["postgresql", "sqlite"]
    PROFILES.mkdir(exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="cancel247-profile-"))
    sandbox = SandboxProcess(folder / "sandbox.log")
    try:
        for backend in backends:
            for name, work in (("sql", count_sql), ("runner", runner_throughput), ("pyspy", pyspy_worker)):
                if args.step and name not in args.step:
                    continue
                output = work(backend, sandbox, folder, args.requests)
                (PROFILES / f"{name}-{backend}.txt").write_text(output, encoding="utf-8")
                print(output)
    finally:
        sandbox.stop()
        dispose_engines()
    shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
