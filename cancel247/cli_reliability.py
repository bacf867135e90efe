"""Commands that keep the pipeline healthy: doctor and recover."""

from __future__ import annotations

from cancel247.cli import cli  # noqa: F401


# doctor ----------------------------------------------------------------------

import click as _click  # noqa: E402


def _parse_skip(_ctx: object, _param: object, value: str | None) -> tuple[str, ...]:
    from cancel247.doctor import CHECK_NAMES

    names = tuple(name.strip() for name in (value or "").split(",") if name.strip())
    unknown = [name for name in names if name not in CHECK_NAMES]
    if unknown:
        raise _click.BadParameter(f"unknown check {unknown[0]!r}; use a comma-separated list of {', '.join(CHECK_NAMES)}")
    return names


@cli.command()
@_click.option("--skip", callback=_parse_skip, metavar="CHECKS", help="Comma-separated checks not to run: broker, database, schema, carrier, worker.")
@_click.option("--timeout", default=5.0, show_default=True, type=_click.FloatRange(0.1, 120), help="Seconds each network check may take.")
@_click.option("--worker", "node", metavar="NODE", help="Require this worker node (e.g. cancel247@host) to consume the queue, not any worker.")
@_click.option("--json", "as_json", is_flag=True, help="Print JSON: {ok, checks: [{name, status, detail, fix}]}.")
def doctor(skip: tuple[str, ...], timeout: float, node: str | None, as_json: bool) -> None:
    """Check the broker, audit store, schema, carrier login and workers; exit 1 if any check fails."""
    import json
    import sys

    from rich.console import Console
    from rich.markup import escape

    from cancel247.doctor import FAILED, OK, run_checks

    results = run_checks(skip=skip, timeout=timeout, node=node)
    failed = [r for r in results if r.status == FAILED]
    if as_json:
        _click.echo(json.dumps({"ok": not failed, "checks": [r.as_dict() for r in results]}, ensure_ascii=False, indent=2))
    else:
        console = Console(highlight=False, soft_wrap=True)
        marks = {OK: "[green]ok     [/]", FAILED: "[red]FAILED [/]"}
        for result in results:
            line = f"{marks.get(result.status, '[yellow]skipped[/]')} {result.name:<9} {escape(result.detail)}"
            if result.fix:
                line += f" [bold]fix:[/] {escape(result.fix)}"
            console.print(line)
    if failed:
        summary = "; ".join(f"{r.name}: {r.fix or r.detail}" for r in failed)
        _click.echo(f"error: {len(failed)} check(s) failed: {summary}", err=True)
        sys.exit(1)


# recover ---------------------------------------------------------------------

from typing import TYPE_CHECKING  # noqa: E402

if TYPE_CHECKING:
    from datetime import tzinfo

    from rich.console import Console

    from cancel247.recover import RecoverPlan, RecoverResult


@cli.command()
@_click.option("--older-than", metavar="AGE", help="Recover requests with no progress for longer than AGE: seconds, or 30m, 2h, 1d. Default: CANCEL247_RECOVER_AFTER_SECONDS, else the redelivery bound plus 60 s.")
@_click.option("--dry-run", is_flag=True, help="Show the stuck requests and change nothing.")
@_click.option("--rate", default=20.0, show_default=True, type=_click.FloatRange(min=0.01), help="Requests sent per second.")
@_click.option("--json", "as_json", is_flag=True, help="Print JSON: {older_than_seconds, stuck, in_broker, enqueued, ...}.")
def recover(older_than: str | None, dry_run: bool, rate: float, as_json: bool) -> None:
    """Send again the queued and in_progress requests whose message was lost.

    A request is stuck when neither it nor its attempts changed for longer
    than --older-than and its message is not in the broker. It keeps its
    request id and starts a new run; history shows the recovery. Exit status
    0 when every stuck request was sent (or none was found), 1 otherwise.
    """
    import json

    from rich.console import Console

    from cancel247.cli import _progress, fail, output_console, settings_or_exit
    from cancel247.recover import RecoverError, default_age_seconds, parse_age, plan_recover, recover as run_recover
    from cancel247.tasks.producer import EnqueueError, Producer

    settings = settings_or_exit()
    producer = Producer(settings)
    try:
        seconds = parse_age(older_than) if older_than is not None else default_age_seconds(settings)
        plan = plan_recover(producer, seconds)
    except RecoverError as exc:
        fail(str(exc))
    except EnqueueError as exc:
        fail(f"cannot read the queue: {exc}", code=1)

    if as_json and (dry_run or not plan.stuck):
        _click.echo(json.dumps(_recover_json(plan, None), indent=2))
        return
    if not as_json:
        _print_recover_plan(output_console(), plan, settings.zone)
    if not plan.stuck:
        _click.echo("nothing to recover")
        return
    if dry_run:
        _click.echo("dry run: nothing changed")
        return

    with _progress() as progress:
        bar = progress.add_task("recovering", total=len(plan.stuck))
        result = run_recover(producer, seconds, rate_per_second=rate, plan=plan, on_progress=lambda n: progress.advance(bar, n))
    if as_json:
        _click.echo(json.dumps(_recover_json(plan, result), indent=2))
    else:
        Console(stderr=True).print(f"recover batch {result.batch_id}: {len(result.enqueued)} request(s) sent again")
    problems = []
    if result.skipped_changed:
        problems.append(f"{len(result.skipped_changed)} changed meanwhile (a worker or another recover took them)")
    if result.send_failed:
        problems.append(f"{len(result.send_failed)} not sent and left as they were: {result.send_error}")
    if problems:
        fail("not all stuck requests were sent: " + "; ".join(problems), code=1)


def _recover_json(plan: RecoverPlan, result: RecoverResult | None) -> dict[str, object]:
    data: dict[str, object] = {
        "older_than_seconds": plan.older_than_seconds,
        "cutoff": plan.cutoff.isoformat(),
        "stuck": [r.as_json() for r in plan.stuck],
        "in_broker": [r.as_json() for r in plan.in_broker],
    }
    if result is not None:
        data.update(
            batch_id=result.batch_id,
            enqueued=result.enqueued,
            skipped_changed=result.skipped_changed,
            send_failed=result.send_failed,
            send_error=result.send_error,
        )
    return data


def _print_recover_plan(console: Console, plan: RecoverPlan, zone: tzinfo) -> None:
    from rich.table import Table

    from cancel247.report import escape, styled_status

    stuck = plan.stuck
    counts = ", ".join(f"{status} {count}" for status, count in sorted(plan.by_status.items()))
    console.print(
        f"{len(stuck)} request(s) with no progress for over {plan.older_than_seconds:g} s"
        + (f" ({counts})" if counts else "")
    )
    if plan.in_broker:
        console.print(f"{len(plan.in_broker)} more still have their message in the broker: left alone")
    if not stuck:
        return
    table = Table()
    for column in ("last change", "request id", "order", "status", "run"):
        table.add_column(column, no_wrap=True)
    for row in stuck[:20]:
        table.add_row(
            row.updated_at.astimezone(zone).isoformat(sep=" ", timespec="seconds"),
            row.request_id,
            escape(row.order_code),
            styled_status(row.status),
            str(row.run),
        )
    console.print(table)
    if len(stuck) > 20:
        console.print(f"first 20 of {len(stuck)} shown")
