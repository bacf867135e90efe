"""Commands for auditors: export, stats and prune."""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import click
from rich.table import Table

from cancel247.cli import _progress, cli, fail, output_console, settings_or_exit
from cancel247.config import Settings


def _time(settings: Settings, value: str | None, option: str) -> datetime | None:
    from cancel247.ops import SelectionError, parse_time

    if value is None:
        return None
    try:
        return parse_time(value, zone=settings.zone)
    except SelectionError as exc:
        fail(f"{option}: {exc}")


def _period(settings: Settings, since: str | None, until: str | None, statuses: tuple[str, ...]) -> Any:
    from cancel247.audit.export import Period
    from cancel247.audit.models import RequestStatus

    known = {s.value for s in RequestStatus}
    for status in statuses:
        if status not in known:
            fail(f"--status {status!r} is not a status; use one of {', '.join(sorted(known))}")
    period = Period(_time(settings, since, "--since"), _time(settings, until, "--until"), tuple(statuses))
    if period.since and period.until and period.since >= period.until:
        fail(f"--since {since!r} is not before --until {until!r}: the period is empty")
    return period


def period_options(command: Any) -> Any:
    options = [
        click.option("--since", help="Start of the period, included: ISO date or time (configured zone if no offset) or an age such as 30d."),
        click.option("--until", help="End of the period, excluded: same forms as --since."),
        click.option("--status", "statuses", multiple=True, help="Only requests in this status (repeatable)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _store(settings: Settings) -> Any:
    from cancel247.audit.db import get_engine
    from cancel247.audit.store import AuditStore

    return AuditStore(get_engine(settings.database_url.get_secret_value()))


# export -----------------------------------------------------------------------


@cli.command()
@period_options
@click.option("--per", "grain", type=click.Choice(["attempt", "request"]), default="attempt", show_default=True, help="One row per carrier call, or per request.")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), help="Default: from the --output suffix, else csv.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="File to write (default: standard output).")
@click.option("--excel", is_flag=True, help="Start the CSV with a UTF-8 byte-order mark, so Excel shows Vietnamese text correctly.")
@click.option("--force", is_flag=True, help="Overwrite --output if it exists.")
def export(since: str | None, until: str | None, statuses: tuple[str, ...], grain: str, fmt: str | None, output: Path | None, excel: bool, force: bool) -> None:
    """Export the audit trail of a period as CSV or JSON Lines, streamed.

    With --per attempt (the default), one row per carrier call that started
    in [--since, --until), with its request's fields. With --per request, one
    row per request received in the period, with its last attempt. The
    columns are listed in docs/audit.md.
    """
    from sqlalchemy.exc import SQLAlchemyError

    settings = settings_or_exit()
    period = _period(settings, since, until, statuses)
    if fmt is None:
        fmt = "jsonl" if output is not None and output.suffix.lower() in (".jsonl", ".json", ".ndjson") else "csv"
    if excel and fmt != "csv":
        fail("--excel applies to CSV only: drop it, or use --format csv")
    if output is not None and not output.parent.is_dir():
        fail(f"folder {str(output.parent)!r} does not exist: create it or choose another --output")
    if output is not None and output.exists() and not force:
        fail(f"{output} exists: choose another --output or add --force to overwrite it")

    store = _store(settings)
    encoding = "utf-8-sig" if excel else "utf-8"
    partial = output.with_name(output.name + ".partial") if output is not None else None
    try:
        written = _write_export(store, grain, period, fmt, encoding, partial, settings)
    except SQLAlchemyError as exc:
        if partial is not None:
            partial.unlink(missing_ok=True)
        cause = getattr(exc, "orig", None) or exc
        fail(f"export stopped: the audit store failed: {type(cause).__name__}: {str(cause).splitlines()[0]}", code=1)
    except BaseException:
        if partial is not None:
            partial.unlink(missing_ok=True)
        raise
    if output is not None and partial is not None:
        partial.replace(output)
        click.echo(f"{written} row(s) written to {output}", err=True)


def _write_export(store: Any, grain: str, period: Any, fmt: str, encoding: str, partial: Path | None, settings: Settings) -> int:
    """Stream the rows to ``partial`` (or standard output); return how many were written."""
    from sqlalchemy.orm import Session

    from cancel247.audit.export import Writer, columns, count_rows, export_rows

    with ExitStack() as stack:
        session = stack.enter_context(Session(store.engine))
        stream: IO[str]
        update = None
        if partial is None:
            stream = sys.stdout
            sys.stdout.reconfigure(encoding=encoding, newline="")  # type: ignore[attr-defined]
        else:
            total = count_rows(session, grain, period)
            stream = stack.enter_context(partial.open("w", encoding=encoding, newline=""))
            progress = stack.enter_context(_progress())
            bar = progress.add_task(f"exporting {partial.name.removesuffix('.partial')}", total=total)
            update = lambda n: progress.update(bar, completed=n)  # noqa: E731
        writer = Writer(stream, fmt, columns(grain), settings.zone)
        written = 0
        for row in export_rows(session, grain, period):
            writer.write(row)
            written += 1
            if update is not None and written % 1000 == 0:
                update(written)
        if update is not None:
            update(written)
        stream.flush()
    return written


# stats ------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    return f"{value:,}"


def _counts_table(title: str, key: str, counts: dict[str, int], total: int) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column(key)
    table.add_column("count", justify="right")
    table.add_column("share", justify="right")
    for name, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        table.add_row(name, _fmt(count), f"{count / total:.1%}" if total else "-")
    return table


@cli.command()
@period_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def stats(since: str | None, until: str | None, statuses: tuple[str, ...], as_json: bool) -> None:
    """Figures for the requests received in [--since, --until): statuses, codes, retries, latency."""
    from sqlalchemy.orm import Session

    from cancel247.audit.stats import compute_stats

    settings = settings_or_exit()
    period = _period(settings, since, until, statuses)
    with Session(_store(settings).engine) as session:
        figures = compute_stats(session, period)
    if as_json:
        click.echo(json.dumps(figures.as_dict(), ensure_ascii=False, indent=2))
        return

    console = output_console()
    span = f"{since or 'the beginning'} to {until or 'now'} ({settings.timezone})"
    console.print(f"[bold]{figures.requests:,} request(s)[/bold] received from {span}; {figures.attempts:,} carrier call(s)")
    if figures.requests == 0:
        return
    console.print(_counts_table("requests by status", "status", figures.by_status, figures.requests))
    finished = sum(figures.by_error_code.values())
    console.print(_counts_table("finished requests by final carrier code", "code", figures.by_error_code, finished))
    console.print(_counts_table("attempts by outcome", "outcome", figures.by_outcome, figures.attempts))
    table = Table(title="retries and timing", title_justify="left", show_header=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    share = f"{figures.retried_share:.1%}" if figures.retried_share is not None else "-"
    table.add_row("requests with a carrier call", _fmt(figures.requests_called))
    table.add_row("needed more than one call", f"{_fmt(figures.requests_retried)} ({share})")
    table.add_row("attempts per request, mean / max", f"{_fmt(figures.attempts_per_request_mean)} / {_fmt(figures.attempts_per_request_max)}")
    for name, value in figures.carrier_latency_ms.items():
        table.add_row(f"carrier latency {name}, ms", _fmt(value))
    for name, value in figures.enqueue_to_final_seconds.items():
        table.add_row(f"enqueue to final status {name}, s", _fmt(value))
    console.print(table)


# prune ------------------------------------------------------------------------


@cli.command()
@click.option("--before", required=True, help="Delete requests that finished before this time: ISO date or time, or an age such as 400d.")
@click.option("--export", "export_path", type=click.Path(dir_okay=False, path_type=Path), help="Write every deleted request (JSON Lines, as history --json) to this file first.")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted and change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def prune(before: str, export_path: Path | None, dry_run: bool, yes: bool) -> None:
    """Delete finished requests, with their attempts and replays, that finished before --before.

    Queued and in-progress requests are never deleted, however old.
    """
    from cancel247.audit.prune import count_prunable, prune as run_prune

    settings = settings_or_exit()
    cutoff = _time(settings, before, "--before")
    assert cutoff is not None
    if cutoff > datetime.now(UTC):
        fail(f"--before {before!r} is in the future: prune deletes only what finished before a past time")
    if export_path is not None and not export_path.parent.is_dir():
        fail(f"folder {str(export_path.parent)!r} does not exist: create it or choose another --export file")
    if export_path is not None and export_path.exists():
        fail(f"{export_path} exists: prune never overwrites an export; choose another --export file")

    store = _store(settings)
    counts = count_prunable(store, cutoff)
    when = cutoff.astimezone(settings.zone).isoformat(sep=" ", timespec="seconds")
    click.echo(
        f"finished before {when}: {counts.requests} request(s), {counts.attempts} attempt(s), {counts.replays} replay(s)"
    )
    if counts.unfinished_kept:
        click.echo(f"{counts.unfinished_kept} unfinished request(s) received before then are kept")
    if dry_run:
        click.echo("dry run: nothing deleted")
        return
    if counts.requests == 0:
        click.echo("nothing to prune")
        return
    if not yes:
        if not sys.stdin.isatty():
            fail("not on a terminal: add --yes to delete without confirmation, or --dry-run to count")
        if not click.confirm(f"delete {counts.requests} request(s) and their history?", default=False):
            fail("cancelled: nothing deleted", code=1)

    from cancel247.audit.store import AuditUnavailable

    deleted = 0

    def advance(n: int) -> None:
        nonlocal deleted
        deleted += n
        progress.advance(bar, n)

    try:
        with ExitStack() as stack:
            stream = stack.enter_context(export_path.open("x", encoding="utf-8")) if export_path else None
            progress = stack.enter_context(_progress())
            bar = progress.add_task("pruning", total=counts.requests)
            done = run_prune(store, cutoff, export=stream, progress=advance)
    except AuditUnavailable as exc:
        fail(f"prune stopped after deleting {deleted} request(s): {exc}", code=1)
    where = f"; written to {export_path} first" if export_path else ""
    click.echo(f"deleted {done.requests} request(s), {done.attempts} attempt(s), {done.replays} replay(s){where}")
