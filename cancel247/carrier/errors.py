"""The carrier's error codes and the classification of every reply.

Every CancelOrder call ends in exactly one :class:`Outcome`:

* ``succeeded``: ``ErrorCode`` 0 and ``IsError`` not true.
* ``transient``: the carrier did not act and a retry may succeed: code 6,
  HTTP 429 and 503, a connection that could not be opened or a connect
  timeout (nothing was sent).
* ``ambiguous``: the carrier may have acted but the reply does not say: a
  read timeout, a connection dropped after sending, other 5xx statuses, a
  body that is not JSON, truncated or self-contradictory. Retried, and a
  later code 14 then means "maybe cancelled by us", not "refused".
* ``permanent``: the carrier refused for good: codes 13, 14, 15, 16, any
  code not in the catalogue, other 4xx statuses.
* ``auth``: code 12, HTTP 401 or 403: the credentials were refused.

Exceptions raised by the client, all under :class:`CarrierError`::

    CarrierError
    ├── LoginError            ClientLogin failed (carries the classified reply)
    └── CarrierReplyError     a CancelOrder reply that is not a success
        ├── RetryableError    transient or ambiguous: the retry policy retries
        └── FinalError        permanent or auth: the request ends
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Outcome(enum.StrEnum):
    """Result of one CancelOrder attempt, as stored in the audit trail."""

    IN_FLIGHT = "in_flight"
    SUCCEEDED = "succeeded"
    TRANSIENT = "transient"
    AMBIGUOUS = "ambiguous"
    PERMANENT = "permanent"
    AUTH = "auth"
    INTERRUPTED = "interrupted"


RETRYABLE_OUTCOMES = frozenset({Outcome.TRANSIENT, Outcome.AMBIGUOUS})

CODE_SUCCESS = "0"
CODE_TRANSIENT = "6"
CODE_ACCOUNT_INVALID = "12"
CODE_ORDER_NOT_FOUND = "13"
CODE_STATUS_INVALID = "14"
CODE_ORDER_CODE_EMPTY = "15"
CODE_ORDER_INVALID = "16"


@dataclass(frozen=True)
class CarrierCode:
    code: str
    outcome: Outcome
    text_vi: str
    text_en: str


# The error codes of CancelOrder, with the carrier's own texts from the
# Vietnamese and English editions 1.0.6 of its customer API documentation.
CATALOGUE: dict[str, CarrierCode] = {
    c.code: c
    for c in (
        CarrierCode(CODE_SUCCESS, Outcome.SUCCEEDED, "", ""),
        CarrierCode(
            CODE_TRANSIENT,
            Outcome.TRANSIENT,
            "Có lỗi xảy ra trong quá trình xử lý.",
            "Exception.",
        ),
        CarrierCode(
            CODE_ACCOUNT_INVALID,
            Outcome.AUTH,
            "Tài khoản khách hàng không hợp lệ.",
            "Customer account is invalid.",
        ),
        CarrierCode(
            CODE_ORDER_NOT_FOUND,
            Outcome.PERMANENT,
            "Đơn hàng không tồn tại trong hệ thống.",
            "Order not found.",
        ),
        CarrierCode(
            CODE_STATUS_INVALID,
            Outcome.PERMANENT,
            "Trạng thái không hợp lệ để xóa.",
            "Order status is invalid.",
        ),
        CarrierCode(
            CODE_ORDER_CODE_EMPTY,
            Outcome.PERMANENT,
            "Chưa truyền mã đơn hàng.",
            "OrderCode is null or empty.",
        ),
        CarrierCode(
            CODE_ORDER_INVALID,
            Outcome.PERMANENT,
            "Đơn hàng không hợp lệ.",
            "Order is invalid.",
        ),
    )
}

# Kept from a body that is not JSON, so ops can see what a proxy returned.
BODY_EXCERPT_CHARS = 200


@dataclass(frozen=True)
class CarrierReply:
    """The classified result of one HTTP call to the carrier."""

    outcome: Outcome
    http_status: int | None = None
    error_code: str | None = None
    message: str | None = None
    body_excerpt: str | None = None
    retry_after_seconds: float | None = None
    detail: str | None = None

    @property
    def retryable(self) -> bool:
        return self.outcome in RETRYABLE_OUTCOMES

    def summary(self) -> str:
        """Describe the reply in one line for logs and the request's detail."""
        parts = [self.outcome.value]
        if self.http_status is not None:
            parts.append(f"HTTP {self.http_status}")
        if self.error_code is not None:
            parts.append(f"code {self.error_code}")
        if self.message:
            parts.append(repr(self.message))
        if self.detail:
            parts.append(self.detail)
        return ", ".join(parts)


class CarrierError(Exception):
    """Base of every error the carrier client raises."""

    def __init__(self, reply: CarrierReply) -> None:
        super().__init__(reply.summary())
        self.reply = reply


class LoginError(CarrierError):
    """ClientLogin did not return a token."""


class CarrierReplyError(CarrierError):
    """A CancelOrder reply that is not a success."""


class RetryableError(CarrierReplyError):
    """Transient or ambiguous: the retry policy may try again."""


class FinalError(CarrierReplyError):
    """Permanent or auth: retrying the same call cannot help."""


def error_for(reply: CarrierReply) -> CarrierReplyError:
    """Wrap a non-success reply in the exception the retry policy dispatches on."""
    if reply.retryable:
        return RetryableError(reply)
    return FinalError(reply)


def normalise_code(raw: object) -> str | None:
    """Return ``ErrorCode`` as a decimal string, whether it came as text or number."""
    if raw is None or isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    text = str(raw).strip()
    if text.lstrip("-").isdigit():
        return str(int(text))
    return text or None


def outcome_for_code(code: str) -> Outcome:
    """Return the outcome of a carrier code; codes missing from the catalogue are permanent."""
    known = CATALOGUE.get(code)
    if known is None:
        return Outcome.PERMANENT
    return known.outcome
