"""The one place where convgen exceptions become gRPC statuses (code, message, google.rpc details)."""

from __future__ import annotations

from datetime import timedelta

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from convgen import errors

ERROR_DOMAIN = "convgen.v1"
# Statuses travel in HTTP/2 trailers, which clients cap at 8 KiB by default; gRPC percent-encodes non-ASCII
# message bytes (up to 3x) and base64-encodes the details (4/3x). These bounds keep both well inside the cap.
MAX_MESSAGE_BYTES = 1000
MAX_DETAIL_CHARS = 200
MAX_VIOLATIONS = 12

_CODES: dict[type, grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Aborted: grpc.StatusCode.ABORTED,
    errors.OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.Internal: grpc.StatusCode.INTERNAL,
}


_ERRORS: dict[grpc.StatusCode, type[errors.ConvgenError]] = {code: cls for cls, code in _CODES.items()}


def error_for(code: grpc.StatusCode, message: str, *, reason: str | None = None) -> errors.ConvgenError:
    """The convgen error that maps to a status code (a failure of another service, passed on with its code)."""
    cls = _ERRORS.get(code, errors.Unavailable)
    if issubclass(cls, errors.InvalidArgument):
        return errors.InvalidArgument(message, reason=reason)
    return cls(message, reason=reason)


def status_code_for(error: errors.ConvgenError) -> grpc.StatusCode:
    """The gRPC code of a convgen error: the code of its nearest mapped base class."""
    for cls in type(error).__mro__:
        code = _CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def to_rpc_status(error: errors.ConvgenError) -> status_pb2.Status:
    """Builds a google.rpc.Status with ErrorInfo, BadRequest and RetryInfo details as they apply."""
    code = status_code_for(error)
    status = status_pb2.Status(code=_numeric(code), message=clip_bytes(error.message, MAX_MESSAGE_BYTES))
    metadata = {_clip(k): _clip(v) for k, v in list(error.metadata.items())[:MAX_VIOLATIONS]}
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=metadata)
    status.details.add().Pack(info)
    if isinstance(error, errors.InvalidArgument) and error.violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=_clip(v.field), description=_clip(v.description))
                for v in error.violations[:MAX_VIOLATIONS]
            ]
        )
        status.details.add().Pack(bad_request)
    if error.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromTimedelta(timedelta(seconds=max(0.0, error.retry_after)))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return status


def _numeric(code: grpc.StatusCode) -> int:
    value: int = code.value[0]
    return value


def clip_bytes(text: str, limit: int) -> str:
    """text cut to at most limit UTF-8 bytes (on a character boundary), marked with ... when cut."""
    encoded = text.encode("utf-8", errors="replace")
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode("utf-8", errors="ignore") + "..."


def _clip(text: str) -> str:
    return text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 3] + "..."
