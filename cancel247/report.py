"""Tables for people: order history and status summaries, rendered with rich."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.markup import escape
from rich.table import Table

STATUS_STYLES = {
    "queued": "blue",
    "in_progress": "blue",
    "succeeded": "green",
    "rejected": "yellow",
    "failed": "red",
    "uncertain": "magenta",
    "duplicate": "cyan",
    "invalid": "red",
}


def local_time(value: str | None, zone: ZoneInfo, *, clock_only: bool = False) -> str:
    """Format an ISO UTC timestamp in ``zone``: date, time to the millisecond and offset."""
    if value is None:
        return "-"
    moment = datetime.fromisoformat(value).astimezone(zone)
    if clock_only:
        return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"
    return moment.isoformat(sep=" ", timespec="milliseconds")


def _cell(value: Any) -> str:
    """Format a value for a table cell; text from outside is escaped, never read as markup."""
    return "-" if value is None or value == "" else escape(str(value))


def styled_status(status: str) -> str:
    style = STATUS_STYLES.get(status, "bold")
    return f"[{style}]{escape(status)}[/{style}]"


def print_history(console: Console, requests: list[dict[str, Any]], zone: ZoneInfo) -> None:
    """Print each request of an order and a table of its attempts."""
    for request in requests:
        console.print(
            f"[bold]request {request['request_id']}[/bold]  order {escape(request['order_code'])}  "
            f"status {styled_status(request['status'])}  run {request['run']}"
        )
        console.print(f"  received {local_time(request['created_at'], zone)}  finished {local_time(request['finished_at'], zone)}")
        if request.get("source") or request.get("reason"):
            console.print(f"  source {_cell(request.get('source'))}  reason {_cell(request.get('reason'))}")
        if request.get("detail"):
            console.print(f"  detail: {request['detail']}", markup=False)
        if not request["attempts"] and not request.get("replays"):
            console.print("  no carrier calls")
            continue
        replays = {replay["run"]: replay for replay in request.get("replays", [])}
        runs = sorted({a["run"] for a in request["attempts"]} | set(replays))
        for run in runs:
            replay = replays.get(run)
            if replay is not None:
                forced = ", forced" if replay["forced"] else ""
                console.print(
                    f"  run {run}: replayed {local_time(replay['created_at'], zone)} by {replay['actor']} "
                    f"(was {replay['previous_status']}{forced}): {replay['reason']}",
                    markup=False,
                )
            elif len(runs) > 1:
                console.print(f"  run {run}:")
            _print_attempts(console, [a for a in request["attempts"] if a["run"] == run], request, zone)


def _print_attempts(console: Console, attempts: list[dict[str, Any]], request: dict[str, Any], zone: ZoneInfo) -> None:
    if not attempts:
        console.print("  no carrier calls in this run")
        return
    offset = datetime.fromisoformat(request["created_at"]).astimezone(zone).strftime("%z")
    table = Table(show_edge=False, pad_edge=False, caption=f"times in {zone.key} (UTC{offset[:3]}:{offset[3:]})")
    for column in ("#", "started", "outcome", "HTTP", "code", "carrier message", "ms", "wait s", "note"):
        table.add_column(column, overflow="fold")
    for attempt in attempts:
        table.add_row(
            str(attempt["number"]),
            local_time(attempt["started_at"], zone, clock_only=True),
            attempt["outcome"],
            _cell(attempt["http_status"]),
            _cell(attempt["error_code"]),
            _cell(attempt["message"]),
            _cell(round(attempt["duration_ms"]) if attempt["duration_ms"] is not None else None),
            _cell(f"{attempt['wait_seconds']:.3f}" if attempt["wait_seconds"] is not None else None),
            _cell(attempt.get("detail")),
        )
    console.print(table)


def summary_table(rows: list[tuple[str, str | None]], title: str) -> Table:
    """Count requests by (status, final carrier code)."""
    counts = Counter(rows)
    table = Table(title=title)
    table.add_column("status")
    table.add_column("carrier code")
    table.add_column("requests", justify="right")
    for (status, code), count in sorted(counts.items(), key=lambda item: (item[0][0], item[0][1] or "")):
        table.add_row(styled_status(status), _cell(code), str(count))
    table.add_row("[bold]total[/bold]", "", f"[bold]{sum(counts.values())}[/bold]")
    return table
