"""Opaque page tokens (AIP-158): a versioned, urlsafe-base64 JSON keyset position bound to its query's filters."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from convgen.errors import InvalidArgument

_VERSION = 1
T = TypeVar("T")


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


def position_field(field: str, position: dict[str, Any], key: str, parse: Callable[[Any], T]) -> T:
    """Reads one value of a decoded page position; anything malformed is the token's fault."""
    try:
        return parse(position[key])
    except (KeyError, TypeError, ValueError):
        raise InvalidArgument.for_field(field, "is not a page token returned by this API") from None
