"""Measure the cancel247 pipeline on this machine: `make bench` or `python bench/pipeline.py`.

Scenarios, all against the sandbox carrier in its own process on 127.0.0.1:

- sandbox capacity: client processes with more threads than a worker uses;
- limit: one process logs in once, then POSTs CancelOrder from as many
  threads as the worker has, over the same kind of connection pool: no
  queue, no database;
- cancel247 end to end, audit store on PostgreSQL and on SQLite: a real
  worker process, requests enqueued with the Producer;
- the usual alternative (bench/alternative.py): a plain Celery task with
  autoretry and the SQLAlchemy result backend on PostgreSQL;
- enqueue rate, one request per call and in bulk;
- latency from enqueue to the first carrier call, at light load;
- scaling with worker concurrency at 50 ms carrier latency, and the
  worker's peak RSS at the highest concurrency.

It prints the figures and the targets, writes results.json and rewrites its
own section of RESULTS.md (between the pipeline markers).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import BenchError, SandboxProcess, TreeSampler  # noqa: E402

from cancel247.audit import migrate  # noqa: E402
from cancel247.audit.db import dispose_engines  # noqa: E402
from cancel247.audit.models import TERMINAL_STATUSES  # noqa: E402
from cancel247.config import DEFAULT_CONCURRENCY, load_settings  # noqa: E402
from cancel247.local import WorkerProcess, settings_env  # noqa: E402
from cancel247.sandbox import DEFAULT_PASSWORD, DEFAULT_USERNAME  # noqa: E402
from cancel247.tasks.producer import Producer  # noqa: E402

SECTION = "pipeline"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/10"
DEFAULT_ALT_BROKER_URL = "redis://127.0.0.1:6379/11"
DEFAULT_POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_DATABASE = "cancel247_bench"
DEFAULT_ALT_DATABASE = "cancel247_bench_alt"
SCALING_LATENCY_MS = 50.0
SCALING_CONCURRENCIES = (1, 8, 32, 64)
POLL_SECONDS = 0.1
TERMINAL_SQL = ", ".join(f"'{s.value}'" for s in sorted(TERMINAL_STATUSES))


@dataclass(frozen=True)
class Sizes:
    """How much work each scenario does."""

    capacity_seconds: float
    capacity_processes: int
    capacity_threads: int
    limit_calls: int
    end_to_end: int
    alternative: int
    enqueue_single: int
    enqueue_bulk: int
    latency_requests: int
    # Requests per second sent one by one in the latency scenario.
    latency_rate: float
    # Each scaling run is sized to last about this long at the ideal rate,
    # within [scaling_min, scaling_max] requests.
    scaling_seconds: float
    scaling_min: int
    scaling_max: int


FULL = Sizes(
    capacity_seconds=6, capacity_processes=2, capacity_threads=32, limit_calls=5000, end_to_end=3000,
    alternative=3000, enqueue_single=1000, enqueue_bulk=20000, latency_requests=200, latency_rate=20,
    scaling_seconds=8, scaling_min=100, scaling_max=3000,
)
QUICK = Sizes(
    capacity_seconds=1, capacity_processes=2, capacity_threads=8, limit_calls=200, end_to_end=60,
    alternative=60, enqueue_single=30, enqueue_bulk=300, latency_requests=10, latency_rate=20,
    scaling_seconds=0.5, scaling_min=10, scaling_max=100,
)


@dataclass(frozen=True)
class Target:
    name: str
    threshold: float
    unit: str
    higher_is_better: bool = True


TARGETS = {
    "limit_ratio": Target("cancel247 (PostgreSQL) / limit, zero latency", 0.5, "ratio"),
    "scaling_32": Target(f"measured / ideal, {SCALING_LATENCY_MS:g} ms latency, concurrency 32", 0.9, "ratio"),
    "alternative_ratio": Target("cancel247 (PostgreSQL) / alternative, zero latency", 1.0, "ratio"),
    "bulk_enqueue": Target("bulk enqueue (PostgreSQL audit store)", 10000, "requests/s"),
    "rss_64": Target("worker peak RSS at concurrency 64", 200, "MB", higher_is_better=False),
}


class Bench:
    """One benchmark run: its settings, the processes it started and the figures so far."""

    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        self.args = args
        self.console = console
        self.sizes = QUICK if args.quick else FULL
        self.folder = Path(tempfile.mkdtemp(prefix="cancel247-bench-"))
        self.database_url = harness.postgres_url(args.postgres_admin_url, args.database)
        self.alt_backend_url = "db+" + harness.postgres_url(args.postgres_admin_url, args.alt_database)
        self.results: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        self.sandbox: SandboxProcess | None = None
        self._scenario_index = 0

    # Helpers ---------------------------------------------------------------

    @property
    def carrier(self) -> SandboxProcess:
        assert self.sandbox is not None
        return self.sandbox

    def codes(self, count: int) -> list[str]:
        """Return ``count`` order codes no earlier scenario of this run used."""
        self._scenario_index += 1
        stamp = datetime.now(UTC).strftime("%H%M%S")
        return [f"BENCH{stamp}S{self._scenario_index:02d}N{i:07d}" for i in range(count)]

    def worker_values(self, database_url: str, concurrency: int, queue: str) -> dict[str, Any]:
        return {
            "api_url": self.carrier.url,
            "username": DEFAULT_USERNAME,
            "password": DEFAULT_PASSWORD,
            "broker_url": self.args.broker_url,
            "database_url": database_url,
            "queue": queue,
            "concurrency": concurrency,
            "pool": "threads",
        }

    def fresh_database(self, backend: str) -> str:
        """Return the URL of an empty, migrated audit store for ``backend``."""
        dispose_engines()
        if backend == "postgresql":
            harness.recreate_postgres_database(self.args.postgres_admin_url, self.args.database)
            url = self.database_url
        else:
            self._scenario_index += 1
            url = f"sqlite:///{self.folder / f'audit-{self._scenario_index}.sqlite3'}"
        migrate.upgrade(url)
        return url

    def wait_done(
        self,
        count: Callable[[], int],
        total: int,
        timeout_seconds: float,
        sampler: TreeSampler,
        process: subprocess.Popen[bytes],
    ) -> datetime:
        """Poll until ``count()`` reaches ``total``; return the time it did, or raise BenchError."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            sampler.sample()
            done = count()
            if done >= total:
                return datetime.now(UTC)
            if process.poll() is not None:
                raise BenchError(f"worker exited with {process.returncode} after {done} of {total} requests")
            if time.monotonic() > deadline:
                raise BenchError(f"only {done} of {total} requests final after {timeout_seconds:.0f} s")
            time.sleep(POLL_SECONDS)

    def run_scenario(self, name: str, work: Callable[[], dict[str, Any]]) -> None:
        self.console.print(f"[bold]{name}[/bold] ...")
        started = time.monotonic()
        try:
            self.results[name] = work()
        except Exception as exc:  # noqa: BLE001  (one failed scenario must not hide the others)
            self.errors[name] = f"{type(exc).__name__}: {exc}"
            self.console.print(f"[red]{name} failed: {self.errors[name]}[/red]")
            if self.args.verbose:
                traceback.print_exc()
        else:
            self.console.print(f"  {summarize(self.results[name])} ({time.monotonic() - started:.1f} s)")
        finally:
            dispose_engines()

    # Scenarios -----------------------------------------------------------------

    def sandbox_capacity(self) -> dict[str, Any]:
        sizes = self.sizes
        self.carrier.reset()
        start_at = time.time() + 2.0
        cpu_before = self.carrier.cpu_seconds()
        with ProcessPoolExecutor(sizes.capacity_processes, mp_context=get_context("spawn")) as executor:
            futures = [
                executor.submit(
                    harness.call_loop, self.carrier.url, DEFAULT_USERNAME, DEFAULT_PASSWORD,
                    threads=sizes.capacity_threads, prefix=f"CAP{i}N", seconds=sizes.capacity_seconds,
                    start_at=start_at,
                )
                for i in range(sizes.capacity_processes)
            ]
            loops = [f.result() for f in futures]
        cpu_after = self.carrier.cpu_seconds()
        calls = sum(loop.calls for loop in loops)
        span = max(loop.finished for loop in loops) - min(loop.started for loop in loops)
        # The sandbox was idle before start_at, so its CPU time is all from the loops.
        return {
            "calls": calls,
            "errors": sum(loop.errors for loop in loops),
            "seconds": round(span, 3),
            "rate": calls / span,
            "client_processes": sizes.capacity_processes,
            "client_threads": sizes.capacity_processes * sizes.capacity_threads,
            "sandbox_cpu_percent": round(100 * (cpu_after - cpu_before) / span, 1),
        }

    def limit(self) -> dict[str, Any]:
        self.carrier.reset()
        cpu_before = self.carrier.cpu_seconds()
        loop = harness.call_loop(
            self.carrier.url, DEFAULT_USERNAME, DEFAULT_PASSWORD,
            threads=self.args.concurrency, prefix="LIM", total_calls=self.sizes.limit_calls,
        )
        cpu_after = self.carrier.cpu_seconds()
        if loop.errors:
            raise BenchError(f"{loop.errors} of {loop.calls} calls failed, e.g. {loop.error_samples}")
        return {
            "calls": loop.calls,
            "seconds": round(loop.seconds, 3),
            "rate": loop.calls / loop.seconds,
            "threads": self.args.concurrency,
            "sandbox_cpu_percent": round(100 * (cpu_after - cpu_before) / loop.seconds, 1),
        }

    def cancel247(self, backend: str, *, concurrency: int, total: int, latency_ms: float = 0.0) -> dict[str, Any]:
        """Start a worker, enqueue ``total`` requests in bulk and time them until all are final."""
        database_url = self.fresh_database(backend)
        harness.flush_redis(self.args.broker_url)
        self.carrier.reset(latency_ms=latency_ms)
        values = self.worker_values(database_url, concurrency, f"cancel247-bench-{backend}")
        settings = load_settings(**values)
        worker = WorkerProcess(settings_env(values), self.folder / f"worker-{backend}-c{concurrency}.log")
        probe = harness.probe_engine(database_url)
        try:
            worker.wait_ready(timeout_seconds=120)
            sampler = TreeSampler(worker.process.pid)
            sandbox_cpu_before = self.carrier.cpu_seconds()
            producer = Producer(settings)
            enqueue_started = datetime.now(UTC)
            producer.enqueue_many(self.codes(total), source="bench")
            enqueued = datetime.now(UTC)
            done_at = self.wait_done(
                lambda: harness.scalar(probe, f"SELECT count(*) FROM cancel_requests WHERE status IN ({TERMINAL_SQL})"),
                total,
                timeout_seconds=max(60.0, total / 20 + 30),
                sampler=sampler,
                process=worker.process,
            )
            sampler.sample()
            worker_cpu = sampler.cpu_seconds() - sampler.cpu_at_start
            sandbox_cpu = self.carrier.cpu_seconds() - sandbox_cpu_before
        finally:
            worker.stop()
        return self._cancel247_figures(
            probe, total, enqueue_started, enqueued, done_at, worker_cpu, sandbox_cpu, sampler.peak_rss,
            concurrency=concurrency, latency_ms=latency_ms,
        )

    def _cancel247_figures(
        self,
        probe: Any,
        total: int,
        enqueue_started: datetime,
        enqueued: datetime,
        done_at: datetime,
        worker_cpu: float,
        sandbox_cpu: float,
        peak_rss: int,
        *,
        concurrency: int,
        latency_ms: float,
    ) -> dict[str, Any]:
        calls = self.carrier.cancel_calls()
        times = harness.call_times(calls)
        with probe.connect() as connection:
            statuses = dict(connection.execute(text("SELECT status, count(*) FROM cancel_requests GROUP BY status")).all())
            attempts = connection.execute(text("SELECT count(*) FROM cancel_attempts")).scalar_one()
        probe.dispose()
        span = (done_at - times[0]).total_seconds()
        figures = {
            "requests": total,
            "concurrency": concurrency,
            "latency_ms": latency_ms,
            "rate": total / span,
            "seconds": round(span, 3),
            "enqueue_seconds": round((enqueued - enqueue_started).total_seconds(), 3),
            "carrier_calls": len(calls),
            "attempt_rows": attempts,
            "attempts_match_calls": attempts == len(calls),
            "statuses": statuses,
            "worker_cpu_ms_per_request": round(1000 * worker_cpu / total, 3),
            "sandbox_cpu_percent": round(100 * sandbox_cpu / span, 1),
            "worker_peak_rss_mb": round(peak_rss / 2**20, 1),
        }
        if latency_ms:
            figures["ideal_rate"] = concurrency / (latency_ms / 1000)
            figures["ratio_to_ideal"] = figures["rate"] / figures["ideal_rate"]
        if statuses.get("succeeded", 0) != total:
            raise BenchError(f"expected {total} succeeded requests, got {statuses}")
        if not figures["attempts_match_calls"]:
            raise BenchError(f"{attempts} attempt rows but {len(calls)} carrier calls")
        return figures

    def alternative(self) -> dict[str, Any]:
        """Run bench/alternative.py's Celery worker on the same broker server, pool and concurrency."""
        from celery import Celery

        total = self.sizes.alternative
        harness.recreate_postgres_database(self.args.postgres_admin_url, self.args.alt_database)
        harness.flush_redis(self.args.alt_broker_url)
        self.carrier.reset()
        backend_url = self.alt_backend_url
        engine_url = backend_url.removeprefix("db+")
        probe = harness.probe_engine(engine_url)
        _create_result_tables(probe)
        queue = "alternative-bench"
        concurrency = self.args.concurrency
        env = {k: v for k, v in os.environ.items() if not k.startswith("CANCEL247_")}
        env.update(
            PYTHONPATH=str(harness.BENCH_DIR),
            BENCH_ALT_BROKER_URL=self.args.alt_broker_url,
            BENCH_ALT_BACKEND_URL=backend_url,
            BENCH_ALT_API_URL=self.carrier.url,
            BENCH_ALT_USERNAME=DEFAULT_USERNAME,
            BENCH_ALT_PASSWORD=DEFAULT_PASSWORD,
            BENCH_ALT_QUEUE=queue,
            BENCH_ALT_CONCURRENCY=str(concurrency),
        )
        log_path = self.folder / "worker-alternative.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "alternative", "worker", "--pool", "threads",
                 "--concurrency", str(concurrency), "--queues", queue, "--loglevel", "INFO",
                 "--hostname", "alternative@%h"],
                env=env, cwd=harness.BENCH_DIR, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        try:
            harness.wait_for_log(process, log_path, " ready.", 120)
            sampler = TreeSampler(process.pid)
            sandbox_cpu_before = self.carrier.cpu_seconds()
            app = Celery("alternative-producer", broker=self.args.alt_broker_url, set_as_current=False)
            codes = self.codes(total)
            enqueue_started = datetime.now(UTC)
            with app.producer_or_acquire() as producer:
                for code in codes:
                    app.send_task("alternative.cancel_order", args=[code], queue=queue, producer=producer)
            enqueued = datetime.now(UTC)
            done_at = self.wait_done(
                lambda: harness.scalar(probe, "SELECT count(*) FROM celery_taskmeta WHERE status IN ('SUCCESS', 'FAILURE')"),
                total,
                timeout_seconds=max(60.0, total / 20 + 30),
                sampler=sampler,
                process=process,
            )
            sampler.sample()
            worker_cpu = sampler.cpu_seconds() - sampler.cpu_at_start
            sandbox_cpu = self.carrier.cpu_seconds() - sandbox_cpu_before
        finally:
            harness.stop_process(process)
        succeeded = harness.scalar(probe, "SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'")
        probe.dispose()
        calls = self.carrier.cancel_calls()
        times = harness.call_times(calls)
        span = (done_at - times[0]).total_seconds()
        if succeeded != total:
            raise BenchError(f"expected {total} SUCCESS results, got {succeeded}; see {log_path}")
        return {
            "requests": total,
            "concurrency": concurrency,
            "rate": total / span,
            "seconds": round(span, 3),
            "enqueue_seconds": round((enqueued - enqueue_started).total_seconds(), 3),
            "carrier_calls": len(calls),
            "worker_cpu_ms_per_request": round(1000 * worker_cpu / total, 3),
            "sandbox_cpu_percent": round(100 * sandbox_cpu / span, 1),
            "worker_peak_rss_mb": round(sampler.peak_rss / 2**20, 1),
        }

    def enqueue(self, backend: str) -> dict[str, Any]:
        """Time Producer.enqueue (what enqueue_cancel calls) and Producer.enqueue_many with no worker."""
        database_url = self.fresh_database(backend)
        harness.flush_redis(self.args.broker_url)
        values = self.worker_values(database_url, self.args.concurrency, f"cancel247-bench-enqueue-{backend}")
        producer = Producer(load_settings(**values))
        producer.enqueue("BENCHWARMUP", source="bench")

        codes = self.codes(self.sizes.enqueue_single)
        started = time.perf_counter()
        for code in codes:
            producer.enqueue(code, source="bench")
        single_seconds = time.perf_counter() - started

        codes = self.codes(self.sizes.enqueue_bulk)
        started = time.perf_counter()
        producer.enqueue_many(codes, source="bench")
        bulk_seconds = time.perf_counter() - started
        harness.flush_redis(self.args.broker_url)
        return {
            "single_requests": self.sizes.enqueue_single,
            "single_rate": self.sizes.enqueue_single / single_seconds,
            "bulk_requests": self.sizes.enqueue_bulk,
            "bulk_rate": self.sizes.enqueue_bulk / bulk_seconds,
        }

    def latency(self) -> dict[str, Any]:
        """Send requests one by one at a light, fixed rate to an idle worker; measure enqueue to first call."""
        sizes = self.sizes
        database_url = self.fresh_database("postgresql")
        harness.flush_redis(self.args.broker_url)
        self.carrier.reset()
        values = self.worker_values(database_url, self.args.concurrency, "cancel247-bench-latency")
        settings = load_settings(**values)
        worker = WorkerProcess(settings_env(values), self.folder / "worker-latency.log")
        probe = harness.probe_engine(database_url)
        try:
            worker.wait_ready(timeout_seconds=120)
            sampler = TreeSampler(worker.process.pid)
            producer = Producer(settings)
            producer.enqueue("BENCHWARMUP", source="bench")
            codes = self.codes(sizes.latency_requests)
            interval = 1 / sizes.latency_rate
            next_send = time.monotonic()
            for code in codes:
                time.sleep(max(0.0, next_send - time.monotonic()))
                producer.enqueue(code, source="bench")
                next_send += interval
            self.wait_done(
                lambda: harness.scalar(probe, f"SELECT count(*) FROM cancel_requests WHERE status IN ({TERMINAL_SQL})"),
                len(codes) + 1,
                timeout_seconds=60,
                sampler=sampler,
                process=worker.process,
            )
        finally:
            worker.stop()
        with probe.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT r.order_code, r.created_at, a.started_at FROM cancel_requests r "
                    "JOIN cancel_attempts a ON a.request_id = r.id AND a.number = 1 "
                    "WHERE r.order_code <> 'BENCHWARMUP'"
                )
            ).all()
        probe.dispose()
        first_call = {}
        for call in self.carrier.cancel_calls():
            first_call.setdefault(call["order_code"], datetime.fromisoformat(call["time"]))
        audit_ms = [(r.started_at - r.created_at).total_seconds() * 1000 for r in rows]
        carrier_ms = [(first_call[r.order_code] - r.created_at).total_seconds() * 1000 for r in rows]
        if len(rows) != len(codes):
            raise BenchError(f"{len(rows)} of {len(codes)} requests have a first attempt")
        return {
            "requests": len(codes),
            "send_rate": sizes.latency_rate,
            "audit_p50_ms": harness.percentile(audit_ms, 0.5),
            "audit_p99_ms": harness.percentile(audit_ms, 0.99),
            "carrier_p50_ms": harness.percentile(carrier_ms, 0.5),
            "carrier_p99_ms": harness.percentile(carrier_ms, 0.99),
            "carrier_max_ms": max(carrier_ms),
        }

    def scaling(self, concurrency: int) -> dict[str, Any]:
        sizes = self.sizes
        ideal = concurrency / (SCALING_LATENCY_MS / 1000)
        total = int(min(sizes.scaling_max, max(sizes.scaling_min, ideal * sizes.scaling_seconds)))
        return self.cancel247("postgresql", concurrency=concurrency, total=total, latency_ms=SCALING_LATENCY_MS)

    # Run -------------------------------------------------------------------

    def run(self) -> int:
        console = self.console
        info = harness.machine_info()
        info["load_average_before"] = [round(x, 2) for x in os.getloadavg()]
        info["postgresql"] = harness.postgres_version(self.args.postgres_admin_url)
        info["redis"] = harness.redis_version(self.args.broker_url)
        console.print(
            f"cancel247 pipeline benchmark ({'quick' if self.args.quick else 'full'}) on {info['cpu_model']}, "
            f"{info['logical_cpus']} CPUs; load average {info['load_average_before']}; work folder {self.folder}"
        )
        started = time.monotonic()
        self.sandbox = SandboxProcess(self.folder / "sandbox.log")
        try:
            self.run_scenario("sandbox_capacity", self.sandbox_capacity)
            self.run_scenario("limit", self.limit)
            concurrency = self.args.concurrency
            total = self.sizes.end_to_end
            self.run_scenario("cancel247_postgresql", lambda: self.cancel247("postgresql", concurrency=concurrency, total=total))
            self.run_scenario("cancel247_sqlite", lambda: self.cancel247("sqlite", concurrency=concurrency, total=total))
            self.run_scenario("alternative", self.alternative)
            self.run_scenario("enqueue_postgresql", lambda: self.enqueue("postgresql"))
            self.run_scenario("enqueue_sqlite", lambda: self.enqueue("sqlite"))
            self.run_scenario("latency", self.latency)
            for level in SCALING_CONCURRENCIES:
                self.run_scenario(f"scaling_{level}", lambda level=level: self.scaling(level))
        finally:
            self.carrier.stop()
            dispose_engines()
        info["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        report = build_report(self, info, time.monotonic() - started)
        print_report(console, report)
        write_outputs(self.args.output_dir, report)
        if self.errors or self.args.keep:
            console.print(f"logs kept in {self.folder}")
        else:
            shutil.rmtree(self.folder, ignore_errors=True)
        return 1 if self.errors else 0


def _create_result_tables(engine: Any) -> None:
    """Create Celery's result tables up front, so the poll never races the worker's first write."""
    from celery.backends.database.models import ResultModelBase

    ResultModelBase.metadata.create_all(engine)


def summarize(figures: dict[str, Any]) -> str:
    parts = []
    for key, value in figures.items():
        if isinstance(value, float):
            parts.append(f"{key}={value:,.1f}")
        elif isinstance(value, int | bool | str):
            parts.append(f"{key}={value}")
    return ", ".join(parts)


# Report ----------------------------------------------------------------------


def _get(results: dict[str, Any], scenario: str, key: str) -> float | None:
    value = results.get(scenario, {}).get(key)
    return float(value) if value is not None else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def build_report(bench: Bench, info: dict[str, Any], elapsed: float) -> dict[str, Any]:
    results = bench.results
    limit = _get(results, "limit", "rate")
    ratios = {
        "cancel247_postgresql_to_limit": _ratio(_get(results, "cancel247_postgresql", "rate"), limit),
        "cancel247_sqlite_to_limit": _ratio(_get(results, "cancel247_sqlite", "rate"), limit),
        "cancel247_postgresql_to_alternative": _ratio(
            _get(results, "cancel247_postgresql", "rate"), _get(results, "alternative", "rate")
        ),
        "cancel247_sqlite_to_alternative": _ratio(
            _get(results, "cancel247_sqlite", "rate"), _get(results, "alternative", "rate")
        ),
        "limit_to_sandbox_capacity": _ratio(limit, _get(results, "sandbox_capacity", "rate")),
    }
    for level in SCALING_CONCURRENCIES:
        ratios[f"scaling_{level}_to_ideal"] = _get(results, f"scaling_{level}", "ratio_to_ideal")
    measured = {
        "limit_ratio": ratios["cancel247_postgresql_to_limit"],
        "scaling_32": ratios["scaling_32_to_ideal"],
        "alternative_ratio": ratios["cancel247_postgresql_to_alternative"],
        "bulk_enqueue": _get(results, "enqueue_postgresql", "bulk_rate"),
        "rss_64": _get(results, "scaling_64", "worker_peak_rss_mb"),
    }
    targets = []
    for key, target in TARGETS.items():
        value = measured[key]
        if value is None:
            verdict = "not measured"
        elif target.higher_is_better:
            verdict = "pass" if value >= target.threshold else "miss"
        else:
            verdict = "pass" if value <= target.threshold else "miss"
        targets.append({**asdict(target), "key": key, "measured": value, "verdict": verdict})
    command = "make bench" if not bench.args.quick else "python bench/pipeline.py --quick"
    return {
        "schema": 1,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": bench.args.quick,
        "command": command,
        "argv": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "elapsed_seconds": round(elapsed, 1),
        "machine": info,
        "settings": {
            "concurrency": bench.args.concurrency,
            "pool": "threads",
            "scaling_latency_ms": SCALING_LATENCY_MS,
            "scaling_concurrencies": list(SCALING_CONCURRENCIES),
            "broker": "Redis " + info.get("redis", "?") + " on 127.0.0.1 (TCP)",
            "postgresql": "PostgreSQL " + info.get("postgresql", "?") + " on 127.0.0.1 (TCP)",
            "worker_loglevel": "INFO",
            "sizes": asdict(bench.sizes),
        },
        "results": results,
        "errors": bench.errors,
        "ratios": ratios,
        "targets": targets,
    }


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def figure_rows(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Return (scenario, N, figure, notes) rows shared by the console table and RESULTS.md."""
    r = report["results"]
    rows: list[tuple[str, str, str, str]] = []

    def add(key: str, label: str, n: Callable[[dict[str, Any]], Any], figure: Callable[[dict[str, Any]], str],
            notes: Callable[[dict[str, Any]], str]) -> None:
        if key in r:
            rows.append((label, _fmt(n(r[key])), figure(r[key]), notes(r[key])))
        elif key in report["errors"]:
            rows.append((label, "-", "failed", report["errors"][key][:120]))

    add("sandbox_capacity", "sandbox capacity", lambda x: x["calls"], lambda x: f"{x['rate']:,.0f} calls/s",
        lambda x: f"{x['client_processes']} client processes, {x['client_threads']} threads; sandbox CPU {x['sandbox_cpu_percent']:.0f}% of one core")
    add("limit", "limit: bare requests loop", lambda x: x["calls"], lambda x: f"{x['rate']:,.0f} calls/s",
        lambda x: f"{x['threads']} threads, one pool; sandbox CPU {x['sandbox_cpu_percent']:.0f}%")
    for key, label in (("cancel247_postgresql", "cancel247, PostgreSQL"), ("cancel247_sqlite", "cancel247, SQLite"), ("alternative", "alternative: plain Celery")):
        add(key, label, lambda x: x["requests"], lambda x: f"{x['rate']:,.0f} requests/s",
            lambda x: f"worker CPU {x['worker_cpu_ms_per_request']:.2f} ms/request, peak RSS {x['worker_peak_rss_mb']:.0f} MB, sandbox CPU {x['sandbox_cpu_percent']:.0f}%"
            + (f"; {x['attempt_rows']} attempt rows = {x['carrier_calls']} carrier calls" if "attempt_rows" in x else ""))
    for backend in ("postgresql", "sqlite"):
        key = f"enqueue_{backend}"
        add(key, f"enqueue one by one, {backend}", lambda x: x["single_requests"], lambda x: f"{x['single_rate']:,.0f} requests/s", lambda x: "Producer.enqueue per request")
        add(key, f"enqueue bulk, {backend}", lambda x: x["bulk_requests"], lambda x: f"{x['bulk_rate']:,.0f} requests/s", lambda x: "Producer.enqueue_many")
    add("latency", "latency enqueue to first call", lambda x: x["requests"],
        lambda x: f"p50 {x['carrier_p50_ms']:.1f} ms, p99 {x['carrier_p99_ms']:.1f} ms",
        lambda x: f"at the sandbox; audit attempt start p50 {x['audit_p50_ms']:.1f} ms, p99 {x['audit_p99_ms']:.1f} ms; {x['send_rate']:g} requests/s")
    for level in SCALING_CONCURRENCIES:
        add(f"scaling_{level}", f"scaling, concurrency {level}", lambda x: x["requests"],
            lambda x: f"{x['rate']:,.0f} of {x['ideal_rate']:,.0f} requests/s",
            lambda x: f"{x['ratio_to_ideal']:.2f} of ideal; worker CPU {x['worker_cpu_ms_per_request']:.2f} ms/request, peak RSS {x['worker_peak_rss_mb']:.0f} MB")
    return rows


def ratio_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    labels = {
        "cancel247_postgresql_to_limit": "cancel247 (PostgreSQL) / limit",
        "cancel247_sqlite_to_limit": "cancel247 (SQLite) / limit",
        "cancel247_postgresql_to_alternative": "cancel247 (PostgreSQL) / alternative",
        "cancel247_sqlite_to_alternative": "cancel247 (SQLite) / alternative",
        "limit_to_sandbox_capacity": "limit / sandbox capacity",
    }
    for level in SCALING_CONCURRENCIES:
        labels[f"scaling_{level}_to_ideal"] = f"measured / ideal, concurrency {level}"
    return [(label, _fmt(report["ratios"][key], 2)) for key, label in labels.items()]


def target_rows(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    rows = []
    for target in report["targets"]:
        sign = ">=" if target["higher_is_better"] else "<="
        digits = 2 if target["unit"] == "ratio" else 0
        rows.append((target["name"], f"{sign} {target['threshold']:,g} {target['unit']}",
                     _fmt(target["measured"], digits), target["verdict"]))
    return rows


def print_report(console: Console, report: dict[str, Any]) -> None:
    figures = Table(title="figures")
    for column in ("scenario", "N", "result", "notes"):
        figures.add_column(column)
    for row in figure_rows(report):
        figures.add_row(*row)
    console.print(figures)

    ratios = Table(title="ratios")
    ratios.add_column("ratio")
    ratios.add_column("value", justify="right")
    for row in ratio_rows(report):
        ratios.add_row(*row)
    console.print(ratios)

    targets = Table(title="targets")
    for column in ("target", "threshold", "measured", "verdict"):
        targets.add_column(column)
    for name, threshold, measured, verdict in target_rows(report):
        style = {"pass": "green", "miss": "red"}.get(verdict, "yellow")
        targets.add_row(name, threshold, measured, f"[{style}]{verdict}[/{style}]")
    console.print(targets)
    if report["quick"]:
        console.print("[yellow]--quick: tiny N, for checking the script only; the figures mean little[/yellow]")


def _md_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    settings = report["settings"]
    versions = ", ".join(f"{name} {version}" for name, version in machine["packages"].items())
    sizes = settings["sizes"]
    parts = [
        "## Pipeline throughput, latency and memory",
        "",
        f"Measured by `bench/pipeline.py` on {report['generated_at']}"
        + (" with `--quick` (tiny N: these figures only show that the script works)" if report["quick"] else "")
        + f"; the run took {report['elapsed_seconds']:.0f} s. Reproduce with `{report['command']}`"
        " (needs Redis on 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432).",
        "",
        f"- Machine: {machine['cpu_model']}, {machine['logical_cpus']} logical CPUs, {machine['ram_gib']} GiB RAM, "
        f"{machine['os']}. Load average before/after: {machine['load_average_before']} / {machine['load_average_after']}."
        " Every process (sandbox, workers, Redis, PostgreSQL, this script) shares these CPUs.",
        f"- Software: Python {machine['python']}, {versions}; {settings['broker']}; {settings['postgresql']}; SQLite in a temporary folder.",
        f"- Settings: worker pool `{settings['pool']}`, concurrency {settings['concurrency']} unless stated, "
        f"log level {settings['worker_loglevel']}, carrier login by username and password (once per process), "
        f"no faults; scaling runs add {settings['scaling_latency_ms']:g} ms to every CancelOrder reply.",
        f"- N: sandbox capacity {sizes['capacity_seconds']:g} s; limit {sizes['limit_calls']} calls; end to end "
        f"{sizes['end_to_end']} requests per backend; alternative {sizes['alternative']}; enqueue {sizes['enqueue_single']} "
        f"one by one and {sizes['enqueue_bulk']} in bulk; latency {sizes['latency_requests']} requests at "
        f"{sizes['latency_rate']:g}/s; scaling about {sizes['scaling_seconds']:g} s of ideal work each, "
        f"{sizes['scaling_min']} to {sizes['scaling_max']} requests.",
        "",
        _md_table(("scenario", "N", "result", "notes"), figure_rows(report)),
        "",
        _md_table(("ratio", "value"), ratio_rows(report)),
        "",
        _md_table(("target", "threshold", "measured", "verdict"), target_rows(report)),
        "",
        "How each figure is measured:",
        "",
        "- Throughput (end to end, alternative, scaling) is N divided by the time from the first CancelOrder call"
        " the sandbox logged to the poll (every 0.1 s) that found all N requests final. The worker is started"
        " and ready first; the N requests are then enqueued in bulk while it works.",
        "- Limit and sandbox capacity are calls divided by the wall time of the client loop. The sandbox runs"
        " in its own process; its CPU share says whether it was saturated (one Python process uses at most"
        " about 100% of one core).",
        "- Worker CPU per request is the CPU time of the worker process and its children over the run,"
        " divided by N; peak RSS is the largest sum of their resident sets, sampled every 0.1 s.",
        "- The alternative stores each result through Celery's SQLAlchemy backend, which in a threads-pool"
        " worker creates a new engine without a pool for every result (Celery 5.7,"
        " `celery/backends/database/session.py`), so it opens a PostgreSQL connection per task.",
        "- Latency is the sandbox's receive time of the first CancelOrder call minus the request's `created_at`"
        " (set by the producer just before its audit insert and publish); the attempt row's `started_at` gives"
        " the second pair of figures.",
    ]
    if report["errors"]:
        parts += ["", "Scenarios that failed in this run:", ""]
        parts += [f"- {name}: {error}" for name, error in report["errors"].items()]
    return "\n".join(parts)


def write_outputs(folder: Path, report: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    harness.replace_section(folder / "RESULTS.md", SECTION, markdown(report))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Tiny N so the whole run takes well under a minute; for checking the script.")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="Worker threads and limit-loop threads (default: %(default)s, the worker's default).")
    parser.add_argument("--broker-url", default=DEFAULT_BROKER_URL, help="Redis database for cancel247's queues; it is flushed (default: %(default)s).")
    parser.add_argument("--alt-broker-url", default=DEFAULT_ALT_BROKER_URL, help="Redis database for the alternative's queue; it is flushed (default: %(default)s).")
    parser.add_argument("--postgres-admin-url", default=DEFAULT_POSTGRES_ADMIN_URL, help="PostgreSQL URL used to drop and create the benchmark databases (default: %(default)s).")
    parser.add_argument("--database", default=DEFAULT_DATABASE, help="PostgreSQL database for the audit store; dropped and recreated (default: %(default)s).")
    parser.add_argument("--alt-database", default=DEFAULT_ALT_DATABASE, help="PostgreSQL database for the alternative's results; dropped and recreated (default: %(default)s).")
    parser.add_argument("--output-dir", type=Path, default=harness.BENCH_DIR, help="Folder for results.json and RESULTS.md (default: bench/).")
    parser.add_argument("--keep", action="store_true", help="Keep the work folder with the worker and sandbox logs.")
    parser.add_argument("--verbose", action="store_true", help="Print the traceback of a failed scenario.")
    args = parser.parse_args(argv)
    if not 1 <= args.concurrency <= 512:
        parser.error(f"--concurrency {args.concurrency} must be between 1 and 512")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    try:
        return Bench(args, console).run()
    except BenchError as exc:
        console.print(f"[red]error: {exc}[/red]")
        return 2


if __name__ == "__main__":
    sys.exit(main())
