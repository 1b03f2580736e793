"""ConvgenRpcError: the one exception the client raises, with the google.rpc details of the status decoded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class FieldViolation:
    """One invalid request field (google.rpc.BadRequest.FieldViolation)."""

    field: str
    description: str


@dataclass(frozen=True)
class ErrorDetails:
    """The google.rpc details of a status: ErrorInfo, BadRequest and RetryInfo, decoded."""

    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    field_violations: tuple[FieldViolation, ...] = ()
    retry_delay: float | None = None
    raw: tuple[Any, ...] = ()


class ConvgenRpcError(Exception):
    """A convgen call failed: status code, message and decoded details; str() is 'CODE: message'."""

    def __init__(self, code: grpc.StatusCode, message: str, details: ErrorDetails | None = None) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.details = details if details is not None else ErrorDetails()

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    def __repr__(self) -> str:
        return f"ConvgenRpcError({self.code.name}, {self.message!r}, reason={self.details.reason!r})"

    @property
    def reason(self) -> str:
        """ErrorInfo.reason, e.g. BATCH_JOB_NOT_FOUND; empty when the status carried none."""
        return self.details.reason

    @property
    def field_violations(self) -> tuple[FieldViolation, ...]:
        """BadRequest field violations."""
        return self.details.field_violations

    @property
    def retry_delay(self) -> float | None:
        """RetryInfo delay in seconds, when the server suggested one."""
        return self.details.retry_delay

    @classmethod
    def from_call(cls, error: grpc.aio.AioRpcError) -> ConvgenRpcError:
        """Builds the error from a failed call, reading its status and rich details once."""
        code = error.code()
        message = error.details() or "(no message)"
        return cls(code, message, decode_details(error))

    @classmethod
    def client_side(
        cls, code: grpc.StatusCode, message: str, *, reason: str = "", violations: tuple[FieldViolation, ...] = ()
    ) -> ConvgenRpcError:
        """An error detected before any call was made (bad argument, unknown catalog key)."""
        return cls(code, message, ErrorDetails(reason=reason, domain="convgen.client", field_violations=violations))

    @classmethod
    def invalid_argument(cls, field_name: str, description: str) -> ConvgenRpcError:
        """INVALID_ARGUMENT about one argument, with a field violation naming it."""
        return cls.client_side(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{field_name}: {description}",
            reason="INVALID_ARGUMENT",
            violations=(FieldViolation(field_name, description),),
        )


def decode_details(error: Any) -> ErrorDetails:
    """Decodes the grpc-status-details-bin trailer; an absent or inconsistent one gives empty details."""
    try:
        status = rpc_status.from_call(error)
    except (ValueError, TypeError, AttributeError):
        status = None
    if status is None:
        return ErrorDetails()
    reason = domain = ""
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    retry_delay: float | None = None
    raw: list[Any] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
            raw.append(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend(FieldViolation(v.field, v.description) for v in bad.field_violations)
            raw.append(bad)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_delay = retry.retry_delay.ToTimedelta().total_seconds()
            raw.append(retry)
        else:
            raw.append(detail)
    return ErrorDetails(
        reason=reason,
        domain=domain,
        metadata=metadata,
        field_violations=tuple(violations),
        retry_delay=retry_delay,
        raw=tuple(raw),
    )
