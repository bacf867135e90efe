"""HTTP client for the 247Express customer API.

One :class:`CarrierClient` per worker process, shared by its threads. The
requests session keeps one connection pool sized to the worker's concurrency,
with separate connect and read timeouts and no retries of its own. The retry
policy in :mod:`cancel247.retry` is the only retry budget, so every call that
leaves the process has an audit row.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import InvalidHeader, NameResolutionError, NewConnectionError
from urllib3.util.retry import Retry

from cancel247.carrier.errors import (
    BODY_EXCERPT_CHARS,
    CODE_SUCCESS,
    CarrierReply,
    LoginError,
    Outcome,
    normalise_code,
    outcome_for_code,
)
from cancel247.config import Settings

log = logging.getLogger(__name__)

LOGIN_PATH = "/api/Client/ClientLogin"
CANCEL_PATH = "/Api/Customer/CancelOrder"
USER_AGENT = "cancel247"

# A Retry with every counter at zero: urllib3 raises on the first failure
# instead of repeating the request behind the audit trail's back.
NO_RETRIES = Retry(total=0, connect=0, read=False, redirect=False, status=0, other=0)


@dataclass(frozen=True)
class Credentials:
    client_id: str
    token: str
    # Incremented on every login, so that threads that all saw the same stale
    # token trigger one re-login between them, not one each.
    generation: int


def _excerpt(content: bytes) -> str:
    text = content[: BODY_EXCERPT_CHARS * 4].decode("utf-8", errors="replace")
    return text[:BODY_EXCERPT_CHARS]


def _retry_after_seconds(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(Retry().parse_retry_after(value)))
    except InvalidHeader:
        return None


def _is_true(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return value is True or value == 1


def carrier_message(data: dict[str, Any]) -> str | None:
    """Return the carrier's message verbatim: ``ErrorMessage``, else the joined ``Errors``."""
    message = data.get("ErrorMessage")
    if isinstance(message, str) and message:
        return message
    errors = data.get("Errors")
    if isinstance(errors, list):
        texts = [
            str(e.get("ErrorMessage"))
            for e in errors
            if isinstance(e, dict) and e.get("ErrorMessage")
        ]
        if texts:
            return " | ".join(texts)
    return None


def _parse_json_object(content: bytes) -> dict[str, Any] | None:
    if not content.strip():
        return None
    try:
        data = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def classify_cancel_response(status: int, headers: Any, content: bytes) -> CarrierReply:
    """Classify one HTTP reply to CancelOrder (see the outcomes in ``carrier.errors``)."""
    retry_after = _retry_after_seconds(headers)
    data = _parse_json_object(content)
    excerpt = None if data is not None else _excerpt(content)

    if status in (429, 503):
        code = normalise_code(data.get("ErrorCode")) if data else None
        return CarrierReply(
            Outcome.TRANSIENT,
            http_status=status,
            error_code=code,
            message=carrier_message(data) if data else None,
            body_excerpt=excerpt,
            retry_after_seconds=retry_after,
        )
    if status in (401, 403):
        return CarrierReply(
            Outcome.AUTH,
            http_status=status,
            error_code=normalise_code(data.get("ErrorCode")) if data else None,
            message=carrier_message(data) if data else None,
            body_excerpt=excerpt,
        )

    if data is None or ("ErrorCode" not in data and "IsError" not in data):
        if status == 408:
            outcome = Outcome.TRANSIENT
        elif 400 <= status < 500:
            outcome = Outcome.PERMANENT
        else:
            # 2xx, 3xx or 5xx without a readable reply: the carrier may
            # have acted before the proxy or the connection failed.
            outcome = Outcome.AMBIGUOUS
        if not content.strip():
            detail = "empty body"
        elif data is None:
            detail = "body is not JSON"
        else:
            detail = "JSON without ErrorCode"
        return CarrierReply(
            outcome,
            http_status=status,
            body_excerpt=excerpt if excerpt is not None else _excerpt(content),
            retry_after_seconds=retry_after,
            detail=detail,
        )

    code = normalise_code(data.get("ErrorCode"))
    is_error = _is_true(data.get("IsError"))
    message = carrier_message(data)

    if code is None:
        return CarrierReply(
            Outcome.AMBIGUOUS,
            http_status=status,
            message=message,
            body_excerpt=_excerpt(content),
            detail="reply has no ErrorCode",
        )
    if code == CODE_SUCCESS:
        if is_error or not 200 <= status < 300:
            return CarrierReply(
                Outcome.AMBIGUOUS,
                http_status=status,
                error_code=code,
                message=message,
                body_excerpt=_excerpt(content),
                detail="ErrorCode 0 contradicted by IsError or the HTTP status",
            )
        return CarrierReply(Outcome.SUCCEEDED, http_status=status, error_code=code, message=message)

    return CarrierReply(
        outcome_for_code(code),
        http_status=status,
        error_code=code,
        message=message,
        retry_after_seconds=retry_after,
    )


def _was_not_sent(exc: requests.ConnectionError) -> bool:
    """True when the connection was never opened, so the request cannot have arrived."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, NewConnectionError | NameResolutionError):
            return True
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            current = reason
            continue
        nested = current.args[0] if current.args else None
        if isinstance(nested, BaseException):
            current = nested
            continue
        current = current.__cause__ or current.__context__
    return False


def classify_exception(exc: requests.RequestException, *, read_timeout_seconds: float) -> CarrierReply:
    """Classify a call that produced no HTTP reply."""
    if isinstance(exc, requests.ConnectTimeout):
        return CarrierReply(Outcome.TRANSIENT, detail="connect timeout: request not sent")
    if isinstance(exc, requests.ReadTimeout):
        return CarrierReply(
            Outcome.AMBIGUOUS,
            detail=f"read timeout after {read_timeout_seconds:g} s: the carrier may have acted",
        )
    if isinstance(exc, requests.exceptions.SSLError):
        return CarrierReply(Outcome.TRANSIENT, detail=f"TLS error, request not sent: {type(exc).__name__}")
    if isinstance(exc, requests.ConnectionError):
        if _was_not_sent(exc):
            return CarrierReply(Outcome.TRANSIENT, detail="connection failed: request not sent")
        return CarrierReply(
            Outcome.AMBIGUOUS, detail="connection dropped after sending: the carrier may have acted"
        )
    if isinstance(exc, requests.exceptions.ChunkedEncodingError | requests.exceptions.ContentDecodingError):
        return CarrierReply(Outcome.AMBIGUOUS, detail="reply body cut off in transfer")
    return CarrierReply(Outcome.AMBIGUOUS, detail=f"request failed: {type(exc).__name__}")


class CarrierClient:
    """Calls ClientLogin and CancelOrder; thread-safe."""

    def __init__(self, settings: Settings) -> None:
        if settings.api_url is None:
            settings.require_carrier()
        self._settings = settings
        self._base_url = str(settings.api_url)
        self._timeout = (settings.connect_timeout_seconds, settings.read_timeout_seconds)
        self._session = requests.Session()
        self._session.verify = settings.ca_bundle or True
        self._session.trust_env = False
        self._session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
        adapter = HTTPAdapter(
            pool_connections=1,
            pool_maxsize=settings.concurrency,
            max_retries=NO_RETRIES,
            pool_block=False,
        )
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        self._lock = threading.Lock()
        self._credentials: Credentials | None = None
        if settings.has_fixed_token:
            assert settings.client_id is not None and settings.token is not None
            self._credentials = Credentials(settings.client_id, settings.token.get_secret_value(), 0)

    @property
    def can_login(self) -> bool:
        return self._settings.has_login

    def close(self) -> None:
        self._session.close()

    # Login -----------------------------------------------------------------

    def credentials(self) -> Credentials:
        """Return the current credentials, logging in first if there are none."""
        current = self._credentials
        if current is not None:
            return current
        with self._lock:
            if self._credentials is None:
                self._credentials = self._login(generation=1)
            return self._credentials

    def relogin(self, stale: Credentials) -> Credentials:
        """Log in again unless another thread already replaced ``stale``."""
        with self._lock:
            current = self._credentials
            if current is not None and current.generation != stale.generation:
                return current
            self._credentials = self._login(generation=stale.generation + 1)
            return self._credentials

    def login(self) -> Credentials:
        """Log in now with the username and password, replacing any cached token; raise LoginError."""
        with self._lock:
            generation = self._credentials.generation + 1 if self._credentials is not None else 1
            self._credentials = self._login(generation=generation)
            return self._credentials

    def _login(self, *, generation: int) -> Credentials:
        if not self._settings.has_login:
            raise LoginError(
                CarrierReply(Outcome.AUTH, detail="token refused and no username/password to log in with")
            )
        assert self._settings.username is not None and self._settings.password is not None
        body = {
            "UserName": self._settings.username,
            "Password": self._settings.password.get_secret_value(),
        }
        try:
            response = self._session.post(
                self._base_url + LOGIN_PATH, json=body, timeout=self._timeout, allow_redirects=False
            )
        except requests.RequestException as exc:
            reply = classify_exception(exc, read_timeout_seconds=self._timeout[1])
            # Logging in twice does no harm, so an unclear login is simply transient.
            raise LoginError(
                CarrierReply(Outcome.TRANSIENT, detail=f"login: {reply.detail}")
            ) from None

        data = _parse_json_object(response.content)
        token = data.get("Token") if data else None
        client_id = data.get("ClientID") if data else None
        if response.status_code == 200 and isinstance(token, str) and token and client_id:
            log.info("logged in to the carrier as ClientID %s", client_id)
            return Credentials(str(client_id), token, generation)

        if response.status_code in (429, 503) or response.status_code >= 500:
            outcome = Outcome.TRANSIENT
        else:
            outcome = Outcome.AUTH
        raise LoginError(
            CarrierReply(
                outcome,
                http_status=response.status_code,
                message=carrier_message(data) if data else None,
                body_excerpt=None if data else _excerpt(response.content),
                retry_after_seconds=_retry_after_seconds(response.headers),
                detail="login failed",
            )
        )

    # CancelOrder -------------------------------------------------------------

    def cancel_order(self, order_code: str, credentials: Credentials) -> CarrierReply:
        """Send one CancelOrder call and classify the result; never retries."""
        headers = {
            "Content-Type": "application/json",
            "ClientID": credentials.client_id,
            "Token": credentials.token,
        }
        try:
            response = self._session.post(
                self._base_url + CANCEL_PATH,
                data=json.dumps({"OrderCode": order_code}),
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            return classify_exception(exc, read_timeout_seconds=self._timeout[1])
        return classify_cancel_response(response.status_code, response.headers, response.content)
