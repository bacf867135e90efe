"""Recovering requests whose message was lost, through the real worker on both databases.

A message is "lost" by sending it to a queue no worker consumes: the request
stays queued exactly as after a Redis restart without persistence. Its row
is then aged by moving its times back, instead of waiting out the threshold.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from cancel247.audit import migrate
from cancel247.audit.db import get_engine
from cancel247.audit.models import Attempt, CancelRequest, Replay
from cancel247.audit.store import AuditStore, NewRequest, utcnow
from cancel247.config import load_settings
from cancel247.local import WorkerProcess, settings_env, wait_until_final
from cancel247.recover import RecoverError, RecoverResult, check_age, default_age_seconds, recover
from cancel247.sandbox import SandboxState
from cancel247.tasks.producer import Producer
from cancel247.worker.app import RECOVER_TASK_NAME, celery_config
from tests.conftest import Stack, new_order_code
from tests.test_cli import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

AN_HOUR = timedelta(hours=1)
FAST = 1000.0  # requests per second: no pacing in tests


def lose_messages(stack: Stack, count: int, prefix: str = "LOST") -> tuple[list[str], list[str]]:
    """Enqueue ``count`` requests whose messages go to a queue no worker consumes; return codes and ids."""
    lost_queue = f"nobody-{uuid.uuid4().hex[:8]}"
    producer = Producer(load_settings(**{**stack.values, "queue": lost_queue}))
    codes = [new_order_code(prefix) for _ in range(count)]
    ids = producer.enqueue_many(codes)
    redis.Redis.from_url(stack.values["broker_url"]).delete(lost_queue)
    return codes, ids


def age(stack: Stack, request_ids: list[str], by: timedelta = AN_HOUR) -> None:
    """Move the request rows and their attempts back in time by ``by``."""
    with stack.store.transaction() as session:
        for request in session.execute(select(CancelRequest).where(CancelRequest.id.in_(request_ids))).scalars():
            request.updated_at -= by
            request.created_at -= by
        for attempt in session.execute(select(Attempt).where(Attempt.request_id.in_(request_ids))).scalars():
            attempt.started_at -= by


def snapshot(stack: Stack) -> tuple[list[tuple[str, str, int]], int]:
    with Session(stack.store.engine) as session:
        rows = [tuple(r) for r in session.execute(select(CancelRequest.id, CancelRequest.status, CancelRequest.run).order_by(CancelRequest.id))]
        replays = session.execute(select(func.count()).select_from(Replay)).scalar_one()
    return rows, replays


def test_lost_message_recovered_by_cli(stack: Stack, carrier: SandboxState) -> None:
    [code], [request_id] = lose_messages(stack, 1)
    time.sleep(1.5)
    assert stack.request(request_id).status == "queued"
    age(stack, [request_id])
    env = settings_env(stack.values) | {"COLUMNS": "200"}

    result = run_cli("recover", env=env)

    assert result.returncode == 0, result.stderr
    assert "1 request(s) with no progress for over" in result.stdout
    assert request_id in result.stdout
    assert "1 request(s) sent again" in result.stderr
    stack.wait([request_id])
    [request] = stack.history(code)
    assert request["status"] == "succeeded"
    assert request["run"] == 2
    [record] = request["replays"]
    assert record["actor"] == "recover"
    assert record["previous_status"] == "queued"
    assert record["run"] == 2
    assert "message sent again" in record["reason"]
    assert [(a["run"], a["outcome"]) for a in request["attempts"]] == [(2, "succeeded")]
    assert len(stack.carrier_calls(code)) == 1

    as_json = json.loads(run_cli("history", code, "--json", env=env).stdout)
    assert as_json[0]["replays"][0]["actor"] == "recover"
    table = run_cli("history", code, env=env).stdout
    assert "by recover (was queued)" in table


def test_lost_in_progress_continues(stack: Stack, carrier: SandboxState) -> None:
    """A worker died mid-call and the message was lost: the in_flight attempt ends interrupted."""
    code = new_order_code("DIED")
    request_id = str(uuid.uuid4())
    new = NewRequest(request_id, code)
    stack.store.record_queued([new])
    claim = stack.store.claim(new)
    assert claim.may_call
    stack.store.start_attempt(request_id=request_id, run=1, number=1, worker="dead-worker:1")
    age(stack, [request_id])

    result = recover(stack.producer, default_age_seconds(stack.settings), rate_per_second=FAST)

    assert request_id in result.enqueued
    stack.wait([request_id])
    [request] = stack.history(code)
    assert request["status"] == "succeeded"
    assert [(a["run"], a["number"], a["outcome"]) for a in request["attempts"]] == [
        (1, 1, "interrupted"),
        (2, 2, "succeeded"),
    ]
    assert request["replays"][0]["previous_status"] == "in_progress"


def test_progressing_request_untouched(stack: Stack, carrier: SandboxState) -> None:
    code = new_order_code("SLOW")
    carrier.set_order(code, "new", ["latency:4000"])
    [request_id] = stack.enqueue(code)
    deadline = time.monotonic() + 30
    while stack.request(request_id).status != "in_progress" or not stack.attempts(request_id):
        assert time.monotonic() < deadline, "the request never started"
        time.sleep(0.1)
    # The row looks an hour old, but its attempt started a moment ago.
    with stack.store.transaction() as session:
        session.execute(update(CancelRequest).where(CancelRequest.id == request_id).values(updated_at=utcnow() - AN_HOUR))

    result = recover(stack.producer, default_age_seconds(stack.settings), rate_per_second=FAST)

    assert request_id not in result.enqueued
    assert request_id not in [r.request_id for r in result.plan.stuck]
    stack.wait([request_id])
    assert stack.request(request_id).run == 1
    [request] = stack.history(code)
    assert request["replays"] == []
    assert {a["run"] for a in request["attempts"]} == {1}
    assert len(request["attempts"]) == len(stack.carrier_calls(code))


def test_message_in_broker_left_alone(stack: Stack, carrier: SandboxState) -> None:
    """An old request whose message still waits in the queue is a backlog, not a loss."""
    backlog_queue = f"backlog-{uuid.uuid4().hex[:8]}"
    values = {**stack.values, "queue": backlog_queue}
    producer = Producer(load_settings(**values))
    [request_id] = producer.enqueue_many([new_order_code("WAIT")])
    age(stack, [request_id])
    client = redis.Redis.from_url(stack.values["broker_url"])
    try:
        result = run_cli("recover", "--json", env=settings_env(values))
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert request_id in [r["request_id"] for r in report["in_broker"]]
        assert request_id not in [r["request_id"] for r in report["stuck"]]
        assert client.llen(backlog_queue) == 1
        assert stack.request(request_id).run == 1
    finally:
        client.delete(backlog_queue)
        recover(stack.producer, default_age_seconds(stack.settings), rate_per_second=FAST)
    stack.wait([request_id])


def test_dry_run_changes_nothing(stack: Stack, carrier: SandboxState) -> None:
    _, ids = lose_messages(stack, 3, "DRY")
    age(stack, ids)
    client = redis.Redis.from_url(stack.values["broker_url"])
    before = snapshot(stack)
    queued_before = client.llen(stack.settings.queue)

    result = run_cli("recover", "--dry-run", env=settings_env(stack.values) | {"COLUMNS": "200"})

    assert result.returncode == 0, result.stderr
    assert "3 request(s) with no progress" in result.stdout
    assert "(queued 3)" in result.stdout
    assert "dry run: nothing changed" in result.stdout
    assert snapshot(stack) == before
    assert client.llen(stack.settings.queue) == queued_before
    for request_id in ids:
        assert stack.request(request_id).status == "queued"
    recover(stack.producer, default_age_seconds(stack.settings), rate_per_second=FAST)
    stack.wait(ids)


def test_concurrent_recovers_send_once(stack: Stack, carrier: SandboxState) -> None:
    codes, ids = lose_messages(stack, 10, "TWO")
    age(stack, ids)
    barrier = threading.Barrier(2)
    results: list[RecoverResult] = []

    def operator() -> None:
        barrier.wait()
        results.append(recover(stack.producer, default_age_seconds(stack.settings), rate_per_second=FAST))

    threads = [threading.Thread(target=operator) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    first, second = results
    assert set(first.enqueued).isdisjoint(second.enqueued)
    assert sorted(set(first.enqueued + second.enqueued) & set(ids)) == sorted(ids)
    stack.wait(ids)
    for code, request_id in zip(codes, ids, strict=True):
        [request] = stack.history(code)
        assert request["status"] == "succeeded"
        assert len(request["replays"]) == 1
        assert len(stack.carrier_calls(code)) == 1


def test_threshold_below_minimum_refused(stack: Stack) -> None:
    minimum = stack.settings.longest_task_seconds
    result = run_cli("recover", "--older-than", "10", env=settings_env(stack.values))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: --older-than 10 s is too short")
    assert f"give at least {int(minimum) + 1} s" in line

    bad = run_cli("recover", "--older-than", "soon", env=settings_env(stack.values))
    assert bad.returncode == 2
    assert "invalid age 'soon'" in bad.stderr

    with pytest.raises(RecoverError, match="too short"):
        check_age(stack.settings, minimum)
    check_age(stack.settings, minimum + 1)


def test_default_threshold_from_settings() -> None:
    settings = load_settings()
    assert default_age_seconds(settings) == settings.redelivery_bound_seconds + 60
    assert default_age_seconds(settings) > settings.longest_task_seconds
    assert default_age_seconds(load_settings(recover_after_seconds=1234)) == 1234
    assert celery_config(settings)["beat_schedule"] == {}
    schedule = celery_config(load_settings(recover_interval_seconds=120))["beat_schedule"]["cancel247-recover"]
    assert schedule["task"] == RECOVER_TASK_NAME
    assert schedule["schedule"] == 120.0


def test_recover_task_through_worker(stack: Stack, carrier: SandboxState) -> None:
    [code], [request_id] = lose_messages(stack, 1, "TASK")
    age(stack, [request_id])

    stack.producer.app.send_task(RECOVER_TASK_NAME, queue=stack.settings.queue)

    stack.wait([request_id])
    [request] = stack.history(code)
    assert request["status"] == "succeeded"
    assert request["replays"][0]["actor"] == "recover"
    assert "sent again as run 2" in stack.worker.output()


def test_beat_runs_recover(redis_url: str, sandbox, tmp_path: Path, carrier: SandboxState) -> None:  # type: ignore[no-untyped-def]
    """`cancel247 worker -B` with CANCEL247_RECOVER_INTERVAL_SECONDS recovers without anyone asking."""
    database_url = f"sqlite:///{tmp_path / 'beat.sqlite3'}"
    migrate.upgrade(database_url)
    from tests.conftest import WORKER_SETTINGS
    from cancel247.sandbox import DEFAULT_CLIENT_ID, DEFAULT_TOKEN

    values = {
        **WORKER_SETTINGS, "api_url": sandbox.url, "client_id": DEFAULT_CLIENT_ID, "token": DEFAULT_TOKEN,
        "broker_url": redis_url, "database_url": database_url, "queue": f"beat-{uuid.uuid4().hex[:8]}",
        "recover_interval_seconds": 1,
    }
    store = AuditStore(get_engine(database_url))
    lost = Producer(load_settings(**{**values, "queue": "nobody-beat"}))
    code = new_order_code("BEAT")
    [request_id] = lost.enqueue_many([code])
    redis.Redis.from_url(redis_url).delete("nobody-beat")
    with store.transaction() as session:
        session.execute(update(CancelRequest).where(CancelRequest.id == request_id).values(updated_at=utcnow() - AN_HOUR))

    worker = WorkerProcess(settings_env(values), tmp_path / "worker.log", extra_args=["-B", "--schedule", str(tmp_path / "beat-schedule")])
    try:
        worker.wait_ready()
        assert wait_until_final(store, [request_id], timeout_seconds=60, worker=worker), worker.output()[-3000:]
    finally:
        worker.stop()
    assert "Scheduler: Sending due task cancel247-recover" in worker.output()
    with Session(store.engine) as session:
        request = session.get(CancelRequest, request_id)
        assert request is not None
        assert request.status == "succeeded"
        assert request.run == 2
