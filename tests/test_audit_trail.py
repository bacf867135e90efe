"""What auditors read: the history timeline, exports, stats and prune, on PostgreSQL and SQLite."""

from __future__ import annotations

import csv
import io
import json
import math
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cancel247.audit import migrate
from cancel247.audit.db import get_engine
from cancel247.audit.history import order_history
from cancel247.audit.models import Attempt, CancelRequest, Replay
from cancel247.local import settings_env
from cancel247.ops import Selection, replay
from cancel247.sandbox import SandboxState
from tests.conftest import POSTGRES_ADMIN_URL, POSTGRES_TEST_DATABASE, Stack, _recreate_postgres_database, new_order_code
from tests.test_cli import run_cli

pytestmark = pytest.mark.integration

ZONE = ZoneInfo("Asia/Ho_Chi_Minh")
CODE6_MESSAGE = "Có lỗi xảy ra trong quá trình xử lý."
# Vietnamese with every kind of character a spreadsheet mangles: combining
# marks, a comma, a quote, a line break and a character outside the BMP.
AWKWARD_MESSAGE = 'Đơn hàng "ĐH-01", đã giao;\nkhông thể hủy 😞 (Trạng thái không hợp lệ để xóa.)'
AWKWARD_COMBINING = "Tie\u0302\u0301ng Vie\u0323\u0302t"


@pytest.fixture(params=["sqlite", "postgresql"])
def audit_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A freshly migrated, empty audit store."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    else:
        url = _recreate_postgres_database(f"{POSTGRES_TEST_DATABASE}_audit")
    migrate.upgrade(url)
    yield url
    get_engine(url).dispose()


def add_request(
    session: Session,
    *,
    created: datetime,
    status: str = "succeeded",
    order_code: str | None = None,
    attempts: list[dict[str, Any]] = (),  # type: ignore[assignment]
    finished: datetime | None = None,
    error_code: str | None = None,
) -> CancelRequest:
    finished_at = finished
    if finished_at is None and status not in ("queued", "in_progress"):
        finished_at = created + timedelta(seconds=1)
    request = CancelRequest(
        id=str(uuid.uuid4()),
        order_code=order_code or new_order_code(),
        status=status,
        run=1,
        reason="lý do: khách hủy",
        source="shop-a",
        created_at=created,
        started_at=created + timedelta(milliseconds=5) if attempts else None,
        finished_at=finished_at,
        updated_at=created + timedelta(seconds=1),
        error_code=error_code,
        detail="chi tiết",
    )
    session.add(request)
    for number, values in enumerate(attempts, start=1):
        session.add(
            Attempt(
                request_id=request.id,
                run=1,
                number=number,
                outcome=values.get("outcome", "succeeded"),
                started_at=values.get("started", created + timedelta(milliseconds=10 * number)),
                finished_at=values.get("started", created) + timedelta(milliseconds=3),
                duration_ms=values.get("duration_ms", 3.0),
                http_status=values.get("http_status", 200),
                error_code=values.get("error_code", "0"),
                message=values.get("message"),
                worker="w1@host",
            )
        )
    return request


# history ----------------------------------------------------------------------------


def test_history_timeline_two_runs_with_replay(stack: Stack, carrier: SandboxState) -> None:
    code = new_order_code("HIS")
    carrier.configure(outage=True)
    [request_id] = stack.enqueue(code, source="audit-test")
    stack.wait([request_id])
    carrier.configure(outage=False)
    result = replay(
        stack.producer, Selection(request_ids=(request_id,)), reason="hết sự cố, gửi lại", actor="kiểm-toán", rate_per_second=1000
    )
    assert result.enqueued == [request_id]
    stack.wait([request_id])

    env = settings_env(stack.values) | {"COLUMNS": "250"}
    out = run_cli("history", code, env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    events = [line.split("│")[1].strip() for line in lines if line.count("│") >= 9]
    max_attempts = stack.settings.retry_max_attempts
    assert events == (
        ["received"]
        + [f"attempt {n}" for n in range(1, max_attempts + 1)]
        + ["replay, run 2", f"attempt {max_attempts + 1}", "final"]
    )
    replay_line = next(line for line in lines if "replay, run 2" in line)
    assert "by kiểm-toán (was failed): hết sự cố, gửi lại" in replay_line
    attempt_lines = [line for line in lines if "│ attempt " in line]
    assert all(CODE6_MESSAGE in line for line in attempt_lines[:-1])
    assert all("+07:00" in line.split("│")[0] for line in lines if line.count("│") >= 9)
    # Times in the table are the stored times, shown in the configured zone.
    [record] = json.loads(run_cli("history", code, "--json", env=env).stdout)
    first = datetime.fromisoformat(record["attempts"][0]["started_at"]).astimezone(ZONE)
    assert first.isoformat(sep=" ", timespec="milliseconds") in attempt_lines[0]

    by_id = run_cli("history", request_id, env=env)
    assert by_id.returncode == 0
    assert request_id in by_id.stdout
    assert "replay, run 2" in by_id.stdout


def test_history_unknown_order_exits_1(audit_url: str) -> None:
    result = run_cli("history", "NO-SUCH-ORDER", env=settings_env({"database_url": audit_url}))
    assert result.returncode == 1
    assert "no requests recorded for order or request id 'NO-SUCH-ORDER'" in result.stderr
    as_json = run_cli("history", "NO-SUCH-ORDER", "--json", env=settings_env({"database_url": audit_url}))
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout) == []


# export -----------------------------------------------------------------------------


def test_export_period_boundaries_and_vietnamese(audit_url: str, tmp_path: Path) -> None:
    since = datetime(2026, 7, 1, tzinfo=ZONE)
    until = datetime(2026, 10, 1, tzinfo=ZONE)
    tick = timedelta(microseconds=1)
    starts = {
        "before": since - tick,
        "at-since": since,
        "inside": since + timedelta(days=40),
        "last": until - tick,
        "at-until": until,
    }
    with Session(get_engine(audit_url)) as session, session.begin():
        for label, start in starts.items():
            add_request(
                session,
                created=start - timedelta(seconds=2),
                order_code=f"EXP-{label}",
                attempts=[{"started": start, "message": AWKWARD_MESSAGE if label == "inside" else AWKWARD_COMBINING, "error_code": "14", "outcome": "permanent"}],
                status="rejected",
            )
    env = settings_env({"database_url": audit_url})
    window = ["--since", "2026-07-01", "--until", "2026-10-01"]

    csv_path = tmp_path / "q3.csv"
    result = run_cli("export", *window, "--output", str(csv_path), "--excel", env=env)
    assert result.returncode == 0, result.stderr
    raw = csv_path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    assert AWKWARD_MESSAGE.encode("utf-8") in raw.replace(b"\r\n", b"\n") or AWKWARD_MESSAGE.replace('"', '""').encode("utf-8") in raw
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    assert sorted(r["order_code"] for r in rows) == ["EXP-at-since", "EXP-inside", "EXP-last"]
    messages = {r["order_code"]: r["message"] for r in rows}
    assert messages["EXP-inside"] == AWKWARD_MESSAGE
    assert messages["EXP-at-since"] == AWKWARD_COMBINING
    assert rows[0]["started_at"] == "2026-07-01T00:00:00.000000+07:00"
    assert list(rows[0]) == run_cli_columns("attempt")

    jsonl = run_cli("export", *window, "--format", "jsonl", env=env)
    assert jsonl.returncode == 0, jsonl.stderr
    records = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert [r["order_code"] for r in records] == ["EXP-at-since", "EXP-inside", "EXP-last"]
    assert records[1]["message"] == AWKWARD_MESSAGE
    assert AWKWARD_MESSAGE.encode("utf-8") in jsonl.stdout.encode("utf-8") or json.dumps(AWKWARD_MESSAGE, ensure_ascii=False).encode() in jsonl.stdout.encode()

    per_request = run_cli("export", *window, "--per", "request", "--format", "jsonl", env=env)
    assert per_request.returncode == 0, per_request.stderr
    # Requests are chosen by the time they were received: two seconds before their attempt.
    received = [json.loads(line)["order_code"] for line in per_request.stdout.splitlines()]
    assert received == ["EXP-inside", "EXP-last", "EXP-at-until"]
    inside = json.loads(per_request.stdout.splitlines()[0])
    assert inside["attempts"] == 1
    assert inside["last_message"] == AWKWARD_MESSAGE


def run_cli_columns(grain: str) -> list[str]:
    from cancel247.audit.export import columns

    return columns(grain)


def test_export_refuses_bad_input(audit_url: str, tmp_path: Path) -> None:
    env = settings_env({"database_url": audit_url})
    existing = tmp_path / "there.csv"
    existing.write_text("keep me", encoding="utf-8")
    cases = [
        (["--since", "yesterday"], "--since: invalid time 'yesterday'"),
        (["--since", "2026-10-01", "--until", "2026-07-01"], "is not before --until"),
        (["--status", "done"], "--status 'done' is not a status"),
        (["--format", "jsonl", "--excel"], "--excel applies to CSV only"),
        (["--output", str(existing)], "exists: choose another --output or add --force"),
        (["--output", str(tmp_path / "nodir" / "x.csv")], "does not exist: create it or choose another --output"),
    ]
    for args, message in cases:
        result = run_cli("export", *args, env=env)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr
    assert existing.read_text(encoding="utf-8") == "keep me"


# stats ------------------------------------------------------------------------------


def nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def test_stats_agree_with_independent_counts(audit_url: str) -> None:
    rng = random.Random(7)
    period_start = datetime(2026, 9, 1, tzinfo=UTC)
    statuses = ["succeeded", "rejected", "failed", "uncertain", "duplicate", "invalid", "queued", "in_progress"]
    outcomes = ["succeeded", "transient", "ambiguous", "permanent", "auth"]
    expected_status: Counter[str] = Counter()
    expected_code: Counter[str] = Counter()
    expected_outcome: Counter[str] = Counter()
    per_request_calls: list[int] = []
    durations: list[float] = []
    to_final: list[float] = []
    with Session(get_engine(audit_url)) as session, session.begin():
        for i in range(300):
            inside = i % 5 != 0
            created = period_start + timedelta(minutes=rng.randrange(0, 60 * 24 * 29)) if inside else period_start - timedelta(hours=1 + i)
            status = rng.choice(statuses)
            n = rng.choice([0, 1, 1, 1, 2, 3, 6]) if status not in ("duplicate", "invalid", "queued") else 0
            calls = []
            for k in range(n):
                duration = round(rng.uniform(0.5, 900.0), 3)
                calls.append({"outcome": rng.choice(outcomes), "duration_ms": duration, "started": created + timedelta(seconds=k + 1)})
            elapsed = round(rng.uniform(0.05, 600.0), 3)
            code = rng.choice(["0", "6", "13", "14", "16", None])
            terminal = status not in ("queued", "in_progress")
            add_request(
                session, created=created, status=status, attempts=calls, error_code=code,
                finished=created + timedelta(seconds=elapsed) if terminal else None,
            )
            if inside:
                expected_status[status] += 1
                if terminal:
                    expected_code[code if code is not None else "none"] += 1
                    to_final.append(elapsed)
                for call in calls:
                    expected_outcome[call["outcome"]] += 1
                    durations.append(call["duration_ms"])
                if n:
                    per_request_calls.append(n)

    env = settings_env({"database_url": audit_url})
    result = run_cli("stats", "--since", "2026-09-01T00:00Z", "--until", "2026-10-01T00:00Z", "--json", env=env)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["requests"] == sum(expected_status.values()) == 240
    assert figures["by_status"] == dict(expected_status)
    assert figures["by_error_code"] == dict(expected_code)
    assert figures["by_outcome"] == dict(expected_outcome)
    assert figures["attempts"] == len(durations)
    assert figures["requests_called"] == len(per_request_calls)
    assert figures["requests_retried"] == sum(1 for n in per_request_calls if n > 1)
    assert figures["attempts_per_request_max"] == max(per_request_calls)
    assert figures["attempts_per_request"] == {str(k): v for k, v in sorted(Counter(per_request_calls).items())}
    assert figures["attempts_per_request_mean"] == pytest.approx(len(durations) / len(per_request_calls), abs=1e-4)
    for p, key in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
        assert figures["carrier_latency_ms"][key] == pytest.approx(nearest_rank(durations, p), abs=1e-3)
    for p, key in ((0.5, "p50"), (0.95, "p95")):
        assert figures["enqueue_to_final_seconds"][key] == pytest.approx(nearest_rank(to_final, p), abs=2e-3)

    table = run_cli("stats", "--since", "2026-09-01T00:00Z", "--until", "2026-10-01T00:00Z", env=env | {"COLUMNS": "120"})
    assert table.returncode == 0, table.stderr
    assert "240 request(s)" in table.stdout
    assert f"{nearest_rank(durations, 0.5):.3f}".rstrip("0").rstrip(".") in table.stdout


def test_stats_of_an_empty_period(audit_url: str) -> None:
    result = run_cli("stats", "--since", "2001-01-01", "--until", "2001-02-01", "--json", env=settings_env({"database_url": audit_url}))
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["requests"] == 0
    assert figures["attempts"] == 0
    assert figures["carrier_latency_ms"] == {"p50": None, "p95": None, "p99": None}


# prune ------------------------------------------------------------------------------


def test_prune_keeps_unfinished_and_export_round_trips(audit_url: str, tmp_path: Path) -> None:
    old = datetime(2025, 1, 10, tzinfo=UTC)
    recent = datetime.now(UTC) - timedelta(days=1)
    engine = get_engine(audit_url)
    with Session(engine) as session, session.begin():
        prunable = [
            add_request(session, created=old, status=status, attempts=[{"message": CODE6_MESSAGE, "error_code": "6", "outcome": "transient"}] * k)
            for status, k in (("succeeded", 1), ("failed", 3), ("rejected", 2), ("duplicate", 0), ("invalid", 0), ("uncertain", 2))
        ]
        unfinished = [add_request(session, created=old, status=status) for status in ("queued", "in_progress")]
        unfinished.append(add_request(session, created=old, status="in_progress", attempts=[{"outcome": "in_flight"}]))
        kept_recent = add_request(session, created=recent, status="succeeded", attempts=[{}])
        session.flush()
        session.add(
            Replay(request_id=prunable[1].id, run=2, previous_status="failed", actor="ops", reason="lần 2",
                   selection="{}", forced=False, batch_id=str(uuid.uuid4()), created_at=old + timedelta(hours=1))
        )
        pruned_codes = sorted(r.order_code for r in prunable)
        kept_ids = {r.id for r in unfinished} | {kept_recent.id}
    with Session(engine) as session:
        before_prune = {code: order_history(session, code)[0] for code in pruned_codes}

    env = settings_env({"database_url": audit_url})
    dry = run_cli("prune", "--before", "2025-06-01", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "6 request(s), 8 attempt(s), 1 replay(s)" in dry.stdout
    assert "3 unfinished request(s) received before then are kept" in dry.stdout
    with Session(engine) as session:
        assert session.execute(select(func.count()).select_from(CancelRequest)).scalar_one() == 10

    refused = run_cli("prune", "--before", "2025-06-01", env=env)
    assert refused.returncode == 2
    assert "add --yes" in refused.stderr

    export_path = tmp_path / "pruned.jsonl"
    done = run_cli("prune", "--before", "2025-06-01", "--export", str(export_path), "--yes", env=env)
    assert done.returncode == 0, done.stderr
    assert "deleted 6 request(s), 8 attempt(s), 1 replay(s)" in done.stdout

    exported = [json.loads(line) for line in export_path.read_text(encoding="utf-8").splitlines()]
    assert sorted(r["order_code"] for r in exported) == pruned_codes
    assert {r["order_code"]: r for r in exported} == before_prune
    assert CODE6_MESSAGE in export_path.read_text(encoding="utf-8")

    with Session(engine) as session:
        left = set(session.execute(select(CancelRequest.id)).scalars())
        assert left == kept_ids
        assert session.execute(select(func.count()).select_from(Attempt)).scalar_one() == 2
        assert session.execute(select(func.count()).select_from(Replay)).scalar_one() == 0

    again = run_cli("prune", "--before", "2025-06-01", "--export", str(export_path), "--yes", env=env)
    assert again.returncode == 2
    assert "prune never overwrites an export" in again.stderr
    assert len(export_path.read_text(encoding="utf-8").splitlines()) == 6


def test_prune_refuses_a_future_cutoff(audit_url: str) -> None:
    result = run_cli("prune", "--before", "2999-01-01", "--yes", env=settings_env({"database_url": audit_url}))
    assert result.returncode == 2
    assert "--before '2999-01-01' is in the future" in result.stderr


def test_prune_refuses_missing_export_folder(audit_url: str, tmp_path: Path) -> None:
    target = tmp_path / "nodir" / "p.jsonl"
    result = run_cli("prune", "--before", "1d", "--export", str(target), "--yes", env=settings_env({"database_url": audit_url}))
    assert result.returncode == 2
    assert "does not exist: create it or choose another --export file" in result.stderr
    assert "Traceback" not in result.stderr


def test_history_shows_holds_of_a_run_without_attempts() -> None:
    from rich.console import Console

    from cancel247.report import print_history

    record = {
        "request_id": "5d7b81c5-0000-4000-8000-000000000000", "order_code": "OUT-6", "status": "in_progress", "run": 1,
        "reason": None, "source": None, "created_at": "2026-12-04T21:40:00+00:00", "updated_at": "2026-12-04T21:40:31+00:00",
        "finished_at": None, "error_code": None, "detail": None, "replays": [], "attempts": [],
        "holds": [{"run": 1, "reason": "carrier circuit open after repeated transient failures",
                   "held_at": "2026-12-04T21:40:01+00:00", "resume_at": "2026-12-04T21:40:30+00:00"}],
    }
    for width in (100, 200):
        console = Console(record=True, width=width)
        print_history(console, [record], ZONE)
        text = console.export_text()
        assert "held" in text
        assert "carrier circuit open" in text
        assert "2026-12-05 04:40:30.000+07:00" in text



# docs/audit.md ----------------------------------------------------------------------

DOCS = Path(__file__).resolve().parent.parent / "docs" / "audit.md"


def sql_blocks() -> list[str]:
    text = DOCS.read_text(encoding="utf-8")
    return [block.split("```", 1)[0].strip() for block in text.split("```sql\n")[1:]]


def test_documented_queries_run_on_postgresql() -> None:
    url = _recreate_postgres_database(f"{POSTGRES_TEST_DATABASE}_docs")
    migrate.upgrade(url)
    engine = get_engine(url)
    with Session(engine) as session, session.begin():
        request = add_request(
            session, created=datetime.now(UTC) - timedelta(days=2), status="uncertain", order_code="WKH254074-19649",
            attempts=[{"outcome": "ambiguous"}, {"outcome": "permanent", "error_code": "14", "message": CODE6_MESSAGE}],
        )
        session.flush()
        session.add(Replay(request_id=request.id, run=2, previous_status="failed", actor="ops", reason="x",
                           selection="{}", forced=False, batch_id=str(uuid.uuid4()), created_at=datetime.now(UTC)))
    queries = [q for q in sql_blocks() if q.startswith(("SELECT", "WITH"))]
    assert len(queries) == 10
    with engine.connect() as connection:
        results = [connection.exec_driver_sql(query).all() for query in queries]
    assert results[0] and results[0][0][5] == "ambiguous"
    assert results[3] == [("WKH254074-19649", request_id_of(engine), results[3][0][2], results[3][0][3])]
    assert sum(n for _, n in results[6]) == 1
    engine.dispose()


def request_id_of(engine: Any) -> str:
    with Session(engine) as session:
        return session.execute(select(CancelRequest.id)).scalar_one()


def test_read_only_auditor_role_as_documented(tmp_path: Path) -> None:
    database = f"{POSTGRES_TEST_DATABASE}_ro"
    owner_url = _recreate_postgres_database(database)
    migrate.upgrade(owner_url)
    with Session(get_engine(owner_url)) as session, session.begin():
        add_request(session, created=datetime(2026, 8, 1, tzinfo=UTC), status="failed", order_code="RO-1",
                    attempts=[{"outcome": "transient", "error_code": "6", "message": CODE6_MESSAGE}])
    role = f"auditor{POSTGRES_TEST_DATABASE.removeprefix('cancel247_test')}_test"
    [grant_block] = [b for b in sql_blocks() if b.startswith("CREATE ROLE")]
    statements = [
        line.replace("auditor", role).replace("DATABASE cancel247", f'DATABASE "{database}"').replace("FOR ROLE cancel247", "FOR ROLE postgres")
        for line in grant_block.splitlines()
        if line and not line.startswith("--")
    ]

    owner = get_engine(owner_url)
    with owner.connect() as connection:
        # Privileges of a role left by an interrupted run went with its database.
        connection.exec_driver_sql(f'DROP ROLE IF EXISTS "{role}"')
        for statement in statements:
            connection.exec_driver_sql(statement)
        connection.commit()
    auditor_url = owner_url.replace("postgres@", f"{role}:not-a-real-secret@", 1)
    env = settings_env({"database_url": auditor_url})

    try:
        history = run_cli("history", "RO-1", env=env)
        assert history.returncode == 0, history.stderr
        assert CODE6_MESSAGE in history.stdout
        exported = run_cli("export", "--format", "jsonl", env=env)
        assert exported.returncode == 0, exported.stderr
        assert json.loads(exported.stdout)["message"] == CODE6_MESSAGE
        assert run_cli("stats", "--json", env=env).returncode == 0
        pruned = run_cli("prune", "--before", "2026-09-01", "--yes", env=env)
        assert pruned.returncode == 1, pruned.stderr
        [line] = pruned.stderr.strip().splitlines()[-1:]
        assert "read-only transaction" in line
        assert "Traceback" not in pruned.stderr
        assert "not-a-real-secret" not in pruned.stderr + history.stderr + exported.stderr
    finally:
        get_engine(auditor_url).dispose()
        owner.dispose()
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')
