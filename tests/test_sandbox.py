"""The sandbox speaks the carrier's contract, over real HTTP on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from cancel247.sandbox import DEFAULT_CLIENT_ID, DEFAULT_PASSWORD, DEFAULT_TOKEN, DEFAULT_USERNAME, Sandbox, SandboxState
from cancel247.sandbox.server import FaultRates, validate_fault

HEADERS = {"ClientID": DEFAULT_CLIENT_ID, "Token": DEFAULT_TOKEN, "Content-Type": "application/json"}


@pytest.fixture
def server() -> Iterator[Sandbox]:
    with Sandbox(SandboxState(seed=3, auto_create=False)) as sandbox:
        yield sandbox


def cancel(server: Sandbox, code: object, headers: dict[str, str] = HEADERS) -> requests.Response:
    return requests.post(f"{server.url}/Api/Customer/CancelOrder", json={"OrderCode": code}, headers=headers, timeout=5)


def test_order_lifecycle(server: Sandbox) -> None:
    server.state.set_order("WKH1", "new")
    server.state.set_order("WKH2", "shipped")

    assert cancel(server, "WKH1").json() == {"ErrorCode": "0", "IsError": False, "Errors": [], "ErrorMessage": ""}
    second = cancel(server, "WKH1").json()
    assert (second["ErrorCode"], second["IsError"]) == ("14", True)
    assert second["ErrorMessage"] == "Trạng thái không hợp lệ để xóa."
    assert cancel(server, "WKH2").json()["ErrorCode"] == "14"
    assert cancel(server, "UNKNOWN").json()["ErrorCode"] == "13"
    assert cancel(server, "").json()["ErrorCode"] == "15"


def test_login_issues_token(server: Sandbox) -> None:
    reply = requests.post(
        f"{server.url}/api/Client/ClientLogin", json={"UserName": DEFAULT_USERNAME, "Password": DEFAULT_PASSWORD}, timeout=5
    ).json()
    assert reply["ClientID"] == int(DEFAULT_CLIENT_ID)
    assert len(reply["Token"]) == 64
    server.state.set_order("WKH3", "new")
    headers = dict(HEADERS, Token=reply["Token"])
    assert cancel(server, "WKH3", headers).json()["ErrorCode"] == "0"


def test_wrong_login_body(server: Sandbox) -> None:
    reply = requests.post(
        f"{server.url}/api/Client/ClientLogin", json={"UserName": "x", "Password": "y"}, timeout=5
    ).json()
    assert reply["ClientID"] == 0
    assert reply["Token"] is None
    assert reply["Errors"][0]["ErrorMessage"] == reply["ErrorMessage"]


def test_wrong_token_401(server: Sandbox) -> None:
    response = cancel(server, "WKH1", dict(HEADERS, Token="f" * 64))
    assert response.status_code == 401


def test_faults_in_sequence(server: Sandbox) -> None:
    server.state.set_order("WKH4", "new", ["code6", "http429:2", "html502", "truncated"])
    first = cancel(server, "WKH4")
    assert first.json()["ErrorCode"] == "6"
    second = cancel(server, "WKH4")
    assert (second.status_code, second.headers["Retry-After"]) == (429, "2")
    third = cancel(server, "WKH4")
    assert third.status_code == 502
    assert "Bad Gateway" in third.text
    fourth = cancel(server, "WKH4")
    with pytest.raises(ValueError):
        fourth.json()
    assert server.state.order_state("WKH4") == "cancelled"


def test_call_log_has_no_secrets(server: Sandbox) -> None:
    server.state.set_order("WKH5", "new")
    cancel(server, "WKH5")
    requests.post(f"{server.url}/api/Client/ClientLogin", json={"UserName": DEFAULT_USERNAME, "Password": DEFAULT_PASSWORD}, timeout=5)
    log = requests.get(f"{server.url}/_sandbox/calls", timeout=5).json()["calls"]
    assert [c["path"] for c in log] == ["CancelOrder", "ClientLogin"]
    assert log[0]["order_code"] == "WKH5"
    text = str(log)
    assert DEFAULT_TOKEN not in text
    assert DEFAULT_PASSWORD not in text


def test_admin_orders_and_config(server: Sandbox) -> None:
    response = requests.post(f"{server.url}/_sandbox/orders", json={"WKH6": {"state": "new", "faults": ["code:16"]}}, timeout=5)
    assert response.status_code == 200
    assert cancel(server, "WKH6").json()["ErrorCode"] == "16"
    requests.post(f"{server.url}/_sandbox/config", json={"outage": True}, timeout=5)
    assert cancel(server, "WKH6").json()["ErrorCode"] == "6"
    bad = requests.post(f"{server.url}/_sandbox/orders", json={"WKH7": {"faults": ["explode"]}}, timeout=5)
    assert bad.status_code == 400
    assert "unknown sandbox fault 'explode'" in bad.json()["Message"]


def test_seeded_rates_repeat() -> None:
    def draws() -> list[str]:
        state = SandboxState(seed=42, rates=FaultRates(code6_rate=0.3, http5xx_rate=0.2))
        return [state._next_fault(None) for _ in range(50)]

    first, second = draws(), draws()
    assert first == second
    assert {"code6", "html502", "ok"} <= set(first)


@pytest.mark.parametrize("fault", ["nope", "code:", "latency:x", "hang:soon"])
def test_unknown_fault_refused(fault: str) -> None:
    with pytest.raises(ValueError, match="sandbox fault"):
        validate_fault(fault)
