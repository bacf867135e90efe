"""A local HTTP server that speaks the carrier's contract, with scriptable faults.

It serves ``POST /api/Client/ClientLogin`` and ``POST /Api/Customer/CancelOrder``
as the carrier documents them. A new order can be cancelled once. A cancelled
or shipped order returns code 14, and an unknown one code 13. Faults come at
a seeded random rate or per order, in sequence. Every call received is
recorded, without tokens or passwords.

Faults, per order (consumed one per CancelOrder call) or named in options:

=================  ===========================================================
``ok``             normal processing
``code6``          HTTP 200, ``IsError`` true, ErrorCode "6"
``code:N``         HTTP 200, ``IsError`` true, ErrorCode "N" (string)
``iserror:N``      HTTP 200, ``IsError`` true, ErrorCode N (number)
``http5xx:S``      HTTP S (500, 502, 504...) with a JSON-less HTML page
``html502``        HTTP 502 with a proxy's HTML error page
``http503``        HTTP 503 with a short text body
``http429``        HTTP 429, no Retry-After; ``http429:N`` adds Retry-After: N
``html``           HTTP 200 with an HTML body
``empty``          HTTP 200 with an empty body
``truncated``      HTTP 200 with JSON cut off half-way
``hang``           apply the cancel, then stall ``hang_seconds`` before replying
``latency:MS``     wait MS milliseconds, then process normally
``unauthorized``   HTTP 401 as if the token were wrong
=================  ===========================================================

Admin endpoints for tests and demos (JSON): ``GET /_sandbox/calls``,
``POST /_sandbox/orders`` ({code: {"state": ..., "faults": [...]}}),
``POST /_sandbox/config`` (fault rates), ``POST /_sandbox/expire-tokens``,
``POST /_sandbox/reset``, ``GET /_sandbox/health``.
"""

from __future__ import annotations

import json
import logging
import random
import secrets
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cancel247.carrier.errors import CATALOGUE

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_USERNAME = "sandbox"
DEFAULT_PASSWORD = "sandbox-password"
DEFAULT_CLIENT_ID = "2876"
# Fixed credentials the sandbox always accepts, for CANCEL247_CLIENT_ID/TOKEN.
DEFAULT_TOKEN = "5a4d" * 16
DEFAULT_HANG_SECONDS = 30.0
# A body larger than this is refused with 413 instead of being read.
MAX_BODY_BYTES = 64 * 1024

ORDER_STATES = ("new", "cancelled", "shipped", "missing", "invalid")
LOGIN_FAILED_MESSAGE = "Tên đăng nhập hoặc mật khẩu không đúng."
UNKNOWN_CODE_MESSAGE = "Lỗi không xác định."
PROXY_HTML = (
    "<html><head><title>502 Bad Gateway</title></head><body>"
    "<center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
)


@dataclass
class FaultRates:
    """Global faults, each drawn per CancelOrder call from the seeded generator."""

    code6_rate: float = 0.0
    http5xx_rate: float = 0.0
    http429_rate: float = 0.0
    html_rate: float = 0.0
    truncated_rate: float = 0.0
    hang_rate: float = 0.0
    latency_ms: float = 0.0
    hang_seconds: float = DEFAULT_HANG_SECONDS
    outage: bool = False

    def update(self, values: dict[str, Any]) -> None:
        known = {f.name: f.type for f in fields(self)}
        for name, value in values.items():
            if name not in known:
                raise ValueError(f"unknown sandbox setting {name!r}; known: {', '.join(sorted(known))}")
            setattr(self, name, bool(value) if name == "outage" else float(value))


@dataclass
class Order:
    state: str = "new"
    faults: deque[str] = field(default_factory=deque)


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    error_code: str | None = None
    delay_seconds: float = 0.0


def _json(status: int, payload: dict[str, Any], **extra: Any) -> Reply:
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return Reply(status, body, **extra)


def carrier_error(code: str, *, numeric: bool = False, status: int = 200) -> Reply:
    """Build the carrier's error reply for ``code``, with its Vietnamese message."""
    known = CATALOGUE.get(code)
    message = known.text_vi if known else UNKNOWN_CODE_MESSAGE
    payload = {
        "ErrorCode": int(code) if numeric else code,
        "IsError": True,
        "Errors": [{"ErrorMessage": message, "PropertyName": None}],
        "ErrorMessage": message,
    }
    return _json(status, payload, error_code=code)


SUCCESS = _json(200, {"ErrorCode": "0", "IsError": False, "Errors": [], "ErrorMessage": ""}, error_code="0")


def validate_fault(fault: str) -> str:
    """Return ``fault`` if it is a known fault, else raise ValueError naming it."""
    name, _, argument = fault.partition(":")
    simple = {"ok", "code6", "html502", "http503", "http429", "html", "empty", "truncated", "hang", "unauthorized"}
    with_number = {"code", "iserror", "http5xx", "latency", "http429", "hang"}
    if name in simple and not argument:
        return fault
    if name in with_number and argument:
        try:
            float(argument)
        except ValueError:
            raise ValueError(f"sandbox fault {fault!r}: {argument!r} is not a number") from None
        return fault
    raise ValueError(
        f"unknown sandbox fault {fault!r}; use one of ok, code6, code:N, iserror:N, http5xx:S, "
        "html502, http503, http429[:N], html, empty, truncated, hang[:S], latency:MS, unauthorized"
    )


class SandboxState:
    """Orders, accounts, faults and the call log; shared by the handler threads."""

    def __init__(
        self,
        *,
        seed: int = 0,
        username: str = DEFAULT_USERNAME,
        password: str = DEFAULT_PASSWORD,
        client_id: str = DEFAULT_CLIENT_ID,
        token: str = DEFAULT_TOKEN,
        auto_create: bool = True,
        auth_failure: str = "401",
        rates: FaultRates | None = None,
    ) -> None:
        if auth_failure not in ("401", "403", "code12"):
            raise ValueError(f"auth_failure {auth_failure!r} must be 401, 403 or code12")
        self.seed = seed
        self.username = username
        self.password = password
        self.client_id = client_id
        self.fixed_token = token
        self.auto_create = auto_create
        self.auth_failure = auth_failure
        self.rates = rates or FaultRates()
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._orders: dict[str, Order] = {}
        self._tokens: set[str] = {token}
        self._calls: list[dict[str, Any]] = []

    # Admin ----------------------------------------------------------------

    def set_order(self, code: str, state: str = "new", faults: list[str] | tuple[str, ...] = ()) -> None:
        if state not in ORDER_STATES:
            raise ValueError(f"order state {state!r} must be one of {', '.join(ORDER_STATES)}")
        checked = deque(validate_fault(f) for f in faults)
        with self._lock:
            self._orders[code] = Order(state, checked)

    def order_state(self, code: str) -> str | None:
        with self._lock:
            order = self._orders.get(code)
            return order.state if order else None

    def calls(self, *, path: str | None = None, order_code: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [
                dict(c)
                for c in self._calls
                if (path is None or c["path"] == path) and (order_code is None or c["order_code"] == order_code)
            ]

    def configure(self, **values: Any) -> None:
        """Change global fault rates, e.g. ``configure(outage=False)``."""
        with self._lock:
            self.rates.update(values)

    def expire_tokens(self) -> None:
        """Refuse every token issued so far, the fixed one included."""
        with self._lock:
            self._tokens = set()

    def accept_fixed_token(self) -> None:
        with self._lock:
            self._tokens.add(self.fixed_token)

    def reset(self) -> None:
        with self._lock:
            self._orders.clear()
            self._calls.clear()
            self._tokens = {self.fixed_token}
            self._random = random.Random(self.seed)
            self.rates = FaultRates(hang_seconds=self.rates.hang_seconds)

    # Carrier endpoints ------------------------------------------------------

    def _record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            entry["seq"] = len(self._calls) + 1
            entry["at"] = time.time()
            self._calls.append(entry)
        log.info(
            "sandbox call %d: %s order=%s -> HTTP %s code=%s fault=%s",
            entry["seq"], entry["path"], entry.get("order_code"), entry.get("status"),
            entry.get("error_code"), entry.get("fault"),
        )

    def login(self, body: dict[str, Any] | None) -> Reply:
        ok = (
            body is not None
            and body.get("UserName") == self.username
            and body.get("Password") == self.password
        )
        self._record({"path": "ClientLogin", "time": _now(), "order_code": None, "user": (body or {}).get("UserName"), "status": 200, "accepted": ok})
        if not ok:
            return _json(
                200,
                {
                    "ClientID": 0,
                    "ClientName": None,
                    "Token": None,
                    "Errors": [{"ErrorMessage": LOGIN_FAILED_MESSAGE, "PropertyName": None}],
                    "ErrorMessage": LOGIN_FAILED_MESSAGE,
                },
            )
        token = secrets.token_hex(32)
        with self._lock:
            self._tokens.add(token)
        return _json(
            200,
            {"ClientID": int(self.client_id), "ClientName": "Sandbox shop", "Token": token, "Errors": [], "ErrorMessage": ""},
        )

    def cancel(self, headers: dict[str, str], body: dict[str, Any] | None) -> Reply:
        order_code = body.get("OrderCode") if isinstance(body, dict) else None
        entry: dict[str, Any] = {"path": "CancelOrder", "time": _now(), "order_code": order_code, "client_id": headers.get("clientid")}
        reply, fault, applied = self._cancel(headers, body, order_code)
        entry.update(status=reply.status, error_code=reply.error_code, fault=fault, applied=applied)
        self._record(entry)
        return reply

    def _authorised(self, headers: dict[str, str]) -> bool:
        with self._lock:
            return headers.get("clientid") == self.client_id and headers.get("token") in self._tokens

    def _auth_failure(self) -> Reply:
        if self.auth_failure == "code12":
            return carrier_error("12")
        return _json(int(self.auth_failure), {"Message": "Authorization has been denied for this request."})

    def _next_fault(self, order_code: str | None) -> str:
        with self._lock:
            order = self._orders.get(order_code) if isinstance(order_code, str) else None
            if order is not None and order.faults:
                return order.faults.popleft()
            rates = self.rates
            if rates.outage:
                return "code6"
            draw = self._random.random()
            for name, rate in (
                ("code6", rates.code6_rate),
                ("html502", rates.http5xx_rate),
                ("http429", rates.http429_rate),
                ("html", rates.html_rate),
                ("truncated", rates.truncated_rate),
                ("hang", rates.hang_rate),
            ):
                if draw < rate:
                    return name
                draw -= rate
            return "ok"

    def _apply_cancel(self, order_code: str) -> Reply:
        with self._lock:
            order = self._orders.get(order_code)
            if order is None:
                if not self.auto_create:
                    return carrier_error("13")
                order = self._orders[order_code] = Order()
            if order.state == "new":
                order.state = "cancelled"
                return SUCCESS
            if order.state in ("cancelled", "shipped"):
                return carrier_error("14")
            if order.state == "missing":
                return carrier_error("13")
            return carrier_error("16")

    def _cancel(self, headers: dict[str, str], body: dict[str, Any] | None, order_code: Any) -> tuple[Reply, str, bool]:
        fault = self._next_fault(order_code if isinstance(order_code, str) else None)
        name, _, argument = fault.partition(":")
        delay = self.rates.latency_ms / 1000
        if name == "latency":
            delay += float(argument) / 1000
            name = "ok"

        if name == "unauthorized":
            return self._auth_failure(), fault, False
        if not self._authorised(headers):
            return self._auth_failure(), "auth", False
        if name == "code6":
            return _delayed(carrier_error("6"), delay), fault, False
        if name == "code":
            return _delayed(carrier_error(str(int(float(argument)))), delay), fault, False
        if name == "iserror":
            return _delayed(carrier_error(str(int(float(argument))), numeric=True), delay), fault, False
        if name == "http429":
            extra = (("Retry-After", str(int(float(argument)))),) if argument else ()
            return Reply(429, b'{"Message": "Too many requests."}', headers=extra), fault, False
        if name == "http503":
            return Reply(503, b"Service Unavailable", content_type="text/plain"), fault, False
        if name in ("html502", "http5xx"):
            status = int(float(argument)) if argument else 502
            return Reply(status, PROXY_HTML.encode(), content_type="text/html"), fault, False

        if not isinstance(order_code, str) or not order_code.strip():
            return _delayed(carrier_error("15"), delay), fault, False
        reply = self._apply_cancel(order_code)
        applied = reply is SUCCESS
        if name == "html":
            return Reply(200, b"<html><body>Maintenance</body></html>", content_type="text/html"), fault, applied
        if name == "empty":
            return Reply(200, b""), fault, applied
        if name == "truncated":
            return Reply(200, reply.body[: max(1, len(reply.body) // 2)]), fault, applied
        if name == "hang":
            hang = float(argument) if argument else self.rates.hang_seconds
            return _delayed(reply, delay + hang), fault, applied
        return _delayed(reply, delay), fault, applied


def _delayed(reply: Reply, seconds: float) -> Reply:
    if seconds <= 0:
        return reply
    return Reply(reply.status, reply.body, reply.content_type, reply.headers, reply.error_code, seconds)


def _now() -> str:
    return datetime.now(UTC).isoformat()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle's algorithm on, the
    # second waits for the client's delayed ACK (about 40 ms on Linux).
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("sandbox %s " + format, self.client_address[0], *args)

    def _read_body(self) -> tuple[bytes | None, Reply | None]:
        length_header = self.headers.get("Content-Length", "0")
        try:
            length = int(length_header)
        except ValueError:
            return None, _json(400, {"Message": f"invalid Content-Length {length_header!r}"})
        if length > MAX_BODY_BYTES:
            return None, _json(413, {"Message": "request body too large"})
        return self.rfile.read(length), None

    def _send(self, reply: Reply) -> None:
        if reply.delay_seconds:
            time.sleep(reply.delay_seconds)
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (a read timeout); the call is already logged.
            self.close_connection = True

    def do_GET(self) -> None:  # noqa: N802
        state = self.server.state
        path = self.path.split("?", 1)[0].rstrip("/").lower()
        if path == "/_sandbox/calls":
            self._send(_json(200, {"calls": state.calls()}))
        elif path == "/_sandbox/health":
            self._send(_json(200, {"status": "ok", "rates": asdict(state.rates)}))
        else:
            self._send(_json(404, {"Message": f"no such resource {self.path}"}))

    def do_POST(self) -> None:  # noqa: N802
        raw, error = self._read_body()
        if error is not None:
            self.close_connection = True
            self._send(error)
            return
        assert raw is not None
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            body = None
            parse_failed = True
        else:
            parse_failed = False

        state = self.server.state
        path = self.path.split("?", 1)[0].rstrip("/").lower()
        headers = {k.lower(): v for k, v in self.headers.items()}
        if path == "/api/client/clientlogin":
            self._send(state.login(body if isinstance(body, dict) else None))
        elif path == "/api/customer/cancelorder":
            if parse_failed:
                self._send(_json(400, {"Message": "The request is invalid."}))
            else:
                self._send(state.cancel(headers, body if isinstance(body, dict) else None))
        elif path.startswith("/_sandbox/"):
            self._send(self._admin(path, body))
        else:
            self._send(_json(404, {"Message": f"no such resource {self.path}"}))

    def _admin(self, path: str, body: Any) -> Reply:
        state = self.server.state
        try:
            if path == "/_sandbox/orders":
                for code, spec in (body or {}).items():
                    state.set_order(code, spec.get("state", "new"), spec.get("faults", ()))
            elif path == "/_sandbox/config":
                state.configure(**(body or {}))
            elif path == "/_sandbox/expire-tokens":
                state.expire_tokens()
            elif path == "/_sandbox/reset":
                state.reset()
            else:
                return _json(404, {"Message": f"no such admin resource {path}"})
        except (ValueError, AttributeError, TypeError) as exc:
            return _json(400, {"Message": str(exc)})
        return _json(200, {"status": "ok"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], state: SandboxState) -> None:
        super().__init__(address, _Handler)
        self.state = state


class Sandbox:
    """The sandbox server, run in a background thread or in the foreground."""

    def __init__(self, state: SandboxState | None = None, *, host: str = DEFAULT_HOST, port: int = 0) -> None:
        self.state = state or SandboxState()
        self._server = _Server((host, port), self.state)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Sandbox:
        self._thread = threading.Thread(target=self._server.serve_forever, name="sandbox", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
