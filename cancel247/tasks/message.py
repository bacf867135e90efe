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
            problems.append(f"{_printable(field)}: {text}")
        shown = problems[:MAX_PROBLEMS_SHOWN]
        if len(problems) > len(shown):
            shown.append(f"... and {len(problems) - len(shown)} more")
        raise InvalidMessage("; ".join(shown)) from None


# A producer may send thousands of extra keys, or keys megabytes long: the
# reason stays one short line for the log and the audit row.
MAX_PROBLEMS_SHOWN = 5
MAX_FIELD_NAME_SHOWN = 60


def _printable(name: str) -> str:
    """Return a field name fit for a one-line message: escaped if it has control characters, and cut."""
    shown = name if name.isprintable() else repr(name)
    if len(shown) > MAX_FIELD_NAME_SHOWN:
        return f"{shown[:MAX_FIELD_NAME_SHOWN]}...({len(name)} chars)"
    return shown


def order_code_of(kwargs: dict[str, Any], args: tuple[Any, ...] = ()) -> str:
    """Return something to file an invalid message under, even when order_code is bad or positional."""
    code = kwargs.get("order_code")
    if code is None and args:
        code = args[0]
    if isinstance(code, str):
        return code
    return "" if code is None else repr(code)

