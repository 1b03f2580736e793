"""Opaque page tokens (AIP-158): a versioned, urlsafe-base64 JSON keyset position bound to its query's filters."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.protobuf.message import Message

from convgen.errors import InvalidArgument
from convgen.validation import CANONICAL_UUID

_VERSION = 1
M = TypeVar("M", bound=Message)


def _fingerprint(filters: Mapping[str, Any]) -> str:
    canonical = json.dumps(filters, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def encode_token(position: Mapping[str, Any], filters: Mapping[str, Any]) -> str:
    """Encodes a keyset position for the next page of a query with these filters."""
    payload = {"v": _VERSION, "f": _fingerprint(filters), "p": dict(position)}
    raw = json.dumps(payload, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(field: str, token: str, filters: Mapping[str, Any]) -> dict[str, Any] | None:
    """Decodes a page token; empty gives None. A token from other filters or not from us is INVALID_ARGUMENT."""
    if not token:
        return None
    if len(token) > 2048:
        raise InvalidArgument.for_field(field, "is not a page token returned by this API (too long)")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        payload = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidArgument.for_field(field, "is not a page token returned by this API") from None
    if not isinstance(payload, dict) or payload.get("v") != _VERSION or not isinstance(payload.get("p"), dict):
        raise InvalidArgument.for_field(field, "is not a page token returned by this API")
    if payload.get("f") != _fingerprint(filters):
        raise InvalidArgument.for_field(field, "was issued for a request with different filters")
    position: dict[str, Any] = payload["p"]
    return position


def _forged(field: str) -> InvalidArgument:
    return InvalidArgument.for_field(field, "is not a page token returned by this API")


def position_text(field: str, position: Mapping[str, Any], key: str) -> str:
    """A text position: what PostgreSQL text can hold (no NUL, no lone surrogates), at most 200 characters."""
    value = position.get(key)
    if not isinstance(value, str) or len(value) > 200 or "\x00" in value:
        raise _forged(field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _forged(field) from None
    return value


def position_int(field: str, position: Mapping[str, Any], key: str) -> int:
    """An int32 position (booleans and floats are not ints here)."""
    value = position.get(key)
    if type(value) is not int or not -(2**31) <= value < 2**31:
        raise _forged(field)
    return value


def position_uuid(field: str, position: Mapping[str, Any], key: str) -> uuid.UUID:
    """A UUID position in canonical form."""
    value = position.get(key)
    if not isinstance(value, str) or not CANONICAL_UUID.match(value):
        raise _forged(field)
    return uuid.UUID(value)


def position_timestamp(field: str, position: Mapping[str, Any], key: str) -> datetime:
    """A timezone-aware timestamp position that UTC (and PostgreSQL) can represent."""
    value = position.get(key)
    if not isinstance(value, str) or len(value) > 40:
        raise _forged(field)
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise _forged(field)
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise _forged(field) from None


# Room kept in a response for everything but its list of items.
PAGE_HEADROOM_BYTES = 64 * 1024


def fit_page(messages: list[M], max_message_bytes: int) -> tuple[list[M], int]:
    """The leading messages that fit in one response (at least one), and how many that is.

    AIP-158 lets a page be shorter than page_size; the next page token then starts after the last one kept.
    """
    budget = max_message_bytes - PAGE_HEADROOM_BYTES
    total = 0
    for kept, message in enumerate(messages):
        # Each repeated element costs its size plus a tag and a length prefix (at most 6 bytes).
        total += message.ByteSize() + 6
        if total > budget and kept > 0:
            return messages[:kept], kept
    return messages, len(messages)
