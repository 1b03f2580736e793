"""Request field validation shared by both services: UUIDs, strings and page sizes, with the field named in errors."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from convgen.errors import FieldViolation, InvalidArgument

T = TypeVar("T")

NIL_UUID = uuid.UUID(int=0)
# Only the canonical 8-4-4-4-12 hex spelling: uuid.UUID alone also accepts braces, urn: and other digits.
CANONICAL_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
MAX_ID_LENGTH = 200
MAX_NAME_LENGTH = 200
# A status travels in HTTP/2 headers (8 KiB by default): report this many field violations at most.
MAX_REPORTED = 10


def parse_uuid(field: str, value: str, *, allow_empty: bool = False) -> uuid.UUID | None:
    """Parses a canonical UUID string; empty gives None when allowed."""
    if value == "":
        if allow_empty:
            return None
        raise InvalidArgument.for_field(field, "is required (a UUID)")
    if len(value) != 36:
        raise InvalidArgument.for_field(
            field, f"{_shown(value)} is not a UUID (expected 36 characters like {NIL_UUID})"
        )
    if not CANONICAL_UUID.match(value):
        raise InvalidArgument.for_field(field, f"{_shown(value)} is not a UUID (expected hex digits like {NIL_UUID})")
    return uuid.UUID(value)


def require_uuid(field: str, value: str) -> uuid.UUID:
    """Parses a required UUID string."""
    parsed = parse_uuid(field, value)
    assert parsed is not None
    return parsed


def optional_uuid(field: str, value: str) -> uuid.UUID | None:
    """Parses a UUID string that may be empty."""
    return parse_uuid(field, value, allow_empty=True)


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


class FieldChecks:
    """Runs several field checks and reports every failing field in one INVALID_ARGUMENT."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def check(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """Runs one check; a failure is remembered and None returned."""
        try:
            return fn(*args, **kwargs)
        except InvalidArgument as error:
            self.violations.extend(error.violations or [FieldViolation("request", error.message)])
            return None

    def add(self, field: str, description: str) -> None:
        """Records a violation found by the caller."""
        self.violations.append(FieldViolation(field, description))

    def raise_if_any(self) -> None:
        """Raises one InvalidArgument naming the failing fields (the first MAX_REPORTED of them)."""
        if not self.violations:
            return
        shown = self.violations[:MAX_REPORTED]
        message = "; ".join(f"{v.field}: {v.description}" for v in shown)
        if len(self.violations) > MAX_REPORTED:
            # Every listed violation names a real field; the count of the rest goes in the message only.
            message += f"; and {len(self.violations) - MAX_REPORTED} more invalid field(s) not listed"
        raise InvalidArgument(message, violations=shown)
