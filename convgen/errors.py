"""The root of convgen's exceptions. Each family maps to one gRPC status code in convgen.rpc.status."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """One invalid request field and what is wrong with it."""

    field: str
    description: str


class ConvgenError(Exception):
    """A convgen operation failed; the message is what a caller reads."""

    default_reason = "CONVGEN_ERROR"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata: dict[str, str] = dict(metadata or {})
        self.retry_after = retry_after


class InvalidArgument(ConvgenError):
    """A request field is malformed or out of bounds."""

    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        *,
        violations: Sequence[FieldViolation] = (),
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.violations = list(violations)

    @classmethod
    def for_field(cls, field: str, description: str) -> InvalidArgument:
        """An error about one field, with the field named in the message."""
        return cls(f"{field}: {description}", violations=[FieldViolation(field, description)])


class NotFound(ConvgenError):
    """A referenced resource does not exist."""

    default_reason = "NOT_FOUND"


class AlreadyExists(ConvgenError):
    """The resource to create exists already."""

    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(ConvgenError):
    """The system is not in the state the operation needs."""

    default_reason = "FAILED_PRECONDITION"


class Aborted(ConvgenError):
    """A concurrent operation conflicts; retrying later may succeed."""

    default_reason = "ABORTED"


class OutOfRange(ConvgenError):
    """A value is past the end of a valid range."""

    default_reason = "OUT_OF_RANGE"


class ResourceExhausted(ConvgenError):
    """A quota or rate limit was hit; retry after the delay."""

    default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(ConvgenError):
    """A dependency is down or unreachable; retrying later may succeed."""

    default_reason = "UNAVAILABLE"


class DeadlineExceeded(ConvgenError):
    """The work did not finish in time."""

    default_reason = "DEADLINE_EXCEEDED"


class PermissionDenied(ConvgenError):
    """The caller (or convgen's credentials) may not do this."""

    default_reason = "PERMISSION_DENIED"


class Unauthenticated(ConvgenError):
    """The caller presented no valid credentials."""

    default_reason = "UNAUTHENTICATED"


class Internal(ConvgenError):
    """An invariant of convgen itself broke; the message says which."""

    default_reason = "INTERNAL"
