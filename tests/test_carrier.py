"""Classification of carrier replies, and the client against the sandbox."""

from __future__ import annotations

import socket
import threading

import pytest
import requests

from cancel247.carrier.client import CarrierClient, classify_cancel_response, classify_exception
from cancel247.carrier.errors import LoginError, Outcome, normalise_code
from cancel247.config import load_settings
from cancel247.sandbox import DEFAULT_CLIENT_ID, DEFAULT_PASSWORD, DEFAULT_TOKEN, DEFAULT_USERNAME, Sandbox, SandboxState
from cancel247.sandbox.server import FaultRates

JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("status", "body", "outcome", "code"),
    [
        (200, b'{"ErrorCode": "0", "IsError": false, "Errors": [], "ErrorMessage": ""}', Outcome.SUCCEEDED, "0"),
        (200, b'{"ErrorCode": 0, "IsError": false}', Outcome.SUCCEEDED, "0"),
        (200, b'{"ErrorCode": "0", "IsError": true}', Outcome.AMBIGUOUS, "0"),
        (200, b'{"ErrorCode": "6", "IsError": true}', Outcome.TRANSIENT, "6"),
        (200, b'{"ErrorCode": 6, "IsError": true}', Outcome.TRANSIENT, "6"),
        (200, b'{"ErrorCode": "12", "IsError": true}', Outcome.AUTH, "12"),
        (200, b'{"ErrorCode": 13, "IsError": true}', Outcome.PERMANENT, "13"),
        (200, b'{"ErrorCode": "14", "IsError": "true"}', Outcome.PERMANENT, "14"),
        (400, b'{"ErrorCode": "15", "IsError": true}', Outcome.PERMANENT, "15"),
        (200, b'{"ErrorCode": "16", "IsError": true}', Outcome.PERMANENT, "16"),
        (200, b'{"ErrorCode": "77", "IsError": true}', Outcome.PERMANENT, "77"),
        (500, b'{"ErrorCode": "6", "IsError": true}', Outcome.TRANSIENT, "6"),
        (200, b'{"IsError": true}', Outcome.AMBIGUOUS, None),
        (200, b"<html>maintenance</html>", Outcome.AMBIGUOUS, None),
        (200, b"", Outcome.AMBIGUOUS, None),
        (200, b'{"ErrorCode": "0", "IsErr', Outcome.AMBIGUOUS, None),
        (502, b"<html>502 Bad Gateway</html>", Outcome.AMBIGUOUS, None),
        (500, b"", Outcome.AMBIGUOUS, None),
        (503, b"Service Unavailable", Outcome.TRANSIENT, None),
        (429, b"", Outcome.TRANSIENT, None),
        (401, b'{"Message": "denied"}', Outcome.AUTH, None),
        (403, b"", Outcome.AUTH, None),
        (404, b"<html>not found</html>", Outcome.PERMANENT, None),
        (408, b"", Outcome.TRANSIENT, None),
    ],
)
def test_classify_reply(status: int, body: bytes, outcome: Outcome, code: str | None) -> None:
    reply = classify_cancel_response(status, JSON, body)
    assert reply.outcome == outcome
    assert reply.error_code == code
    assert reply.http_status == status


def test_classify_keeps_vietnamese_message() -> None:
    body = '{"ErrorCode": "14", "IsError": true, "Errors": [], "ErrorMessage": "Trạng thái không hợp lệ để xóa."}'
    reply = classify_cancel_response(200, JSON, body.encode("utf-8"))
    assert reply.message == "Trạng thái không hợp lệ để xóa."


def test_classify_joins_errors_list() -> None:
    body = '{"ErrorCode": "16", "IsError": true, "Errors": [{"ErrorMessage": "Một"}, {"ErrorMessage": "Hai"}], "ErrorMessage": ""}'
    reply = classify_cancel_response(200, JSON, body.encode("utf-8"))
    assert reply.message == "Một | Hai"


def test_classify_html_keeps_excerpt() -> None:
    page = b"<html><title>502 Bad Gateway</title>" + b"x" * 5000
    reply = classify_cancel_response(502, {"Content-Type": "text/html"}, page)
    assert reply.body_excerpt is not None
    assert reply.body_excerpt.startswith("<html><title>502 Bad Gateway")
    assert len(reply.body_excerpt) == 200


@pytest.mark.parametrize(
    ("header", "expected"),
    [("3", 3.0), ("0", 0.0), (None, None), ("soon", None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)
def test_retry_after_parsed(header: str | None, expected: float | None) -> None:
    headers = {"Retry-After": header} if header is not None else {}
    reply = classify_cancel_response(429, headers, b"")
    assert reply.retry_after_seconds == expected


@pytest.mark.parametrize(("raw", "expected"), [("6", "6"), (6, "6"), (6.0, "6"), (" 14 ", "14"), ("06", "6"), (None, None), (True, None), ("X1", "X1")])
def test_normalise_code(raw: object, expected: str | None) -> None:
    assert normalise_code(raw) == expected


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_connection_refused_is_not_sent() -> None:
    with pytest.raises(requests.ConnectionError) as caught:
        requests.post(f"http://127.0.0.1:{closed_port()}/", timeout=1)
    reply = classify_exception(caught.value, read_timeout_seconds=1)
    assert reply.outcome == Outcome.TRANSIENT
    assert "not sent" in (reply.detail or "")


def test_connect_timeout_is_not_sent() -> None:
    reply = classify_exception(requests.ConnectTimeout("timed out"), read_timeout_seconds=1)
    assert reply.outcome == Outcome.TRANSIENT


@pytest.fixture
def sandbox() -> SandboxState:
    state = SandboxState(rates=FaultRates(hang_seconds=1.0))
    with Sandbox(state) as server:
        state.url = server.url  # type: ignore[attr-defined]
        yield state


def client_for(state: SandboxState, **credentials: str) -> CarrierClient:
    settings = load_settings(api_url=state.url, read_timeout_seconds=0.3, connect_timeout_seconds=1, **credentials)  # type: ignore[attr-defined]
    return CarrierClient(settings)


def test_read_timeout_is_ambiguous(sandbox: SandboxState) -> None:
    sandbox.set_order("WKH1", "new", ["hang"])
    client = client_for(sandbox, client_id=DEFAULT_CLIENT_ID, token=DEFAULT_TOKEN)
    reply = client.cancel_order("WKH1", client.credentials())
    assert reply.outcome == Outcome.AMBIGUOUS
    assert "read timeout" in (reply.detail or "")
    assert sandbox.order_state("WKH1") == "cancelled"


def test_login_then_token_cached(sandbox: SandboxState) -> None:
    client = client_for(sandbox, username=DEFAULT_USERNAME, password=DEFAULT_PASSWORD)
    first = client.credentials()
    second = client.credentials()
    assert first is second
    assert first.client_id == DEFAULT_CLIENT_ID
    assert len(sandbox.calls(path="ClientLogin")) == 1
    assert client.cancel_order("WKH2", first).outcome == Outcome.SUCCEEDED


def test_wrong_password_is_auth_with_message(sandbox: SandboxState) -> None:
    client = client_for(sandbox, username=DEFAULT_USERNAME, password="wrong-password")
    with pytest.raises(LoginError) as caught:
        client.credentials()
    assert caught.value.reply.outcome == Outcome.AUTH
    assert caught.value.reply.message == "Tên đăng nhập hoặc mật khẩu không đúng."
    assert "wrong-password" not in str(caught.value)


def test_relogin_shared_by_threads(sandbox: SandboxState) -> None:
    client = client_for(sandbox, client_id=DEFAULT_CLIENT_ID, token="0" * 64, username=DEFAULT_USERNAME, password=DEFAULT_PASSWORD)
    stale = client.credentials()
    results = []

    def relogin() -> None:
        results.append(client.relogin(stale))

    threads = [threading.Thread(target=relogin) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(sandbox.calls(path="ClientLogin")) == 1
    assert len({r.token for r in results}) == 1


def test_no_retry_inside_requests(sandbox: SandboxState) -> None:
    sandbox.set_order("WKH3", "new", ["html502"])
    client = client_for(sandbox, client_id=DEFAULT_CLIENT_ID, token=DEFAULT_TOKEN)
    reply = client.cancel_order("WKH3", client.credentials())
    assert reply.http_status == 502
    assert len(sandbox.calls(path="CancelOrder", order_code="WKH3")) == 1


def test_pool_sized_to_concurrency(sandbox: SandboxState) -> None:
    settings = load_settings(api_url=sandbox.url, client_id=DEFAULT_CLIENT_ID, token=DEFAULT_TOKEN, concurrency=24)  # type: ignore[attr-defined]
    client = CarrierClient(settings)
    adapter = client._session.get_adapter(sandbox.url)  # type: ignore[attr-defined]
    assert adapter._pool_maxsize == 24
    assert adapter.max_retries.total == 0
