"""Raw messages from a careless non-Python producer, pushed straight onto the worker's Redis list.

Each bad message must give one log line, an ``invalid`` request when it has a
request id, and nothing left in the queue or the unacknowledged set. The
worker keeps running and still processes a valid request afterwards.
"""

from __future__ import annotations

import base64
import json
import pickle
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis

from cancel247.audit.models import ORDER_CODE_COLUMN_LENGTH
from cancel247.audit.store import MAX_DETAIL_LENGTH
from cancel247.sandbox import SandboxState
from cancel247.worker.app import TASK_NAME
from tests.conftest import Stack, new_order_code

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

REJECTED = "message rejected and deleted"
LOG_WAIT_SECONDS = 30
FIVE_MB = 5 * 1024 * 1024


def envelope(
    body: bytes,
    queue: str,
    *,
    content_type: str = "application/json",
    headers: dict[str, Any] | None = None,
    drop: tuple[str, ...] = (),
) -> tuple[str, str]:
    """Return (request id, kombu JSON envelope) as the README documents it."""
    request_id = str(uuid.uuid4())
    merged = {
        "lang": "py", "task": TASK_NAME, "id": request_id, "root_id": request_id, "parent_id": None,
        "group": None, "retries": 0, "eta": None, "expires": None, **(headers or {}),
    }
    for name in drop:
        merged.pop(name, None)
    data = {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": content_type,
        "headers": merged,
        "properties": {
            "correlation_id": request_id,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return request_id, json.dumps(data)


def celery_body(args: Any, kwargs: Any, embed: Any = None) -> bytes:
    return json.dumps([args, kwargs, embed or {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]).encode()


def rejection_lines(stack: Stack) -> list[str]:
    return [line for line in stack.worker.output().splitlines() if REJECTED in line]


def wait_for(condition: Callable[[], bool], what: str, stack: Stack, timeout: float = LOG_WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        assert stack.worker.process.poll() is None, f"worker exited:\n{stack.worker.output()[-3000:]}"
        time.sleep(0.2)
    pytest.fail(f"{what} not seen after {timeout} s; worker log:\n{stack.worker.output()[-3000:]}")


def assert_queue_clean(stack: Stack, client: redis.Redis, request_id: str | None) -> None:
    assert client.llen(stack.settings.queue) == 0
    if request_id is not None:
        held = [v for v in client.hvals("unacked") if request_id.encode() in v]
        assert held == [], "the message is still held unacknowledged"


def assert_worker_still_works(stack: Stack) -> None:
    [request_id] = stack.enqueue(new_order_code("AFT"))
    stack.wait([request_id])
    assert stack.request(request_id).status == "succeeded"


# Envelope-level cases: Celery itself cannot use these messages.
ENVELOPE_CASES: dict[str, tuple[Callable[[str], tuple[str | None, str]], str]] = {
    "unknown task": (
        lambda q: envelope(celery_body([], {"order_code": "WKH1"}), q, headers={"task": "shop.tasks.cancel"}),
        "unknown task 'shop.tasks.cancel'",
    ),
    "pickle": (
        lambda q: envelope(pickle.dumps(([], {"order_code": "WKH1"}, {})), q, content_type="application/x-python-serialize"),
        "content type 'application/x-python-serialize' is not accepted; send JSON",
    ),
    "malformed json": (
        lambda q: envelope(b'[[], {"order_code": "WKH1"', q),
        "body is not valid 'application/json'",
    ),
    "plain text body": (
        lambda q: envelope(b"cancel WKH1 please", q, content_type="text/plain"),
        "content type 'text/plain' is not accepted",
    ),
    "object body": (
        lambda q: envelope(json.dumps({"order_code": "WKH1"}).encode(), q),
        "body is not the JSON array [args, kwargs, embed]",
    ),
    "kwargs not object": (
        lambda q: envelope(celery_body([], "WKH1"), q),
        "kwargs (body[1]) is not a JSON object",
    ),
    "id not uuid": (
        lambda q: envelope(celery_body([], {"order_code": "WKH1"}), q, headers={"id": "order-WKH1-" + "x" * 40}),
        "'id' header 'order-WKH1-xxxxxxxx",
    ),
    "missing task header": (
        lambda q: envelope(celery_body([], {"order_code": "WKH1"}), q, drop=("task",)),
        "no 'task' header",
    ),
    "bad eta": (
        lambda q: envelope(celery_body([], {"order_code": "WKH1"}), q, headers={"eta": "tomorrow"}),
        "invalid task message: \"invalid ETA value 'tomorrow'",
    ),
}


@pytest.mark.parametrize("case", list(ENVELOPE_CASES))
def test_envelope_rejected_once(stack: Stack, carrier: SandboxState, case: str) -> None:
    build, expected = ENVELOPE_CASES[case]
    client = redis.Redis.from_url(stack.values["broker_url"])
    request_id, data = build(stack.settings.queue)
    before = len(rejection_lines(stack))

    client.lpush(stack.settings.queue, data)
    wait_for(lambda: len(rejection_lines(stack)) > before, "the rejection line", stack)

    [line] = rejection_lines(stack)[before:]
    assert expected in line
    assert "Traceback" not in stack.worker.output()
    assert_queue_clean(stack, client, request_id)
    if case != "id not uuid":
        request = stack.request(request_id)
        assert request.status == "invalid"
        assert expected in (request.detail or "")
        assert stack.attempts(request_id) == []
    # No redelivery: still one line after the worker had time to see it again.
    time.sleep(1.0)
    assert len(rejection_lines(stack)) == before + 1
    assert_worker_still_works(stack)


def test_missing_id_header_logged(stack: Stack, carrier: SandboxState) -> None:
    client = redis.Redis.from_url(stack.values["broker_url"])
    code = new_order_code("NOID")
    _, data = envelope(celery_body([], {"order_code": code}), stack.settings.queue, drop=("id",))
    before = len(rejection_lines(stack))

    client.lpush(stack.settings.queue, data)
    wait_for(lambda: len(rejection_lines(stack)) > before, "the rejection line", stack)

    [line] = rejection_lines(stack)[before:]
    assert "request=- " in line
    assert "no 'id' header; set it to a new UUID" in line
    assert "no request id, not recorded" in line
    assert_queue_clean(stack, client, None)
    assert stack.history(code) == []
    assert stack.carrier_calls(code) == []
    assert_worker_still_works(stack)


@pytest.mark.parametrize("item", ["this is not json", json.dumps({"body": "x"}), "[1, 2, 3]"])
def test_non_envelope_item_dropped(stack: Stack, carrier: SandboxState, item: str) -> None:
    client = redis.Redis.from_url(stack.values["broker_url"])
    before = len(rejection_lines(stack))

    client.lpush(stack.settings.queue, item)
    wait_for(lambda: len(rejection_lines(stack)) > before, "the rejection line", stack)

    [line] = rejection_lines(stack)[before:]
    assert "a queue item is not a kombu JSON envelope" in line
    assert stack.worker.process.poll() is None
    assert client.llen(stack.settings.queue) == 0
    assert_worker_still_works(stack)


# Task-level cases: a well-formed Celery message whose kwargs are unusable.
TASK_CASES: dict[str, tuple[list[Any], dict[str, Any], str]] = {
    "missing kwargs": ([], {}, "order_code: Field required"),
    "extra kwargs": ([], {"order_code": "WKH0003", "priority": "high"}, "priority: Extra inputs are not permitted"),
    "wrong types": ([], {"order_code": "WKH0004", "reason": 12, "enqueued_at": "yesterday"}, "reason: Input should be a valid string"),
    "invalid order code": ([], {"order_code": "WKH 0005"}, "contains whitespace"),
    "args instead of kwargs": (["WKH0006", "customer cancelled"], {}, "positional arguments are not accepted"),
}


@pytest.mark.parametrize("case", list(TASK_CASES))
def test_bad_kwargs_recorded_invalid(stack: Stack, carrier: SandboxState, case: str) -> None:
    args, kwargs, expected = TASK_CASES[case]
    client = redis.Redis.from_url(stack.values["broker_url"])
    request_id, data = envelope(celery_body(args, kwargs), stack.settings.queue)

    client.lpush(stack.settings.queue, data)
    stack.wait([request_id])

    request = stack.request(request_id)
    assert request.status == "invalid"
    assert expected in (request.detail or "")
    assert stack.attempts(request_id) == []
    lines = [line for line in stack.worker.output().splitlines() if f"request={request_id} rejected as invalid" in line]
    assert len(lines) == 1
    assert expected in lines[0]
    if case == "args instead of kwargs":
        assert request.order_code == "WKH0006"
    assert_queue_clean(stack, client, request_id)


def test_huge_order_code_cut_with_marker(stack: Stack, carrier: SandboxState) -> None:
    client = redis.Redis.from_url(stack.values["broker_url"])
    code = "W" * FIVE_MB
    request_id, data = envelope(celery_body([], {"order_code": code}), stack.settings.queue)

    client.lpush(stack.settings.queue, data)
    stack.wait([request_id])

    request = stack.request(request_id)
    assert request.status == "invalid"
    assert f"is {FIVE_MB} characters long; the maximum is 50" in (request.detail or "")
    assert len(request.order_code) == ORDER_CODE_COLUMN_LENGTH
    assert request.order_code.endswith(f"...[truncated, {FIVE_MB} chars]")
    [line] = [line for line in stack.worker.output().splitlines() if f"request={request_id}" in line and "invalid" in line]
    assert len(line) < 1000
    assert_queue_clean(stack, client, request_id)
    assert_worker_still_works(stack)


def test_huge_reason_cut_with_marker(stack: Stack, carrier: SandboxState) -> None:
    client = redis.Redis.from_url(stack.values["broker_url"])
    code = new_order_code("BIG")
    request_id, data = envelope(celery_body([], {"order_code": code, "reason": "r" * FIVE_MB, "source": "s" * 5000}), stack.settings.queue)

    client.lpush(stack.settings.queue, data)
    stack.wait([request_id])

    request = stack.request(request_id)
    assert request.status == "invalid"
    assert "reason: String should have at most 1000 characters" in (request.detail or "")
    assert request.reason is not None
    assert len(request.reason) == 1000
    assert request.reason.endswith(f"...[truncated, {FIVE_MB} chars]")
    assert request.source is not None
    assert len(request.source) == 100
    assert request.source.endswith("...[truncated, 5000 chars]")
    assert stack.carrier_calls(code) == []
    assert_worker_still_works(stack)


def test_many_extra_keys_short_reason(stack: Stack, carrier: SandboxState) -> None:
    kwargs: dict[str, Any] = {"order_code": new_order_code("KEY")}
    kwargs.update({f"k{i}-" + "x" * 10_000: i for i in range(500)})
    request_id, data = envelope(celery_body([], kwargs), stack.settings.queue)

    redis.Redis.from_url(stack.values["broker_url"]).lpush(stack.settings.queue, data)
    stack.wait([request_id])

    detail = stack.request(request_id).detail or ""
    assert "Extra inputs are not permitted" in detail
    assert "... and 495 more" in detail
    assert len(detail) <= MAX_DETAIL_LENGTH
    [line] = [line for line in stack.worker.output().splitlines() if f"request={request_id} rejected as invalid" in line]
    assert len(line) < 2000
