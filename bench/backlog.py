"""A backlog drained: `make bench-backlog` or `python bench/backlog.py [--requests N]`.

Enqueues N requests (50,000 by default) while no worker runs, then starts
one worker and waits until every request is final. The sandbox returns
code 6 for a share of calls, so retries happen too. Measures the drain rate
and the worker's resident memory every second, and checks the two numbers
that must stay at zero: requests without a final status, and carrier calls
without an attempt row. Rewrites its own section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import BenchError, SandboxProcess, TreeSampler  # noqa: E402

from cancel247.audit import migrate  # noqa: E402
from cancel247.config import load_settings  # noqa: E402
from cancel247.local import WorkerProcess, settings_env  # noqa: E402
from cancel247.sandbox import DEFAULT_PASSWORD, DEFAULT_USERNAME  # noqa: E402
from cancel247.tasks.producer import Producer  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
DATABASE = "cancel247_bench_backlog"
console = Console()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--code6-rate", type=float, default=0.05, help="Share of calls the sandbox returns code 6 for.")
    parser.add_argument("--broker-url", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--postgres-admin-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--timeout", type=float, default=3600, help="Give up after this many seconds of draining.")
    parser.add_argument("--no-write", action="store_true", help="Print only; leave RESULTS.md alone.")
    options = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="cancel247-bench-backlog-"))
    carrier = SandboxProcess(folder / "sandbox.log")
    try:
        figures = run(options, folder, carrier)
    except BenchError as exc:
        console.print(f"[red]backlog benchmark failed:[/red] {exc}")
        return 1
    finally:
        carrier.stop()
    for key, value in figures.items():
        console.print(f"{key:>32}: {value}")
    if not options.no_write:
        harness.replace_section(BENCH_DIR / "RESULTS.md", "backlog", render(figures, options))
        console.print(f"wrote {BENCH_DIR / 'RESULTS.md'}")
    return 0 if figures["not_final"] == 0 and figures["calls_without_row"] == 0 else 1


def run(options: argparse.Namespace, folder: Path, carrier: SandboxProcess) -> dict[str, Any]:
    harness.recreate_postgres_database(options.postgres_admin_url, DATABASE)
    database_url = harness.postgres_url(options.postgres_admin_url, DATABASE)
    migrate.upgrade(database_url)
    harness.flush_redis(options.broker_url)
    carrier.reset()
    carrier.admin.post(carrier.url + "/_sandbox/config", json={"code6_rate": options.code6_rate}, timeout=30).raise_for_status()

    queue = "cancel247-bench-backlog"
    values = {
        "api_url": carrier.url,
        "username": DEFAULT_USERNAME,
        "password": DEFAULT_PASSWORD,
        "broker_url": options.broker_url,
        "database_url": database_url,
        "queue": queue,
        "concurrency": options.concurrency,
        "retry_initial_seconds": 0.05,
        "retry_min_seconds": 0.01,
        "retry_max_seconds": 0.5,
    }
    settings = load_settings(**values)
    codes = [f"BLG{n:08d}" for n in range(options.requests)]
    started = time.monotonic()
    Producer(settings).enqueue_many(codes, source="bench-backlog")
    enqueue_seconds = time.monotonic() - started
    queued = redis.Redis.from_url(options.broker_url).llen(queue)
    console.print(f"enqueued {options.requests:,} in {enqueue_seconds:.1f} s; {queued:,} messages waiting")

    probe = harness.probe_engine(database_url)
    worker = WorkerProcess(settings_env(values), folder / "worker.log")
    rss_samples: list[tuple[float, int]] = []
    try:
        worker.wait_ready(timeout_seconds=120)
        sampler = TreeSampler(worker.process.pid)
        drain_started = time.monotonic()
        final = 0
        while final < options.requests:
            if worker.process.poll() is not None:
                raise BenchError(f"the worker exited with {worker.process.returncode}; see {folder / 'worker.log'}")
            if time.monotonic() - drain_started > options.timeout:
                break
            time.sleep(1)
            sampler.sample()
            rss_samples.append((time.monotonic() - drain_started, sampler.peak_rss))
            final = harness.scalar(probe, "SELECT count(*) FROM cancel_requests WHERE finished_at IS NOT NULL")
            console.print(f"  {final:>7,} final after {time.monotonic() - drain_started:6.0f} s, peak RSS {sampler.peak_rss / 2**20:.0f} MB", end="\r")
        drain_seconds = time.monotonic() - drain_started
        console.print()
    finally:
        worker.stop()

    with probe.connect() as connection:
        statuses = dict(connection.execute(text("SELECT status, count(*) FROM cancel_requests GROUP BY status")).all())
    attempts = harness.scalar(probe, "SELECT count(*) FROM cancel_attempts")
    calls = len(carrier.cancel_calls())
    # RSS when a tenth of the backlog was done, against the peak: flat memory keeps them close.
    early = next((rss for t, rss in rss_samples if t >= drain_seconds / 10), rss_samples[0][1] if rss_samples else 0)
    return {
        "requests": options.requests,
        "enqueue_seconds": round(enqueue_seconds, 1),
        "enqueue_per_second": round(options.requests / enqueue_seconds),
        "drain_seconds": round(drain_seconds, 1),
        "drain_per_second": round(options.requests / drain_seconds, 1),
        "statuses": statuses,
        "not_final": options.requests - sum(n for s, n in statuses.items() if s not in ("queued", "in_progress")),
        "attempt_rows": attempts,
        "carrier_calls": calls,
        "calls_without_row": calls - attempts,
        "worker_rss_mb_at_10_percent": round(early / 2**20, 1),
        "worker_rss_mb_peak": round(sampler.peak_rss / 2**20, 1),
        "concurrency": options.concurrency,
        "code6_rate": options.code6_rate,
    }


def render(figures: dict[str, Any], options: argparse.Namespace) -> str:
    machine = harness.machine_info()
    statuses = ", ".join(f"{s} {n:,}" for s, n in sorted(figures["statuses"].items()))
    return "\n".join(
        [
            "## Backlog",
            "",
            f"Measured {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC on {machine['cpu_model']}, "
            f"{machine['logical_cpus']} logical CPUs. Command: `python bench/backlog.py --requests {options.requests}`.",
            "",
            f"{figures['requests']:,} requests enqueued in bulk with no worker running, then one worker "
            f"(threads, concurrency {figures['concurrency']}) on PostgreSQL drained them; the sandbox answered "
            f"code 6 to {figures['code6_rate']:.0%} of calls.",
            "",
            "| figure | value |",
            "|---|---:|",
            f"| enqueue | {figures['enqueue_seconds']} s ({figures['enqueue_per_second']:,}/s) |",
            f"| drain | {figures['drain_seconds']} s ({figures['drain_per_second']}/s) |",
            f"| requests not final | {figures['not_final']} |",
            f"| carrier calls / attempt rows | {figures['carrier_calls']:,} / {figures['attempt_rows']:,} |",
            f"| calls without an attempt row | {figures['calls_without_row']} |",
            f"| worker RSS after 10% of the backlog / peak | {figures['worker_rss_mb_at_10_percent']} / {figures['worker_rss_mb_peak']} MB |",
            "",
            f"Final statuses: {statuses}.",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
