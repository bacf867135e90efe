"""Tables for people: order history and status summaries, rendered with rich."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
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


def local_time(value: str | None, zone: ZoneInfo) -> str:
    """Format an ISO UTC timestamp in ``zone``: date, time to the millisecond and offset."""
    if value is None:
        return "-"
    moment = datetime.fromisoformat(value).astimezone(zone)
    return moment.isoformat(sep=" ", timespec="milliseconds")


def _cell(value: Any) -> str:
    """Format a value for a table cell; text from outside is escaped, never read as markup."""
    return "-" if value is None or value == "" else escape(str(value))


def styled_status(status: str) -> str:
    style = STATUS_STYLES.get(status, "bold")
    return f"[{style}]{escape(status)}[/{style}]"


# Narrower consoles get the timeline as lines: ten table columns would crush the carrier's message.
TABLE_MIN_WIDTH = 150
TIMELINE_COLUMNS = ("time", "event", "outcome", "HTTP", "code", "carrier message", "ms", "wait s", "worker", "note")


def print_history(console: Console, requests: list[dict[str, Any]], zone: ZoneInfo) -> None:
    """Print a timeline per request: received, each run's replay and attempts, and the final status."""
    for request in requests:
        console.print(
            f"[bold]request {request['request_id']}[/bold]  order {escape(request['order_code'])}  "
            f"status {styled_status(request['status'])}  run {request['run']}"
        )
        rows = timeline_rows(request, zone)
        if console.width >= TABLE_MIN_WIDTH:
            console.print(timeline_table(rows))
        else:
            _print_timeline_lines(console, rows)


def timeline_table(rows: list[tuple[str, ...]]) -> Table:
    """Lay out timeline rows as a table."""
    table = Table(show_edge=False, pad_edge=False)
    # Only the note wraps, so the carrier's message stays on one line whenever it fits.
    for column in TIMELINE_COLUMNS[:-1]:
        table.add_column(column, no_wrap=True, overflow="fold")
    table.add_column(TIMELINE_COLUMNS[-1], overflow="fold", min_width=16)
    for row in rows:
        table.add_row(*row)
    return table


def _print_timeline_lines(console: Console, rows: list[tuple[str, ...]]) -> None:
    for time_, event, outcome, http, code, message, ms, wait, worker, note in rows:
        facts = [f"{event:<10}", outcome]
        for label, value, unit in (("HTTP", http, ""), ("code", code, ""), ("", ms, " ms"), ("wait", wait, " s"), ("", worker, "")):
            if value and value != "-":
                facts.append(f"{label} {value}{unit}".strip())
        console.print(f"  {time_}  " + "  ".join(f for f in facts if f))
        if message and message != "-":
            console.print(Padding(f"carrier: {message}", (0, 0, 0, 6)))
        if note and note != "-":
            console.print(Padding(note, (0, 0, 0, 6)))


def timeline_rows(request: dict[str, Any], zone: ZoneInfo) -> list[tuple[str, ...]]:
    """Return the events of one request in the order they happened, one tuple of cells each."""
    rows: list[tuple[str, ...]] = []
    blank = ("",) * 7

    received = " ".join(
        f"{label} {request[key]}" for label, key in (("source", "source"), ("reason", "reason")) if request.get(key)
    )
    rows.append((local_time(request["created_at"], zone), "received", *blank, _cell(received or None)))

    replays = {replay["run"]: replay for replay in request.get("replays", [])}
    runs = sorted({a["run"] for a in request["attempts"]} | set(replays) | {h["run"] for h in request.get("holds", [])})
    for run in runs:
        replay = replays.get(run)
        if replay is not None:
            forced = ", forced" if replay["forced"] else ""
            rows.append((
                local_time(replay["created_at"], zone),
                f"replay, run {run}",
                *blank,
                _cell(f"by {replay['actor']} (was {replay['previous_status']}{forced}): {replay['reason']}"),
            ))
        holds = [h for h in request.get("holds", []) if h["run"] == run]
        for attempt in (a for a in request["attempts"] if a["run"] == run):
            while holds and datetime.fromisoformat(holds[0]["held_at"]) <= datetime.fromisoformat(attempt["started_at"]):
                rows.append(_hold_row(holds.pop(0), zone))
            rows.append((
                local_time(attempt["started_at"], zone),
                f"attempt {attempt['number']}",
                styled_outcome(attempt["outcome"]),
                _cell(attempt["http_status"]),
                _cell(attempt["error_code"]),
                _cell(attempt["message"]),
                _cell(f"{attempt['duration_ms']:.0f}" if attempt["duration_ms"] is not None else None),
                _cell(f"{attempt['wait_seconds']:.3f}" if attempt["wait_seconds"] is not None else None),
                _cell(attempt.get("worker")),
                _cell(attempt.get("detail")),
            ))
        rows.extend(_hold_row(hold, zone) for hold in holds)

    if request["status"] in ("queued", "in_progress"):
        event, when = "waiting", request.get("updated_at")
    else:
        event, when = "final", request["finished_at"]
    rows.append((
        local_time(when, zone),
        event,
        styled_status(request["status"]),
        "",
        _cell(request.get("error_code")),
        *("",) * 4,
        _cell(request.get("detail")),
    ))
    return rows


def _hold_row(hold: dict[str, Any], zone: ZoneInfo) -> tuple[str, ...]:
    return (
        local_time(hold["held_at"], zone),
        "held",
        *("",) * 7,
        _cell(f"until {local_time(hold['resume_at'], zone)}: {hold['reason']}"),
    )


OUTCOME_STYLES = {
    "succeeded": "green",
    "transient": "yellow",
    "ambiguous": "magenta",
    "permanent": "red",
    "auth": "red",
    "interrupted": "magenta",
    "in_flight": "blue",
}


def styled_outcome(outcome: str) -> str:
    style = OUTCOME_STYLES.get(outcome, "bold")
    return f"[{style}]{escape(outcome)}[/{style}]"


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
