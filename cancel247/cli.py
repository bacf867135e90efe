"""The ``cancel247`` command."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cancel247 import __version__
from cancel247.config import ConfigError, Settings, get_settings
from cancel247.validation import InvalidOrderCode, validate_order_code

# Column names recognised as the order code in a CSV file, compared without case.
ORDER_CODE_COLUMNS = ("order_code", "ordercode", "order", "code", "ma_don_hang", "mã đơn hàng")
# Width of tables written to a pipe or file, in characters.
PIPE_WIDTH = 200
# Files with more codes than this show a progress bar while enqueueing.
PROGRESS_THRESHOLD = 500

stderr = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one line to stderr and exit."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def settings_or_exit(*, check_schema: bool = True) -> Settings:
    """Read the settings and, if ``check_schema``, check the audit store's migration level.

    Exits with one line on failure.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from cancel247.audit import migrate
    from cancel247.audit.db import get_engine

    try:
        settings = get_settings()
    except ConfigError as exc:
        fail(str(exc))
    if not check_schema:
        return settings
    url = make_url(settings.database_url.get_secret_value())
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:" and not Path(url.database).exists():
        # Connecting would create an empty file that then looks like a store.
        fail(f"no audit store at {url.database!r}: run `cancel247 db upgrade` to create it, or check CANCEL247_DATABASE_URL")
    engine = get_engine(settings.database_url.get_secret_value())
    try:
        migrate.check_schema(engine)
    except migrate.SchemaOutdated as exc:
        fail(str(exc))
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        fail(
            f"cannot open the audit store at {engine.url.render_as_string(hide_password=True)}: "
            f"{str(cause).splitlines()[0]}; check CANCEL247_DATABASE_URL"
        )
    return settings


def output_console(*, stderr: bool = False) -> Console:
    """Return a console for tables; off a terminal it is wide, so piped tables stay readable."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty() or "COLUMNS" in os.environ:
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=PIPE_WIDTH)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cancel247")
def cli() -> None:
    """Cancel 247Express shipments through Celery, with a SQL audit trail.

    Settings come from CANCEL247_* environment variables (see the README).
    """


# db ------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """Manage the audit store's schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Alembic revision to upgrade to.")
def db_upgrade(revision: str) -> None:
    """Apply the audit store's migrations to CANCEL247_DATABASE_URL."""
    from sqlalchemy.exc import SQLAlchemyError

    from cancel247.audit import migrate

    settings = settings_or_exit(check_schema=False)
    try:
        migrate.upgrade(settings.database_url.get_secret_value(), revision)
    except SQLAlchemyError as exc:
        fail(f"migration failed: {type(exc).__name__}: {str(exc.orig if hasattr(exc, 'orig') else exc).splitlines()[0]}")
    click.echo(f"audit store at revision {revision}")


@db.command("current")
def db_current() -> None:
    """Print the audit store's migration revision and the newest one shipped."""
    from cancel247.audit import migrate
    from cancel247.audit.db import get_engine

    settings = settings_or_exit(check_schema=False)
    engine = get_engine(settings.database_url.get_secret_value())
    click.echo(f"current: {migrate.current_revision(engine) or 'none'}")
    click.echo(f"head:    {migrate.head_revision()}")


# enqueue --------------------------------------------------------------------


def read_codes(path: Path, column: str | None) -> Iterator[tuple[int, str]]:
    """Yield (line number, order code) from a file of one code a line or a CSV."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        fail(f"file {str(path)!r} not found")
    except UnicodeDecodeError as exc:
        fail(f"file {str(path)!r} is not UTF-8 text (byte {exc.start}); save it as UTF-8")

    lines = text.splitlines()
    if not lines:
        return
    try:
        dialect: Any = csv.Sniffer().sniff(lines[0], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    first = next(csv.reader([lines[0]], dialect))
    header = [cell.strip().lower() for cell in first]
    wanted = column.strip().lower() if column else None
    if wanted is None and len(header) == 1 and header[0] in ORDER_CODE_COLUMNS:
        # A one-column CSV whose first line names the column: a header, not an order code.
        wanted = header[0]
    if wanted is None and len(header) > 1:
        wanted = next((name for name in ORDER_CODE_COLUMNS if name in header), None)
        if wanted is None:
            fail(
                f"{str(path)!r} looks like a CSV but has no order code column among "
                f"{', '.join(first)}; name it with --column"
            )
    if wanted is None:
        for number, line in enumerate(lines, start=1):
            if line.strip() and not line.lstrip().startswith("#"):
                yield number, line.strip()
        return
    if wanted not in header:
        fail(f"column {column!r} not found in {str(path)!r}; its columns are {', '.join(first)}")
    index = header.index(wanted)
    for number, row in enumerate(csv.reader(io.StringIO(text), dialect), start=1):
        if number == 1 or not any(cell.strip() for cell in row):
            continue
        yield number, (row[index].strip() if index < len(row) else "")


@cli.command()
@click.argument("codes", nargs=-1)
@click.option("--file", "file_path", type=click.Path(path_type=Path), help="File of order codes: one a line, or a CSV.")
@click.option("--column", help="CSV column holding the order code (default: order_code or similar).")
@click.option("--reason", help="Why these orders are cancelled; stored with each request.")
@click.option("--source", help="Which system asked; stored with each request.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {order_code, request_id}.")
def enqueue(
    codes: tuple[str, ...],
    file_path: Path | None,
    column: str | None,
    reason: str | None,
    source: str | None,
    as_json: bool,
) -> None:
    """Enqueue cancellations for CODES and/or the codes in --file; print the request ids.

    Every code is checked first: if any is invalid, each bad one is listed
    with its line and nothing is sent.
    """
    entries: list[tuple[str, str]] = [(f"argument {i}", code) for i, code in enumerate(codes, start=1)]
    if file_path is not None:
        entries.extend((f"{file_path}:{line}", code) for line, code in read_codes(file_path, column))
    if not entries:
        fail("no order codes: give them as arguments or with --file FILE")

    problems = []
    for where, code in entries:
        try:
            validate_order_code(code)
        except InvalidOrderCode as exc:
            problems.append(f"{where}: {exc}")
    if problems:
        for problem in problems[:50]:
            click.echo(f"error: {problem}", err=True)
        if len(problems) > 50:
            click.echo(f"error: ... and {len(problems) - 50} more", err=True)
        fail(f"{len(problems)} invalid order code(s); nothing was enqueued. Fix them and run again.")

    from cancel247.audit.store import AuditUnavailable
    from cancel247.tasks.producer import EnqueueError, Producer

    producer = Producer(settings_or_exit())
    order_codes = [code for _, code in entries]
    try:
        if len(order_codes) >= PROGRESS_THRESHOLD:
            with _progress() as progress:
                task = progress.add_task("enqueueing", total=len(order_codes))
                ids = producer.enqueue_many(
                    order_codes, reason=reason, source=source, on_progress=lambda n: progress.advance(task, n)
                )
        else:
            ids = producer.enqueue_many(order_codes, reason=reason, source=source)
    except (EnqueueError, AuditUnavailable) as exc:
        fail(str(exc), code=1)

    if as_json:
        click.echo(json.dumps([{"order_code": c, "request_id": i} for c, i in zip(order_codes, ids, strict=True)]))
    else:
        for code, request_id in zip(order_codes, ids, strict=True):
            click.echo(f"{request_id}\t{code}")
    stderr.print(f"enqueued {len(ids)} request(s) on queue {producer.settings.queue}")


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=stderr,
    )


# worker ---------------------------------------------------------------------


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option("--concurrency", "-c", type=click.IntRange(1, 512), help="Threads or processes (default CANCEL247_CONCURRENCY).")
@click.option("--pool", "-P", type=click.Choice(["threads", "prefork", "solo", "gevent", "eventlet"]), help="Celery pool (default CANCEL247_POOL).")
@click.option("--loglevel", "-l", default="INFO", show_default=True, help="DEBUG, INFO, WARNING or ERROR.")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(concurrency: int | None, pool: str | None, loglevel: str, celery_args: tuple[str, ...]) -> None:
    """Start a Celery worker on the cancel247 queue.

    Extra arguments are passed to `celery worker` unchanged.
    """
    settings = settings_or_exit(check_schema=False)
    try:
        settings.require_carrier()
        settings.check_visibility_timeout()
    except ConfigError as exc:
        fail(str(exc))

    from cancel247.worker import app

    argv = [
        "worker",
        "--queues", settings.queue,
        "--pool", pool or settings.pool,
        "--concurrency", str(concurrency or settings.concurrency),
        "--loglevel", loglevel,
        "--hostname", "cancel247@%h",
        *(["--task-events"] if settings.task_events else []),
        # Gossip and mingle exchange state between workers, which cancel247
        # does not use. In Celery 5.7 restarting gossip after a lost broker
        # connection logs a spurious AttributeError traceback.
        "--without-gossip",
        "--without-mingle",
        *celery_args,
    ]
    app.worker_main(argv)


# sandbox ---------------------------------------------------------------------


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8247, show_default=True, type=click.IntRange(0, 65535), help="Port (0 picks a free one).")
@click.option("--seed", default=0, show_default=True, help="Seed of the random faults.")
@click.option("--code6-rate", default=0.0, type=click.FloatRange(0, 1), help="Fraction of CancelOrder calls that return code 6 (0 to 1).")
@click.option("--http5xx-rate", default=0.0, type=click.FloatRange(0, 1), help="Fraction that return HTTP 502 with an HTML page.")
@click.option("--http429-rate", default=0.0, type=click.FloatRange(0, 1), help="Fraction that return HTTP 429.")
@click.option("--html-rate", default=0.0, type=click.FloatRange(0, 1), help="Fraction that return HTTP 200 with an HTML body.")
@click.option("--truncated-rate", default=0.0, type=click.FloatRange(0, 1), help="Fraction that return JSON cut off half-way.")
@click.option("--hang-rate", default=0.0, type=click.FloatRange(0, 1), help="Fraction that cancel the order, then stall before replying.")
@click.option("--hang-seconds", default=30.0, show_default=True, type=click.FloatRange(0), help="How long a stall lasts, in seconds.")
@click.option("--latency-ms", default=0.0, type=click.FloatRange(0), help="Delay added to every reply, in milliseconds.")
@click.option("--outage", is_flag=True, help="Answer code 6 to every cancel until switched off via /_sandbox/config.")
@click.option("--orders", "orders_file", type=click.Path(exists=True, path_type=Path), help='JSON file {"CODE": {"state": "shipped", "faults": ["code6"]}}.')
@click.option("--strict-orders", is_flag=True, help="Answer 13 for orders not in --orders instead of creating them.")
@click.option("--auth-failure", type=click.Choice(["401", "403", "code12"]), default="401", show_default=True, help="Response to a wrong token: HTTP 401, HTTP 403 or code 12.")
def sandbox(**options: Any) -> None:
    """Run the local carrier sandbox in the foreground (never the real carrier)."""
    from cancel247.sandbox import DEFAULT_CLIENT_ID, DEFAULT_PASSWORD, DEFAULT_TOKEN, DEFAULT_USERNAME
    from cancel247.sandbox.server import FaultRates, Sandbox, SandboxState

    setup_logging("INFO")
    rates = FaultRates(
        code6_rate=options["code6_rate"],
        http5xx_rate=options["http5xx_rate"],
        http429_rate=options["http429_rate"],
        html_rate=options["html_rate"],
        truncated_rate=options["truncated_rate"],
        hang_rate=options["hang_rate"],
        hang_seconds=options["hang_seconds"],
        latency_ms=options["latency_ms"],
        outage=options["outage"],
    )
    if sum((rates.code6_rate, rates.http5xx_rate, rates.http429_rate, rates.html_rate, rates.truncated_rate, rates.hang_rate)) > 1:
        fail("the fault rates add up to more than 1; lower them")
    state = SandboxState(
        seed=options["seed"], auto_create=not options["strict_orders"], auth_failure=options["auth_failure"], rates=rates
    )
    if options["orders_file"] is not None:
        try:
            spec = json.loads(options["orders_file"].read_text(encoding="utf-8"))
            for code, order in spec.items():
                state.set_order(code, order.get("state", "new"), order.get("faults", ()))
        except (ValueError, AttributeError) as exc:
            fail(f"{options['orders_file']}: {exc}")
    try:
        server = Sandbox(state, host=options["host"], port=options["port"])
    except OSError as exc:
        fail(f"cannot listen on {options['host']}:{options['port']}: {exc.strerror}; pick another --port")
    click.echo(f"sandbox listening on {server.url}")
    click.echo(f"  CANCEL247_API_URL={server.url}")
    click.echo(f"  login: CANCEL247_USERNAME={DEFAULT_USERNAME} CANCEL247_PASSWORD={DEFAULT_PASSWORD}")
    click.echo(f"  or fixed: CANCEL247_CLIENT_ID={DEFAULT_CLIENT_ID} CANCEL247_TOKEN={DEFAULT_TOKEN}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("sandbox stopped")


# history ---------------------------------------------------------------------


@cli.command()
@click.argument("order_code")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (stable shape) instead of a table.")
def history(order_code: str, as_json: bool) -> None:
    """Show the timeline of every request for ORDER_CODE (or for the order of a request id).

    Exits 1 when nothing is recorded for it.
    """
    from sqlalchemy.orm import Session

    from cancel247.audit.db import get_engine
    from cancel247.audit.history import order_code_of_request, order_history
    from cancel247.report import print_history

    settings = settings_or_exit()
    with Session(get_engine(settings.database_url.get_secret_value())) as session:
        requests = order_history(session, order_code)
        if not requests:
            owner = order_code_of_request(session, order_code.strip())
            if owner is not None:
                requests = order_history(session, owner)
    if as_json:
        click.echo(json.dumps(requests, ensure_ascii=False, indent=2))
    elif requests:
        print_history(output_console(), requests, settings.zone)
    if not requests:
        click.echo(f"no requests recorded for order or request id {order_code!r}", err=True)
        sys.exit(1)


# failed and replay ----------------------------------------------------------------


def selection_options(command: Any) -> Any:
    """Add the filters shared by `failed` and `replay`."""
    options = [
        click.option("--status", "statuses", multiple=True, help="Request status (repeatable). Default: failed and uncertain."),
        click.option("--since", help="Received at or after: ISO date/time (configured zone if no offset) or an age such as 2h, 3d."),
        click.option("--until", help="Received before: same forms as --since."),
        click.option("--error-code", "error_codes", multiple=True, help="Final carrier code, e.g. 6 (repeatable)."),
        click.option("--outcome", "outcomes", multiple=True, help="Outcome of the last attempt, e.g. transient (repeatable)."),
        click.option("--order-code", "order_codes", multiple=True, help="Order code (repeatable)."),
        click.option("--source", "sources", multiple=True, help="Producer's source label (repeatable)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def build_selection(settings: Settings, values: dict[str, Any], *, extra_ids: tuple[str, ...] = (), extra_codes: tuple[str, ...] = (), everything: bool = False) -> Any:
    from cancel247.ops import Selection, SelectionError, parse_time

    try:
        return Selection(
            request_ids=extra_ids,
            order_codes=tuple(values.get("order_codes", ())) + extra_codes,
            statuses=tuple(values.get("statuses", ())),
            since=parse_time(values["since"], zone=settings.zone) if values.get("since") else None,
            until=parse_time(values["until"], zone=settings.zone) if values.get("until") else None,
            error_codes=tuple(values.get("error_codes", ())),
            outcomes=tuple(values.get("outcomes", ())),
            sources=tuple(values.get("sources", ())),
            everything=everything,
        )
    except SelectionError as exc:
        fail(str(exc))


def _listing_table(rows: list[Any], zone: Any) -> Any:
    from rich.table import Table

    from cancel247.report import escape, styled_status

    table = Table()
    for column in ("received", "request id", "order", "status", "code", "last outcome", "calls", "source"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(
            row.created_at.astimezone(zone).isoformat(sep=" ", timespec="seconds"),
            row.request_id,
            escape(row.order_code),
            styled_status(row.status),
            escape(row.error_code or "-"),
            row.last_outcome or "-",
            str(row.attempts),
            escape(row.source or "-"),
        )
    return table


def _breakdown(console: Console, total: int, by_reason: Any) -> None:
    console.print(f"{total} request(s)")
    for reason, count in by_reason.most_common():
        console.print(f"  {count:>6}  {reason}", markup=False, highlight=False)


@cli.command()
@selection_options
@click.option("--limit", default=50, show_default=True, type=click.IntRange(0), help="Rows shown; the count covers all.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: {total, by_reason, requests}.")
def failed(limit: int, as_json: bool, **values: Any) -> None:
    """List failed and uncertain requests (or any --status), with a breakdown by reason."""
    from sqlalchemy.orm import Session

    from cancel247.audit.db import get_engine
    from cancel247.ops import find_requests

    settings = settings_or_exit()
    selection = build_selection(settings, values)
    with Session(get_engine(settings.database_url.get_secret_value())) as session:
        listing = find_requests(session, selection, limit=limit)
    if as_json:
        click.echo(json.dumps(
            {"total": listing.total, "by_reason": dict(listing.by_reason.most_common()), "requests": [r.as_json() for r in listing.rows]},
            ensure_ascii=False, indent=2,
        ))
        return
    console = output_console()
    if listing.rows:
        console.print(_listing_table(listing.rows, settings.zone))
        if listing.total > len(listing.rows):
            console.print(f"showing {len(listing.rows)} of {listing.total}; raise --limit or use --json")
    _breakdown(console, listing.total, listing.by_reason)


def _read_selectors(file_path: Path | None) -> list[str]:
    if file_path is None:
        return []
    return [code for _, code in read_codes(file_path, None)]


@cli.command()
@click.argument("targets", nargs=-1)
@click.option("--file", "file_path", type=click.Path(path_type=Path), help="File of request ids or order codes, one a line.")
@selection_options
@click.option("--all", "everything", is_flag=True, help="Select every request the filters allow (needed with no other selector).")
@click.option("--reason", help="Why these requests are replayed (required).")
@click.option("--actor", help="Who replays them. Default: the OS user.")
@click.option("--force", is_flag=True, help="Also replay succeeded, rejected, duplicate and invalid requests.")
@click.option("--dry-run", is_flag=True, help="Show what would be replayed and change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--rate", default=20.0, show_default=True, type=click.FloatRange(min=0.01), help="Requests sent per second.")
def replay(targets: tuple[str, ...], file_path: Path | None, everything: bool, reason: str | None, actor: str | None, force: bool, dry_run: bool, yes: bool, rate: float, **values: Any) -> None:
    """Replay requests given by id or order code (TARGETS, --file) or by filters.

    Only failed and uncertain requests are replayed unless --force is given.
    Each replay keeps the request id and its earlier attempts, starts a new
    run, and records who, when, why and the selection used.
    """
    from sqlalchemy.orm import Session

    from cancel247.ops import SelectionError, plan_replay, replay as run_replay, request_ids_or_codes
    from cancel247.tasks.producer import Producer

    settings = settings_or_exit()
    ids, codes = request_ids_or_codes(list(targets) + _read_selectors(file_path))
    selection = build_selection(settings, values, extra_ids=ids, extra_codes=codes, everything=everything)
    if not selection.has_selector:
        fail("nothing selected: give request ids, order codes, --file or filters; to replay every failed and uncertain request, add --all")
    if not dry_run and not (reason and reason.strip()):
        fail("--reason is required: say why these requests are replayed")

    producer = Producer(settings)
    console = Console(stderr=True)
    with Session(producer.store.engine) as session:
        plan = plan_replay(session, selection, force=force)
    if plan.listing.total == 0:
        click.echo("nothing to replay")
        return
    _print_plan(output_console(), plan, settings.zone)
    if dry_run:
        click.echo("dry run: nothing changed")
        return
    if plan.to_replay == 0:
        fail(_blocked_reason(plan), code=1)
    if not yes:
        if not sys.stdin.isatty():
            fail("not on a terminal: add --yes to replay without confirmation, or --dry-run to preview")
        if not click.confirm(f"replay {plan.to_replay} request(s)?", default=False):
            fail("cancelled: nothing changed", code=1)

    try:
        with _progress() as progress:
            bar = progress.add_task("replaying", total=plan.listing.total)
            result = run_replay(
                producer, selection, reason=reason or "", actor=actor, force=force, rate_per_second=rate,
                on_progress=lambda n: progress.advance(bar, n),
            )
    except SelectionError as exc:
        fail(str(exc))
    console.print(f"replay batch {result.batch_id}: {len(result.enqueued)} request(s) enqueued")
    problems = []
    if result.needs_force:
        problems.append(f"{len(result.needs_force)} need --force")
    if result.not_final:
        problems.append(f"{len(result.not_final)} still queued or in progress")
    if result.skipped_changed:
        problems.append(f"{len(result.skipped_changed)} changed meanwhile (another replay or a worker took them)")
    if result.send_failed:
        problems.append(f"{len(result.send_failed)} not sent and recorded as failed again: {result.send_error}")
    if problems:
        fail("not all selected requests were enqueued: " + "; ".join(problems), code=1)


def _blocked_reason(plan: Any) -> str:
    parts = []
    if plan.needs_force and not plan.force:
        parts.append("need --force: " + ", ".join(f"{s} {n}" for s, n in sorted(plan.needs_force.items())))
    if plan.not_final:
        parts.append("still running: " + ", ".join(f"{s} {n}" for s, n in sorted(plan.not_final.items())))
    return "none of the matching requests can be replayed (" + "; ".join(parts) + ")"


def _print_plan(console: Console, plan: Any, zone: Any) -> None:
    listing = plan.listing
    console.print(f"{listing.total} request(s) match; {plan.to_replay} would be replayed")
    _breakdown(console, listing.total, listing.by_reason)
    if plan.needs_force:
        held = "" if plan.force else " (held back: add --force to include them)"
        console.print("needs --force: " + ", ".join(f"{s} {n}" for s, n in sorted(plan.needs_force.items())) + held)
    if plan.not_final:
        console.print("never replayed while running: " + ", ".join(f"{s} {n}" for s, n in sorted(plan.not_final.items())))
    console.print(_listing_table(listing.rows, zone))
    if listing.total > len(listing.rows):
        console.print(f"first {len(listing.rows)} of {listing.total} shown")


# demo ---------------------------------------------------------------------------


@cli.command()
@click.option("--keep", is_flag=True, help="Keep the temporary folder (database, logs) and print its path.")
@click.option("--timeout", default=180.0, show_default=True, help="Give up after this many seconds.")
def demo(keep: bool, timeout: float) -> None:
    """Run the whole pipeline on bundled sample orders, with nothing to configure."""
    from cancel247.demo import run_demo

    sys.exit(run_demo(keep=keep, timeout_seconds=timeout))


# Commands defined in other modules register themselves on ``cli`` when imported.
from cancel247 import cli_audit, cli_reliability  # noqa: E402, F401


def main() -> None:
    try:
        cli(standalone_mode=True)
    except ConfigError as exc:
        fail(str(exc))


if __name__ == "__main__":
    main()
