"""Request field parsing shared by both services: UUIDs, strings and page sizes, with the field named in errors.

A parser raises InvalidArgument for its field. To report every bad field of a request at once, run each parser
through `attempt` (which returns the error instead of raising it) and hand the results to `valid`, which returns
the typed values or raises one InvalidArgument naming every violation.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ParamSpec, TypeAlias, TypeVar, overload

from convgen.catalog.models import NIL_UUID
from convgen.errors import FieldViolation, InvalidArgument

P = ParamSpec("P")
T = TypeVar("T")
T1 = TypeVar("T1")
T2 = TypeVar("T2")
T3 = TypeVar("T3")
T4 = TypeVar("T4")
T5 = TypeVar("T5")
T6 = TypeVar("T6")
T7 = TypeVar("T7")

# What `attempt` returns: the parsed value, or the error that names the bad field.
Parsed: TypeAlias = T | InvalidArgument
# Only the canonical 8-4-4-4-12 hex spelling: uuid.UUID alone also accepts braces, urn: and other digits.
CANONICAL_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
MAX_ID_LENGTH = 200
MAX_NAME_LENGTH = 200
# A status travels in HTTP/2 headers (8 KiB by default): report this many field violations at most.
MAX_REPORTED = 10


def require_uuid(field: str, value: str) -> uuid.UUID:
    """Parses a required canonical UUID string."""
    if value == "":
        raise InvalidArgument.for_field(field, "is required (a UUID)")
    if len(value) != 36:
        raise InvalidArgument.for_field(
            field, f"{_shown(value)} is not a UUID (expected 36 characters like {NIL_UUID})"
        )
    if not CANONICAL_UUID.match(value):
        raise InvalidArgument.for_field(field, f"{_shown(value)} is not a UUID (expected hex digits like {NIL_UUID})")
    return uuid.UUID(value)


def optional_uuid(field: str, value: str) -> uuid.UUID | None:
    """Parses a UUID string that may be empty (None)."""
    return require_uuid(field, value) if value else None


def check_text(field: str, value: str, *, max_length: int, required: bool = False) -> str:
    """Checks a free-text field: length bound, no NUL bytes (PostgreSQL text cannot hold them)."""
    if required and not value.strip():
        raise InvalidArgument.for_field(field, "is required")
    if len(value) > max_length:
        raise InvalidArgument.for_field(field, f"is {len(value)} characters long; the limit is {max_length}")
    if "\x00" in value:
        raise InvalidArgument.for_field(field, "contains a NUL character, which cannot be stored")
    return value


def check_request_id(field: str, value: str) -> str:
    """Checks an idempotency key (AIP-155): printable, at most 200 characters."""
    check_text(field, value, max_length=MAX_ID_LENGTH)
    if value and not value.isprintable():
        raise InvalidArgument.for_field(field, "must contain printable characters only")
    return value


def page_size(field: str, value: int, *, default: int, maximum: int) -> int:
    """Validates a page_size: 0 means the default; negative or above the cap is an error."""
    if value < 0:
        raise InvalidArgument.for_field(field, f"must not be negative (got {value})")
    if value > maximum:
        raise InvalidArgument.for_field(field, f"must be at most {maximum} (got {value})")
    return value or default


def _shown(value: str) -> str:
    """Quotes a bad value for an error message, cut short when long."""
    return repr(value if len(value) <= 60 else value[:57] + "...")


# --- reporting every bad field at once -------------------------------------------------------------------------------


def attempt(parse: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Parsed[T]:
    """Runs one parser; its InvalidArgument is returned instead of raised, so the other fields get checked too."""
    try:
        return parse(*args, **kwargs)
    except InvalidArgument as error:
        return error


@overload
def valid(_r1: Parsed[T1], _r2: Parsed[T2], /) -> tuple[T1, T2]: ...
@overload
def valid(_r1: Parsed[T1], _r2: Parsed[T2], _r3: Parsed[T3], /) -> tuple[T1, T2, T3]: ...
@overload
def valid(_r1: Parsed[T1], _r2: Parsed[T2], _r3: Parsed[T3], _r4: Parsed[T4], /) -> tuple[T1, T2, T3, T4]: ...
@overload
def valid(
    _r1: Parsed[T1], _r2: Parsed[T2], _r3: Parsed[T3], _r4: Parsed[T4], _r5: Parsed[T5], /
) -> tuple[T1, T2, T3, T4, T5]: ...
@overload
def valid(
    _r1: Parsed[T1], _r2: Parsed[T2], _r3: Parsed[T3], _r4: Parsed[T4], _r5: Parsed[T5], _r6: Parsed[T6], /
) -> tuple[T1, T2, T3, T4, T5, T6]: ...
@overload
def valid(
    _r1: Parsed[T1],
    _r2: Parsed[T2],
    _r3: Parsed[T3],
    _r4: Parsed[T4],
    _r5: Parsed[T5],
    _r6: Parsed[T6],
    _r7: Parsed[T7],
    /,
) -> tuple[T1, T2, T3, T4, T5, T6, T7]: ...
def valid(*results: Any) -> Any:
    """The parsed values in order; when any parser failed, one InvalidArgument naming every violation."""
    raise_violations(r for r in results if isinstance(r, InvalidArgument))
    return results


def valid_list(results: Iterable[Parsed[T]]) -> list[T]:
    """Every parsed value of a list; when any entry failed, one InvalidArgument naming every violation."""
    values: list[T] = []
    errors: list[InvalidArgument] = []
    for result in results:
        if isinstance(result, InvalidArgument):
            errors.append(result)
        else:
            values.append(result)
    raise_violations(errors)
    return values


def violation_count(results: Iterable[object]) -> int:
    """How many field violations the failed results hold."""
    return sum(len(_violations(r)) for r in results if isinstance(r, InvalidArgument))


class InvalidFields(InvalidArgument):
    """Several invalid fields: the status lists the first MAX_REPORTED and counts the rest in its message."""

    def __init__(self, violations: Sequence[FieldViolation]) -> None:
        shown = violations[:MAX_REPORTED]
        message = "; ".join(f"{v.field}: {v.description}" for v in shown)
        if len(violations) > MAX_REPORTED:
            # Every listed violation names a real field; the count of the rest goes in the message only.
            message += f"; and {len(violations) - MAX_REPORTED} more invalid field(s) not listed"
        super().__init__(message, violations=shown)
        # Kept whole for a caller that merges this report into the report of a larger request.
        self.all_violations = list(violations)


def raise_violations(errors: Iterable[InvalidArgument]) -> None:
    """Raises one InvalidFields naming every violation of the errors; nothing when there are none."""
    violations = [v for error in errors for v in _violations(error)]
    if violations:
        raise InvalidFields(violations)


def _violations(error: InvalidArgument) -> Sequence[FieldViolation]:
    if isinstance(error, InvalidFields):
        return error.all_violations
    return error.violations or [FieldViolation("request", error.message)]
