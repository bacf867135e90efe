"""Listing and replaying finished requests, through the real worker on both databases."""

from __future__ import annotations

import json
import threading
import uuid

import pytest
import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cancel247.audit.models import Attempt, CancelRequest, Replay
from cancel247.local import settings_env
from cancel247.ops import ReplayResult, Selection, SelectionError, replay
from cancel247.sandbox import SandboxState
from tests.conftest import Stack, new_order_code
from tests.test_cli import run_cli

pytestmark = pytest.mark.integration

FAST = 1000.0  # replays per second: no pacing in tests


def fail_in_outage(stack: Stack, carrier: SandboxState, count: int) -> tuple[list[str], list[str], str]:
    """Enqueue ``count`` orders during a code-6 outage; return codes, request ids and their source."""
    source = f"outage-{uuid.uuid4().hex[:8]}"
    codes = [new_order_code("OUT") for _ in range(count)]
    carrier.configure(outage=True)
    ids = stack.enqueue(*codes, source=source)
    stack.wait(ids)
    carrier.configure(outage=False)
    for request_id in ids:
        assert stack.request(request_id).status == "failed"
    return codes, ids, source


def snapshot(stack: Stack) -> tuple[list[tuple[str, str, int]], int, int]:
    with Session(stack.store.engine) as session:
        requests = [tuple(r) for r in session.execute(select(CancelRequest.id, CancelRequest.status, CancelRequest.run).order_by(CancelRequest.id))]
        replays = session.execute(select(func.count()).select_from(Replay)).scalar_one()
        attempts = session.execute(select(func.count()).select_from(Attempt)).scalar_one()
    return requests, replays, attempts


def test_outage_replay_brings_all_back(stack: Stack, carrier: SandboxState) -> None:
    codes, ids, source = fail_in_outage(stack, carrier, 5)
    attempts_allowed = stack.settings.retry_max_attempts

    result = replay(
        stack.producer,
        Selection(sources=(source,), statuses=("failed",), error_codes=("6",)),
        reason="carrier outage over",
        actor="ops-test",
        rate_per_second=FAST,
    )
    assert sorted(result.enqueued) == sorted(ids)
    assert result.complete
    stack.wait(ids)

    for code, request_id in zip(codes, ids, strict=True):
        [request] = stack.history(code)
        assert request["status"] == "succeeded"
        assert request["run"] == 2
        outcomes = [(a["run"], a["number"], a["outcome"]) for a in request["attempts"]]
        expected_first = [(1, n, "transient") for n in range(1, attempts_allowed + 1)]
        assert outcomes == expected_first + [(2, attempts_allowed + 1, "succeeded")]
        [record] = request["replays"]
        assert record["run"] == 2
        assert record["actor"] == "ops-test"
        assert record["reason"] == "carrier outage over"
        assert record["previous_status"] == "failed"
        assert record["selection"]["sources"] == [source]
        assert len(stack.carrier_calls(code)) == attempts_allowed + 1


def test_dry_run_changes_nothing(stack: Stack, carrier: SandboxState) -> None:
    _, ids, source = fail_in_outage(stack, carrier, 3)
    queue = redis.Redis.from_url(stack.values["broker_url"])
    before = snapshot(stack)
    queued_before = queue.llen(stack.settings.queue)

    result = run_cli("replay", "--source", source, "--dry-run", env=settings_env(stack.values) | {"COLUMNS": "200"})

    assert result.returncode == 0, result.stderr
    assert "3 request(s) match; 3 would be replayed" in result.stdout
    assert "failed, code 6, last transient" in result.stdout
    assert "dry run: nothing changed" in result.stdout
    assert snapshot(stack) == before
    assert queue.llen(stack.settings.queue) == queued_before


def test_force_gates_finished_requests(stack: Stack, carrier: SandboxState) -> None:
    code = new_order_code("FRC")
    [request_id] = stack.enqueue(code)
    stack.wait([request_id])
    env = settings_env(stack.values) | {"COLUMNS": "200"}

    refused = run_cli("replay", request_id, "--reason", "check", "--yes", env=env)
    assert refused.returncode == 1
    assert "need --force: succeeded 1" in refused.stderr
    assert stack.request(request_id).run == 1

    forced = run_cli("replay", request_id, "--reason", "customer insists", "--force", "--yes", "--actor", "lan", env=env)
    assert forced.returncode == 0, forced.stderr
    stack.wait([request_id])
    request = stack.request(request_id)
    assert request.run == 2
    # The carrier's 14 confirms the first run's cancellation, so the request
    # stays succeeded and a new request for the order is still a duplicate.
    assert request.status == "succeeded"
    assert request.error_code == "14"
    assert "already cancelled by an earlier run" in (request.detail or "")
    [record] = stack.history(code)[0]["replays"]
    assert record["forced"] is True
    assert record["actor"] == "lan"
    [again] = stack.enqueue(code)
    stack.wait([again])
    assert stack.request(again).status == "duplicate"
    assert stack.request(again).duplicate_of == request_id


def test_concurrent_replays_enqueue_once(stack: Stack, carrier: SandboxState) -> None:
    codes, ids, _ = fail_in_outage(stack, carrier, 10)
    barrier = threading.Barrier(2)
    results: list[ReplayResult] = []

    def operator(selected: list[str], name: str) -> None:
        barrier.wait()
        results.append(replay(stack.producer, Selection(request_ids=tuple(selected)), reason="overlap", actor=name, rate_per_second=FAST))

    threads = [
        threading.Thread(target=operator, args=(ids[:7], "an")),
        threading.Thread(target=operator, args=(ids[3:], "binh")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    first, second = results
    assert set(first.enqueued).isdisjoint(second.enqueued)
    assert sorted(first.enqueued + second.enqueued) == sorted(ids)
    # The four requests both selected were sent by one operator. The other
    # found them changed: mid-replay, queued, or already finished again.
    held_back = [
        len(r.skipped_changed) + len(r.not_final) + len(r.needs_force) for r in results
    ]
    assert sum(held_back) == 4
    stack.wait(ids)
    attempts_allowed = stack.settings.retry_max_attempts
    for code, request_id in zip(codes, ids, strict=True):
        assert stack.request(request_id).status == "succeeded"
        assert len(stack.history(code)[0]["replays"]) == 1
        assert len(stack.carrier_calls(code)) == attempts_allowed + 1


def test_uncertain_replay_ends_with_14(stack: Stack, carrier: SandboxState) -> None:
    code = new_order_code("UNC")
    carrier.set_order(code, "new", ["hang"] + ["code6"] * 5)
    [request_id] = stack.enqueue(code)
    stack.wait([request_id])
    assert stack.request(request_id).status == "uncertain"
    assert carrier.order_state(code) == "cancelled"

    result = replay(stack.producer, Selection(order_codes=(code,)), reason="check the lost reply", rate_per_second=FAST)
    assert result.enqueued == [request_id]
    stack.wait([request_id])

    [request] = stack.history(code)
    assert request["status"] == "uncertain"
    assert request["error_code"] == "14"
    last = request["attempts"][-1]
    assert (last["run"], last["error_code"], last["message"]) == (2, "14", "Trạng thái không hợp lệ để xóa.")
    assert request["replays"][0]["previous_status"] == "uncertain"
    assert sum(len(r["attempts"]) for r in stack.history(code)) == len(stack.carrier_calls(code))


def test_failed_lists_with_breakdown(stack: Stack, carrier: SandboxState) -> None:
    _, ids, source = fail_in_outage(stack, carrier, 2)
    env = settings_env(stack.values) | {"COLUMNS": "250"}

    table = run_cli("failed", "--source", source, "--since", "1h", env=env)
    assert table.returncode == 0, table.stderr
    assert "2 request(s)" in table.stdout
    assert "failed, code 6, last transient" in table.stdout
    assert "+07:00" in table.stdout

    as_json = json.loads(run_cli("failed", "--source", source, "--json", env=env).stdout)
    assert as_json["total"] == 2
    assert sorted(r["request_id"] for r in as_json["requests"]) == sorted(ids)
    assert as_json["by_reason"] == {"failed, code 6, last transient": 2}

    future = run_cli("failed", "--source", source, "--since", "2099-01-01", env=env)
    assert "0 request(s)" in future.stdout


def test_replay_needs_selector_and_reason(stack: Stack) -> None:
    env = settings_env(stack.values)
    bare = run_cli("replay", "--yes", "--reason", "x", env=env)
    assert bare.returncode == 2
    assert "nothing selected" in bare.stderr
    assert "--all" in bare.stderr

    no_reason = run_cli("replay", "--all", "--yes", env=env)
    assert no_reason.returncode == 2
    assert "--reason is required" in no_reason.stderr

    nothing = run_cli("replay", "--source", "no-such-source", "--yes", "--reason", "x", env=env)
    assert nothing.returncode == 0
    assert nothing.stdout.strip() == "nothing to replay"

    with pytest.raises(SelectionError, match="no selection"):
        replay(stack.producer, Selection(), reason="x")


def test_replay_not_on_terminal_needs_yes(stack: Stack, carrier: SandboxState) -> None:
    _, ids, source = fail_in_outage(stack, carrier, 1)
    result = run_cli("replay", "--source", source, "--reason", "x", env=settings_env(stack.values), stdin="y\n")
    assert result.returncode == 2
    assert "not on a terminal: add --yes" in result.stderr
    assert stack.request(ids[0]).run == 1


def test_bad_time_named() -> None:
    from zoneinfo import ZoneInfo

    from cancel247.ops import parse_time

    with pytest.raises(SelectionError, match="invalid time 'yesterday'"):
        parse_time("yesterday", zone=ZoneInfo("Asia/Ho_Chi_Minh"))
    moment = parse_time("2026-12-01", zone=ZoneInfo("Asia/Ho_Chi_Minh"))
    assert moment.isoformat() == "2026-11-30T17:00:00+00:00"


def test_replay_mixes_request_ids_and_order_codes(stack: Stack, carrier: SandboxState) -> None:
    codes, ids, _ = fail_in_outage(stack, carrier, 3)
    env = settings_env(stack.values) | {"COLUMNS": "250"}
    result = run_cli("replay", ids[0], codes[1], "--dry-run", env=env)
    assert result.returncode == 0, result.stderr
    assert "2 request(s) match; 2 would be replayed" in result.stdout
    assert ids[0] in result.stdout
    assert ids[1] in result.stdout
    assert ids[2] not in result.stdout
