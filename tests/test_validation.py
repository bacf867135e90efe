"""Order code validation."""

from __future__ import annotations

import pytest

from cancel247.validation import MAX_ORDER_CODE_LENGTH, InvalidOrderCode, validate_order_code


@pytest.mark.parametrize("code", ["WKH091808-00002", "2471900009205", "A", "X" * MAX_ORDER_CODE_LENGTH])
def test_valid_codes_pass_unchanged(code: str) -> None:
    assert validate_order_code(code) == code


@pytest.mark.parametrize(
    ("code", "problem"),
    [
        ("", "is empty"),
        (" WKH1", "whitespace (U+0020) at position 0"),
        ("WKH1\t", "whitespace (U+0009) at position 4"),
        ("WKH\u00a01", "whitespace (U+00A0)"),
        ("WKH\x001", "control or invisible character (U+0000)"),
        ("WKH\u200b1", "control or invisible character (U+200B)"),
        ("X" * (MAX_ORDER_CODE_LENGTH + 1), f"the maximum is {MAX_ORDER_CODE_LENGTH}"),
        (12345, "must be a string, not int"),
        (None, "must be a string, not NoneType"),
    ],
)
def test_invalid_codes_named(code: object, problem: str) -> None:
    with pytest.raises(InvalidOrderCode) as caught:
        validate_order_code(code)
    assert problem in str(caught.value)
    assert str(caught.value).startswith("invalid order code ")
