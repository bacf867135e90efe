"""The cancel247 command, run as a user runs it: in a child process."""

from __future__ import annotations

import json
import socket
import subprocess
import uuid
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cancel247.audit import migrate
from cancel247.audit.db import get_engine
from cancel247.audit.models import CancelRequest
from cancel247.audit.store import AuditStore, NewRequest
from cancel247.local import settings_env
from tests.conftest import Stack, new_order_code

pytestmark = pytest.mark.integration


def run_cli(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cancel247", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_worker_without_api_url_one_line() -> None:
    result = run_cli("worker", env=settings_env({}))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: CANCEL247_API_URL is missing: set it to the carrier's base URL, "
        "e.g. https://customer-api.247express.vn, or to the URL `cancel247 sandbox` prints"
    ]


def test_bad_setting_one_line(tmp_path: Path) -> None:
    env = settings_env({"retry_max_attempts": "many", "database_url": f"sqlite:///{tmp_path / 'a.sqlite3'}"})
    result = run_cli("history", "WKH1", env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: CANCEL247_RETRY_MAX_ATTEMPTS='many' is invalid")


def test_db_upgrade_creates_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    result = run_cli("db", "upgrade", env=settings_env({"database_url": url}))
    assert result.returncode == 0, result.stderr
    assert migrate.current_revision(get_engine(url)) == migrate.head_revision()


@pytest.fixture
def cli_env(tmp_path: Path, redis_url: str) -> dict[str, Any]:
    values = {
        "database_url": f"sqlite:///{tmp_path / 'cli.sqlite3'}",
        "broker_url": redis_url,
        "queue": "cancel247-test-cli",
    }
    migrate.upgrade(values["database_url"])
    client = redis.Redis.from_url(redis_url)
    client.delete(values["queue"])
    yield values
    client.delete(values["queue"])


def count_requests(url: str) -> int:
    with Session(get_engine(url)) as session:
        return session.execute(select(func.count()).select_from(CancelRequest)).scalar_one()


def test_enqueue_bad_file_sends_nothing(tmp_path: Path, cli_env: dict[str, Any], redis_url: str) -> None:
    codes = tmp_path / "codes.txt"
    codes.write_text("WKH000001-00001\nWKH 2\n\n" + "X" * 60 + "\n2471900009205\n", encoding="utf-8")
    result = run_cli("enqueue", "--file", str(codes), env=settings_env(cli_env))

    assert result.returncode == 2
    assert f"{codes}:2: invalid order code 'WKH 2': contains whitespace" in result.stderr
    assert f"{codes}:4: invalid order code" in result.stderr
    assert "2 invalid order code(s); nothing was enqueued" in result.stderr
    assert count_requests(cli_env["database_url"]) == 0
    assert redis.Redis.from_url(redis_url).llen(cli_env["queue"]) == 0


def test_enqueue_csv_prints_ids(tmp_path: Path, cli_env: dict[str, Any], redis_url: str) -> None:
    codes = tmp_path / "orders.csv"
    codes.write_text("shop,OrderCode,note\nA,WKH000001-00001,x\nB,2471900009205,\"y, z\"\n", encoding="utf-8-sig")
    result = run_cli("enqueue", "--file", str(codes), "--reason", "khách hủy", "--json", env=settings_env(cli_env))

    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["order_code"] for r in rows] == ["WKH000001-00001", "2471900009205"]
    assert count_requests(cli_env["database_url"]) == 2
    messages = redis.Redis.from_url(redis_url).lrange(cli_env["queue"], 0, -1)
    assert len(messages) == 2
    envelope = json.loads(messages[-1])
    assert envelope["headers"]["task"] == "cancel247.cancel_order"
    assert envelope["headers"]["id"] == rows[0]["request_id"]
    assert envelope["content-type"] == "application/json"


def test_enqueue_csv_without_code_column(tmp_path: Path, cli_env: dict[str, Any]) -> None:
    codes = tmp_path / "orders.csv"
    codes.write_text("shop,ref\nA,WKH1\n", encoding="utf-8")
    result = run_cli("enqueue", "--file", str(codes), env=settings_env(cli_env))
    assert result.returncode == 2
    assert "no order code column among shop, ref; name it with --column" in result.stderr


def test_history_json_shape(stack: Stack) -> None:
    code = new_order_code()
    stack.sandbox.state.set_order(code, "new", ["code6"])
    ids = stack.enqueue(code)
    stack.wait(ids)

    result = run_cli("history", code, "--json", env=settings_env(stack.values))
    assert result.returncode == 0, result.stderr
    [request] = json.loads(result.stdout)
    assert {"request_id", "order_code", "status", "attempts"} <= set(request)
    assert request["request_id"] == ids[0]
    assert request["status"] == "succeeded"
    assert [a["number"] for a in request["attempts"]] == [1, 2]
    first = request["attempts"][0]
    assert {"number", "outcome", "http_status", "error_code", "message", "started_at", "finished_at"} <= set(first)
    assert first["message"] == "Có lỗi xảy ra trong quá trình xử lý."

    table = run_cli("history", code, env=settings_env(stack.values) | {"COLUMNS": "200"})
    assert table.returncode == 0, table.stderr
    assert ids[0] in table.stdout
    assert "+07:00" in table.stdout
    assert "Có lỗi xảy ra trong quá trình xử lý." in table.stdout


def test_celery_command_refuses_bad_settings() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "cancel247.worker", "worker"],
        env=settings_env({"client_id": "1", "token": "t" * 64}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "error: CANCEL247_API_URL is missing" in result.stderr


def test_unmigrated_store_one_line(tmp_path: Path) -> None:
    # An empty file is an SQLite database without tables.
    (tmp_path / "empty.sqlite3").touch()
    env = settings_env({"database_url": f"sqlite:///{tmp_path / 'empty.sqlite3'}"})
    result = run_cli("history", "WKH1", env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "is at revision none (empty)" in lines[0]
    assert "run `cancel247 db upgrade`" in lines[0]


def test_history_shows_brackets_verbatim(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'markup.sqlite3'}"
    migrate.upgrade(url)
    AuditStore(get_engine(url)).record_queued([NewRequest(str(uuid.uuid4()), "WKH-MARKUP", reason="[urgent] see [/] ticket")])

    result = run_cli("history", "WKH-MARKUP", env=settings_env({"database_url": url}))
    assert result.returncode == 0, result.stderr
    assert "[urgent] see [/] ticket" in result.stdout
    assert "queued" in result.stdout


def test_piped_table_is_wide(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'wide.sqlite3'}"
    migrate.upgrade(url)
    request_id = str(uuid.uuid4())
    AuditStore(get_engine(url)).record_queued([NewRequest(request_id, "WKH091808-00002")])
    env = {k: v for k, v in settings_env({"database_url": url}).items() if k != "COLUMNS"}

    result = run_cli("failed", "--status", "queued", env=env)
    assert result.returncode == 0, result.stderr
    assert request_id in result.stdout
    assert "WKH091808-00002" in result.stdout


def test_enqueue_semicolon_csv(tmp_path: Path, cli_env: dict[str, Any]) -> None:
    codes = tmp_path / "excel.csv"
    codes.write_text("order_code;note\nBOM-0001;x\nBOM-0002;y\n", encoding="utf-8")
    result = run_cli("enqueue", "--file", str(codes), "--json", env=settings_env(cli_env))
    assert result.returncode == 0, result.stderr
    assert [r["order_code"] for r in json.loads(result.stdout)] == ["BOM-0001", "BOM-0002"]


@pytest.mark.parametrize("header", ["order_code", "mã đơn hàng"])
def test_one_column_csv_header_skipped(tmp_path: Path, cli_env: dict[str, Any], header: str) -> None:
    codes = tmp_path / "one.csv"
    codes.write_text(f"{header}\nONE-0001\nONE-0002\n", encoding="utf-8")
    result = run_cli("enqueue", "--file", str(codes), "--json", env=settings_env(cli_env))
    assert result.returncode == 0, result.stderr
    assert [r["order_code"] for r in json.loads(result.stdout)] == ["ONE-0001", "ONE-0002"]


def test_missing_sqlite_store_not_created(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.sqlite3"
    result = run_cli("failed", env=settings_env({"database_url": f"sqlite:///{path}"}))
    assert result.returncode == 2
    assert f"no audit store at '{path}': run `cancel247 db upgrade`" in result.stderr
    assert not path.exists()


def test_unknown_outcome_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'outcome.sqlite3'}"
    migrate.upgrade(url)
    result = run_cli("failed", "--outcome", "weird", env=settings_env({"database_url": url}))
    assert result.returncode == 2
    assert "invalid outcome 'weird': use one of ambiguous, auth" in result.stderr


def test_misspelled_setting_warned(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'typo.sqlite3'}"
    migrate.upgrade(url)
    env = settings_env({"database_url": url}) | {"CANCEL247_RETRY_MAX_ATEMPTS": "3"}
    result = run_cli("stats", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert (
        "warning: CANCEL247_RETRY_MAX_ATEMPTS is not a setting (did you mean CANCEL247_RETRY_MAX_ATTEMPTS?); it is ignored"
        in result.stderr
    )


def test_broker_down_records_failed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'down.sqlite3'}"
    migrate.upgrade(url)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = settings_env({"database_url": url, "broker_url": f"redis://127.0.0.1:{port}/0"})

    result = run_cli("enqueue", "WKH-DOWN-1", env=env)
    assert result.returncode == 1
    assert "recorded as failed and can be sent with `cancel247 replay`" in result.stderr
    with Session(get_engine(url)) as session:
        request = session.execute(select(CancelRequest)).scalar_one()
    assert request.status == "failed"
    assert (request.detail or "").startswith("not sent: could not send to the broker")
