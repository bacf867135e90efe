"""The task message a producer sends, in any language, and its validation."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StrictStr, ValidationError

from cancel247.validation import validate_order_code

MAX_REASON_LENGTH = 1000
MAX_SOURCE_LENGTH = 100


class InvalidMessage(ValueError):
    """A task message that cannot be processed. The message names the field and the problem."""


class CancelMessage(BaseModel):
    """Keyword arguments of the ``cancel247.cancel_order`` task."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    order_code: Annotated[StrictStr, AfterValidator(validate_order_code)]
    reason: StrictStr | None = Field(default=None, max_length=MAX_REASON_LENGTH)
    source: StrictStr | None = Field(default=None, max_length=MAX_SOURCE_LENGTH)
    enqueued_at: AwareDatetime | None = None


def parse_message(args: tuple[Any, ...], kwargs: dict[str, Any]) -> CancelMessage:
    """Validate the task's arguments; raise InvalidMessage naming the bad field."""
    if args:
        raise InvalidMessage(
            f"positional arguments are not accepted (got {len(args)}); send kwargs "
            "{'order_code': ..., 'reason': ..., 'source': ...}"
        )
    try:
        return CancelMessage.model_validate(kwargs)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error.get("loc", ())) or "message"
            text = str(error.get("msg", "invalid")).removeprefix("Value error, ")
            problems.append(f"{field}: {text}")
        raise InvalidMessage("; ".join(problems)) from None


def order_code_of(kwargs: dict[str, Any]) -> str:
    """Return something to file an invalid message under, even when order_code is bad."""
    code = kwargs.get("order_code")
    if isinstance(code, str):
        return code
    return "" if code is None else repr(code)

