"""End to end through the real worker, real Redis, and PostgreSQL or SQLite.

In every scenario the number of attempt rows equals the number of CancelOrder
calls in the sandbox's log.
"""

from __future__ import annotations

import base64
import json
import uuid

import pytest
import redis

from cancel247.retry import RetryPolicy
from cancel247.sandbox import SandboxState
from cancel247.worker.app import TASK_NAME
from tests.conftest import Stack, new_order_code

pytestmark = pytest.mark.integration


def run_one(stack: Stack, carrier: SandboxState, faults: list[str], *, state: str = "new") -> tuple[str, str]:
    code = new_order_code()
    carrier.set_order(code, state, faults)
    [request_id] = stack.enqueue(code)
    stack.wait([request_id])
    return code, request_id


def assert_rows_match_calls(stack: Stack, code: str, expected_calls: int) -> None:
    calls = stack.carrier_calls(code)
    assert len(calls) == expected_calls
    assert stack.attempt_rows_for(code) == len(calls)


def test_success_one_call(stack: Stack, carrier: SandboxState) -> None:
    code, request_id = run_one(stack, carrier, [])

    request = stack.request(request_id)
    assert request.status == "succeeded"
    assert request.error_code == "0"
    [attempt] = stack.attempts(request_id)
    assert attempt.outcome == "succeeded"
    assert attempt.http_status == 200
    assert attempt.finished_at is not None and attempt.finished_at >= attempt.started_at
    assert attempt.duration_ms is not None and attempt.duration_ms > 0
    assert carrier.order_state(code) == "cancelled"
    assert_rows_match_calls(stack, code, 1)


def test_code6_twice_then_success(stack: Stack, carrier: SandboxState) -> None:
    code, request_id = run_one(stack, carrier, ["code6", "code6"])

    assert stack.request(request_id).status == "succeeded"
    attempts = stack.attempts(request_id)
    assert [a.number for a in attempts] == [1, 2, 3]
    assert [a.outcome for a in attempts] == ["transient", "transient", "succeeded"]
    assert [a.error_code for a in attempts] == ["6", "6", "0"]
    assert attempts[0].message == "Có lỗi xảy ra trong quá trình xử lý."
    policy = RetryPolicy.from_settings(stack.settings)
    # Full jitter: each wait lies in a window whose upper bound doubles.
    assert policy.backoff_cap_seconds(2) > policy.backoff_cap_seconds(1)
    for attempt in attempts[:2]:
        assert attempt.wait_seconds is not None
        assert policy.min_seconds <= attempt.wait_seconds <= policy.backoff_cap_seconds(attempt.number)
    assert attempts[2].wait_seconds is None
    assert_rows_match_calls(stack, code, 3)


@pytest.mark.parametrize(
    ("state", "faults", "expected_code"),
    [
        ("missing", [], "13"),
        ("shipped", [], "14"),
        ("new", ["code:15"], "15"),
        ("invalid", [], "16"),
        ("new", ["code:99"], "99"),
    ],
)
def test_permanent_code_one_call(
    stack: Stack, carrier: SandboxState, state: str, faults: list[str], expected_code: str
) -> None:
    code, request_id = run_one(stack, carrier, faults, state=state)

    request = stack.request(request_id)
    assert request.status == "rejected"
    assert request.error_code == expected_code
    [attempt] = stack.attempts(request_id)
    assert attempt.outcome == "permanent"
    assert attempt.error_code == expected_code
    assert attempt.message
    assert_rows_match_calls(stack, code, 1)


def test_always_code6_exhausts_attempts(stack: Stack, carrier: SandboxState) -> None:
    attempts_allowed = stack.settings.retry_max_attempts
    code, request_id = run_one(stack, carrier, ["code6"] * (attempts_allowed + 3))

    request = stack.request(request_id)
    assert request.status == "failed"
    assert request.error_code == "6"
    assert "retries exhausted" in (request.detail or "")
    attempts = stack.attempts(request_id)
    assert len(attempts) == attempts_allowed
    assert all(a.outcome == "transient" for a in attempts)
    assert_rows_match_calls(stack, code, attempts_allowed)


def test_read_timeout_then_14_is_uncertain(stack: Stack, carrier: SandboxState) -> None:
    code, request_id = run_one(stack, carrier, ["hang"])

    request = stack.request(request_id)
    assert request.status == "uncertain"
    assert request.error_code == "14"
    first, second = stack.attempts(request_id)
    assert first.outcome == "ambiguous"
    assert first.http_status is None
    assert "read timeout" in (first.detail or "")
    assert second.outcome == "permanent"
    assert second.error_code == "14"
    assert carrier.order_state(code) == "cancelled"
    assert_rows_match_calls(stack, code, 2)


def test_html_502_then_success(stack: Stack, carrier: SandboxState) -> None:
    code, request_id = run_one(stack, carrier, ["html502"])

    assert stack.request(request_id).status == "succeeded"
    first, second = stack.attempts(request_id)
    assert first.http_status == 502
    assert first.outcome == "ambiguous"
    assert "502 Bad Gateway" in (first.body_excerpt or "")
    assert second.outcome == "succeeded"
    assert_rows_match_calls(stack, code, 2)


def test_iserror_with_numeric_code(stack: Stack, carrier: SandboxState) -> None:
    code, request_id = run_one(stack, carrier, ["iserror:16"])

    request = stack.request(request_id)
    assert request.status == "rejected"
    [attempt] = stack.attempts(request_id)
    assert attempt.http_status == 200
    assert attempt.error_code == "16"
    assert attempt.message == "Đơn hàng không hợp lệ."
    assert_rows_match_calls(stack, code, 1)


def test_same_order_twice_one_call(stack: Stack, carrier: SandboxState) -> None:
    code = new_order_code()
    first_id, second_id = stack.enqueue(code, code)
    stack.wait([first_id, second_id])

    statuses = sorted([stack.request(first_id).status, stack.request(second_id).status])
    assert statuses == ["duplicate", "succeeded"]
    duplicate = next(stack.request(i) for i in (first_id, second_id) if stack.request(i).status == "duplicate")
    winner = first_id if duplicate.id == second_id else second_id
    assert duplicate.duplicate_of == winner
    assert stack.attempts(duplicate.id) == []
    assert_rows_match_calls(stack, code, 1)


def test_two_failing_orders_keep_own_numbers(stack: Stack, carrier: SandboxState) -> None:
    codes = [new_order_code(), new_order_code()]
    carrier.configure(latency_ms=100)
    for code in codes:
        carrier.set_order(code, "new", ["code6", "code6", "code6"])
    ids = stack.enqueue(*codes)
    stack.wait(ids)

    windows = []
    for code, request_id in zip(codes, ids, strict=True):
        attempts = stack.attempts(request_id)
        assert [a.number for a in attempts] == [1, 2, 3, 4]
        assert {a.request_id for a in attempts} == {request_id}
        assert stack.request(request_id).status == "succeeded"
        assert_rows_match_calls(stack, code, 4)
        windows.append((attempts[0].started_at, attempts[-1].finished_at))
    # Both ran at the same time in one worker, so their windows overlap.
    assert windows[0][0] < windows[1][1]
    assert windows[1][0] < windows[0][1]


def test_wrong_token_relogin_once(stack: Stack, carrier: SandboxState) -> None:
    carrier.expire_tokens()
    logins_before = len(carrier.calls(path="ClientLogin"))
    code, request_id = run_one(stack, carrier, [])

    request = stack.request(request_id)
    assert request.status == "succeeded"
    first, second = stack.attempts(request_id)
    assert first.outcome == "auth"
    assert first.http_status == 401
    assert first.wait_seconds == 0
    assert second.outcome == "succeeded"
    assert len(carrier.calls(path="ClientLogin")) == logins_before + 1
    assert_rows_match_calls(stack, code, 2)


def test_retry_after_is_honoured(stack: Stack, carrier: SandboxState) -> None:
    code, request_id = run_one(stack, carrier, ["http429:1", "http429"])

    assert stack.request(request_id).status == "succeeded"
    first, second, third = stack.attempts(request_id)
    assert (first.http_status, first.outcome) == (429, "transient")
    assert first.wait_seconds is not None and first.wait_seconds >= 1
    assert (second.http_status, second.outcome) == (429, "transient")
    assert second.wait_seconds is not None and second.wait_seconds < 1
    assert third.outcome == "succeeded"
    assert_rows_match_calls(stack, code, 3)


@pytest.mark.parametrize("fault", ["truncated", "empty", "html"])
def test_unreadable_200_then_14_is_uncertain(stack: Stack, carrier: SandboxState, fault: str) -> None:
    code, request_id = run_one(stack, carrier, [fault])

    assert stack.request(request_id).status == "uncertain"
    first, second = stack.attempts(request_id)
    assert first.outcome == "ambiguous"
    assert first.http_status == 200
    assert second.error_code == "14"
    assert_rows_match_calls(stack, code, 2)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"order_code": "WKH 0001"}, "whitespace"),
        ({"ordercode": "WKH0002"}, "order_code: Field required"),
        ({"order_code": 12345}, "order_code: Input should be a valid string"),
        ({"order_code": "WKH0003", "priority": "high"}, "priority: Extra inputs are not permitted"),
    ],
)
def test_bad_message_recorded_invalid(stack: Stack, carrier: SandboxState, kwargs: dict, expected: str) -> None:
    result = stack.producer.app.send_task(TASK_NAME, kwargs=kwargs, queue=stack.settings.queue)
    request_id = str(result.id)
    stack.wait([request_id])

    request = stack.request(request_id)
    assert request.status == "invalid"
    assert expected in (request.detail or "")
    assert stack.attempts(request_id) == []


def test_hand_built_message_as_documented(stack: Stack, carrier: SandboxState) -> None:
    """A producer in another language pushes the JSON envelope the README documents."""
    code = new_order_code("PHP")
    request_id = str(uuid.uuid4())
    body = [[], {"order_code": code, "reason": "khách hủy", "source": "php-shop"}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    envelope = {
        "body": base64.b64encode(json.dumps(body).encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py", "task": TASK_NAME, "id": request_id, "root_id": request_id, "parent_id": None,
            "group": None, "retries": 0, "eta": None, "expires": None,
        },
        "properties": {
            "correlation_id": request_id,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": stack.settings.queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    redis.Redis.from_url(stack.values["broker_url"]).lpush(stack.settings.queue, json.dumps(envelope))
    stack.wait([request_id])

    request = stack.request(request_id)
    assert request.status == "succeeded"
    assert request.reason == "khách hủy"
    assert request.source == "php-shop"
    assert_rows_match_calls(stack, code, 1)
