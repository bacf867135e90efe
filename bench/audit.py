"""Measure the audit store's read side at scale: `make bench-audit` or `python bench/audit.py`.

Fills a fresh audit store on PostgreSQL and on SQLite with a year of
synthetic history (by default 800,000 requests and about 1,070,000
attempts), then times what auditors run:

- `history` of one order: the library call over random orders (p50, p99),
  and the whole `cancel247 history` command once, Python start included;
- `stats` for one month;
- `export` of one month (attempt rows to CSV) and of the whole year, each in
  its own process, with that process's peak RSS. Equal peaks for a month
  and for twelve show that memory does not grow with the rows.

It prints the figures and rewrites its own section of RESULTS.md (between
the audit markers), leaving the rest of the page alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import psycopg
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy import insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from cancel247.audit import migrate
from cancel247.audit.db import get_engine
from cancel247.audit.export import Period
from cancel247.audit.history import order_history
from cancel247.audit.models import Attempt, CancelRequest
from cancel247.audit.stats import compute_stats

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_PAGE = BENCH_DIR / "RESULTS.md"
START, END = "<!-- audit:start -->", "<!-- audit:end -->"
POSTGRES_ADMIN_URL = os.environ.get("CANCEL247_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
POSTGRES_DATABASE = "cancel247_bench_audit"
YEAR_START = datetime(2026, 1, 1, tzinfo=UTC)
MONTH = (datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC))
HISTORY_LOOKUPS = 300

CODE6 = "Có lỗi xảy ra trong quá trình xử lý."
CODE14 = "Trạng thái không hợp lệ để xóa."
CODE13 = "Không tìm thấy đơn hàng."
console = Console()


@dataclass
class BackendResult:
    backend: str
    requests: int
    attempts: int
    fill_seconds: float
    history_ms_p50: float
    history_ms_p99: float
    history_cli_seconds: float
    stats_month_seconds: float
    export_month_rows: int
    export_month_seconds: float
    export_month_rss_mb: float
    export_year_rows: int
    export_year_seconds: float
    export_year_rss_mb: float
    notes: list[str] = field(default_factory=list)


def synthetic_rows(requests: int, seed: int) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Yield (request row, attempt rows) spread evenly over a year, with a realistic mix of outcomes."""
    rng = random.Random(seed)
    span = 365 * 86400
    for i in range(requests):
        created = YEAR_START + timedelta(seconds=span * i / requests + rng.random())
        request_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        repeated = i > 0 and rng.random() < 0.02
        roll = rng.random()
        if repeated:
            # A producer sent the order again: the worker records a duplicate and calls nothing.
            outcomes = []
        elif roll < 0.80:
            outcomes = ["succeeded"]
        elif roll < 0.90:
            outcomes = ["transient"] * rng.randint(1, 3) + ["succeeded"]
        elif roll < 0.95:
            outcomes = ["permanent"]
        elif roll < 0.98:
            outcomes = ["transient"] * 6
        else:
            outcomes = ["ambiguous", "permanent"]
        attempts = []
        moment = created + timedelta(milliseconds=rng.uniform(5, 50))
        for number, outcome in enumerate(outcomes, start=1):
            duration = rng.lognormvariate(3.5, 0.6)
            code, message = {
                "succeeded": ("0", None),
                "transient": ("6", CODE6),
                "permanent": ("14", CODE14) if rng.random() < 0.7 else ("13", CODE13),
                "ambiguous": (None, None),
            }[outcome]
            attempts.append(
                {
                    "request_id": request_id,
                    "run": 1,
                    "number": number,
                    "outcome": outcome,
                    "started_at": moment,
                    "finished_at": moment + timedelta(milliseconds=duration),
                    "duration_ms": round(duration, 3),
                    "http_status": None if outcome == "ambiguous" else 200,
                    "error_code": code,
                    "message": message,
                    "body_excerpt": None,
                    "detail": "read timeout after 15 s: the carrier may have acted" if outcome == "ambiguous" else None,
                    "wait_seconds": round(rng.uniform(0.5, 4), 3) if number < len(outcomes) else None,
                    "worker": f"worker-{rng.randint(1, 4)}@host",
                }
            )
            moment += timedelta(milliseconds=duration + rng.uniform(500, 4000))
        if repeated:
            status = "duplicate"
        elif outcomes[0] == "ambiguous":
            status = "uncertain"
        else:
            status = {"succeeded": "succeeded", "transient": "failed", "permanent": "rejected"}[outcomes[-1]]
        request = {
            "id": request_id,
            # About one order in fifty gets a second request, as producers retry.
            "order_code": f"BEN{i - 1 if repeated else i:09d}",
            "status": status,
            "reason": "khách hủy đơn",
            "source": "shop-a",
            "run": 1,
            "created_at": created,
            "started_at": created + timedelta(milliseconds=3),
            "finished_at": moment,
            "updated_at": moment,
            "error_code": attempts[-1]["error_code"] if attempts else None,
            "detail": None,
            "duplicate_of": None,
        }
        yield request, attempts


def fill(url: str, requests: int, seed: int) -> tuple[int, float]:
    """Insert the synthetic year into ``url``; return the attempt count and the seconds it took."""
    engine = get_engine(url)
    started = time.perf_counter()
    attempts_total = 0
    request_cols = [c.name for c in CancelRequest.__table__.columns]
    attempt_cols = [c.name for c in Attempt.__table__.columns if c.name != "id"]
    batch_requests: list[dict[str, Any]] = []
    batch_attempts: list[dict[str, Any]] = []
    postgres = engine.dialect.name == "postgresql"

    def flush() -> None:
        if postgres:
            with psycopg.connect(_libpq(url)) as connection, connection.cursor() as cursor:
                with cursor.copy(f"COPY cancel_requests ({', '.join(request_cols)}) FROM STDIN") as copy:
                    for row in batch_requests:
                        copy.write_row([row[c] for c in request_cols])
                with cursor.copy(f"COPY cancel_attempts ({', '.join(attempt_cols)}) FROM STDIN") as copy:
                    for row in batch_attempts:
                        copy.write_row([row[c] for c in attempt_cols])
        else:
            with engine.begin() as connection:
                connection.execute(insert(CancelRequest.__table__), batch_requests)
                connection.execute(insert(Attempt.__table__), batch_attempts)
        batch_requests.clear()
        batch_attempts.clear()

    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task(f"filling {engine.dialect.name}", total=requests)
        for request, attempts in synthetic_rows(requests, seed):
            batch_requests.append(request)
            batch_attempts.extend(attempts)
            attempts_total += len(attempts)
            if len(batch_requests) >= 20_000:
                flush()
                progress.update(bar, completed=progress.tasks[0].completed + 20_000)
        if batch_requests:
            flush()
    if postgres:
        with psycopg.connect(_libpq(url), autocommit=True) as connection:
            connection.execute("VACUUM ANALYZE")
    else:
        with engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE")
    return attempts_total, time.perf_counter() - started


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _run_measured(args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run a command; return its wall seconds, its peak RSS in MB, and its stderr.

    RSS is sampled every 20 ms with psutil. The kernel's ``ru_maxrss`` is no
    use here: a child's high-water mark starts from this process's size at
    the fork and survives the exec.
    """
    started = time.perf_counter()
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watched = psutil.Process(process.pid)
    peak = 0
    while process.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    stderr = process.stderr.read() if process.stderr else ""
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {process.returncode}: {stderr.strip()[-500:]}")
    return elapsed, peak / 2**20, stderr


def measure(backend: str, url: str, requests: int, seed: int, workdir: Path) -> BackendResult:
    migrate.upgrade(url)
    attempts, fill_seconds = fill(url, requests, seed)
    console.print(f"{backend}: {requests:,} requests and {attempts:,} attempts in {fill_seconds:.1f} s")
    engine = get_engine(url)
    rng = random.Random(seed + 1)

    with Session(engine) as session:
        stored = list(session.execute(select(CancelRequest.order_code)).scalars())
    codes = rng.sample(stored, min(HISTORY_LOOKUPS, len(stored)))
    del stored
    timings = []
    for code in codes:
        with Session(engine) as session:
            started = time.perf_counter()
            records = order_history(session, code)
            timings.append((time.perf_counter() - started) * 1000)
        if not records:
            raise SystemExit(f"{backend}: no history for {code}: the fill went wrong")
    timings.sort()

    env = os.environ | {"CANCEL247_DATABASE_URL": url, "CANCEL247_TIMEZONE": "UTC"}
    cli = [sys.executable, "-m", "cancel247"]
    history_cli, _, _ = _run_measured([*cli, "history", codes[0]], env)

    with Session(engine) as session:
        started = time.perf_counter()
        month_stats = compute_stats(session, Period(*MONTH))
        stats_seconds = time.perf_counter() - started

    month_file = workdir / f"{backend}-month.csv"
    month_args = ["--since", MONTH[0].isoformat(), "--until", MONTH[1].isoformat()]
    month_seconds, month_rss, _ = _run_measured([*cli, "export", *month_args, "-o", str(month_file), "--force"], env)
    month_rows = _data_rows(month_file)
    year_file = workdir / f"{backend}-year.csv"
    year_seconds, year_rss, _ = _run_measured([*cli, "export", "-o", str(year_file), "--force"], env)
    year_rows = _data_rows(year_file)
    if year_rows != attempts:
        raise SystemExit(f"{backend}: the year export has {year_rows} rows, the store {attempts} attempts")
    notes = [f"month stats: {month_stats.requests:,} requests, {month_stats.attempts:,} attempts"]
    month_file.unlink()
    year_file.unlink()
    engine.dispose()
    return BackendResult(
        backend, requests, attempts, round(fill_seconds, 1),
        round(statistics.median(timings), 2), round(timings[int(len(timings) * 0.99) - 1], 2),
        round(history_cli, 2), round(stats_seconds, 2),
        month_rows, round(month_seconds, 1), round(month_rss, 1),
        year_rows, round(year_seconds, 1), round(year_rss, 1), notes,
    )


def _data_rows(path: Path) -> int:
    import csv

    with path.open(encoding="utf-8", newline="") as handle:
        return sum(1 for _ in csv.reader(handle)) - 1


def _postgres_url() -> str:
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{POSTGRES_DATABASE}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{POSTGRES_DATABASE}"')
    url = make_url(POSTGRES_ADMIN_URL).set(drivername="postgresql+psycopg", database=POSTGRES_DATABASE)
    return url.render_as_string(hide_password=False)


def render(results: list[BackendResult], requests: int, command: str) -> str:
    lines = [
        START,
        "## Audit store at scale",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node() or 'this machine'} "
        f"({os.cpu_count()} cores, Python {platform.python_version()}). Command: `{command}`.",
        "",
        f"Each store was filled with a synthetic year: {requests:,} requests spread evenly over 2026, "
        "80% succeeding at the first call, the rest retried, rejected, failed or uncertain. "
        "History is the library call over "
        f"{HISTORY_LOOKUPS} random orders; the `history` command adds Python's start. Stats and export cover "
        "June 2026. Each export ran in its own process; RSS is that process's peak.",
        "",
        "| | " + " | ".join(r.backend for r in results) + " |",
        "|---|" + "---:|" * len(results),
    ]
    rows = [
        ("requests / attempts", lambda r: f"{r.requests:,} / {r.attempts:,}"),
        ("fill, s", lambda r: f"{r.fill_seconds}"),
        ("history of one order, p50 / p99, ms", lambda r: f"{r.history_ms_p50} / {r.history_ms_p99}"),
        ("`cancel247 history` command, s", lambda r: f"{r.history_cli_seconds}"),
        ("stats for a month, s", lambda r: f"{r.stats_month_seconds}"),
        ("export a month (CSV)", lambda r: f"{r.export_month_rows:,} rows in {r.export_month_seconds} s ({r.export_month_rows / max(r.export_month_seconds, 1e-9):,.0f}/s)"),
        ("export a month, peak RSS, MB", lambda r: f"{r.export_month_rss_mb}"),
        ("export the year (CSV)", lambda r: f"{r.export_year_rows:,} rows in {r.export_year_seconds} s ({r.export_year_rows / max(r.export_year_seconds, 1e-9):,.0f}/s)"),
        ("export the year, peak RSS, MB", lambda r: f"{r.export_year_rss_mb}"),
    ]
    for label, cell in rows:
        lines.append(f"| {label} | " + " | ".join(cell(r) for r in results) + " |")
    lines += ["", END]
    return "\n".join(lines)


def write_page(section: str) -> None:
    page = RESULTS_PAGE.read_text(encoding="utf-8") if RESULTS_PAGE.exists() else "# Benchmark results\n"
    if START in page and END in page:
        head, rest = page.split(START, 1)
        _, tail = rest.split(END, 1)
        page = head + section + tail
    else:
        page = page.rstrip("\n") + "\n\n" + section + "\n"
    RESULTS_PAGE.write_text(page, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=800_000, help="Requests to fill (about 1.34 attempts each).")
    parser.add_argument("--backend", choices=["postgresql", "sqlite", "both"], default="both")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--no-write", action="store_true", help="Print only; leave RESULTS.md alone.")
    options = parser.parse_args()

    results = []
    with tempfile.TemporaryDirectory(prefix="cancel247-bench-audit-") as tmp:
        workdir = Path(tmp)
        if options.backend in ("postgresql", "both"):
            results.append(measure("PostgreSQL", _postgres_url(), options.requests, options.seed, workdir))
        if options.backend in ("sqlite", "both"):
            results.append(measure("SQLite", f"sqlite:///{workdir / 'audit.sqlite3'}", options.requests, options.seed, workdir))

    table = Table(title="audit store at scale")
    table.add_column("figure")
    for result in results:
        table.add_column(result.backend, justify="right")
    for name in BackendResult.__dataclass_fields__:
        if name in ("backend", "notes"):
            continue
        table.add_row(name, *(str(getattr(r, name)) for r in results))
    console.print(table)
    for result in results:
        for note in result.notes:
            console.print(f"{result.backend}: {note}")

    command = "make bench-audit" if options.requests == 800_000 and options.backend == "both" else " ".join(["python bench/audit.py", *sys.argv[1:]])
    if not options.no_write:
        write_page(render(results, options.requests, command))
        (BENCH_DIR / "audit-results.json").write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n", encoding="utf-8")
        console.print(f"wrote {RESULTS_PAGE}")


if __name__ == "__main__":
    main()
