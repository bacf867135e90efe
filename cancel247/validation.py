"""Validation of order codes before anything is sent or stored."""

from __future__ import annotations

import unicodedata

# The carrier's order codes look like WKH091808-00002 or 2471900009205. It
# documents no maximum, so this bound only stops pasted garbage; raise it if
# the carrier ever issues longer codes.
MAX_ORDER_CODE_LENGTH = 50


class InvalidOrderCode(ValueError):
    """An order code that must not be sent to the carrier."""

    def __init__(self, code: object, problem: str) -> None:
        shown = repr(code) if not isinstance(code, str) or len(code) <= 80 else repr(code[:80]) + "..."
        super().__init__(f"invalid order code {shown}: {problem}")
        self.code = code
        self.problem = problem


def validate_order_code(code: object) -> str:
    """Return ``code`` unchanged if it may be sent, else raise InvalidOrderCode.

    Rejects non-strings, empty codes, codes longer than MAX_ORDER_CODE_LENGTH,
    and codes containing whitespace or control characters anywhere. Nothing is
    stripped: a code with a stray space is refused, not silently altered.
    """
    if not isinstance(code, str):
        raise InvalidOrderCode(code, f"must be a string, not {type(code).__name__}")
    if code == "":
        raise InvalidOrderCode(code, "is empty; give the carrier's order code")
    if len(code) > MAX_ORDER_CODE_LENGTH:
        raise InvalidOrderCode(
            code, f"is {len(code)} characters long; the maximum is {MAX_ORDER_CODE_LENGTH}"
        )
    for position, char in enumerate(code):
        if char.isspace():
            raise InvalidOrderCode(
                code, f"contains whitespace (U+{ord(char):04X}) at position {position}; remove it"
            )
        if unicodedata.category(char).startswith("C"):
            raise InvalidOrderCode(
                code,
                f"contains a control or invisible character (U+{ord(char):04X}) at position {position}; remove it",
            )
    return code
