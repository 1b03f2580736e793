"""The error interceptor: every error leaves as a specific gRPC status with rich details, never UNKNOWN."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc
from grpc.aio import AbortError

from convgen import errors
from convgen.logging_setup import log_context
from convgen.rpc.status import status_code_for, to_rpc_status
from convgen.rpc.wrapping import UnaryBehavior, WrappingInterceptor

logger = logging.getLogger(__name__)

STATUS_DETAILS_KEY = "grpc-status-details-bin"


def as_convgen_error(error: BaseException) -> errors.ConvgenError:
    """The convgen error for any exception: itself, or Internal naming the unexpected exception."""
    if isinstance(error, errors.ConvgenError):
        return error
    return errors.Internal(f"internal error: {type(error).__name__}: {error}", reason="UNEXPECTED_EXCEPTION")


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], error: errors.ConvgenError) -> None:
    """Ends the call with the status mapped from a convgen error, details attached."""
    status = to_rpc_status(error)
    await context.abort(
        status_code_for(error), status.message, trailing_metadata=((STATUS_DETAILS_KEY, status.SerializeToString()),)
    )


def _log_failure(method: str, error: BaseException, elapsed_ms: float) -> None:
    if isinstance(error, errors.ConvgenError):
        code = status_code_for(error).name
        level = logging.ERROR if code == "INTERNAL" else logging.INFO
        logger.log(level, "%s failed: %s: %s", method, code, error.message, extra={"elapsed_ms": round(elapsed_ms, 1)})
    else:
        logger.error("%s raised unexpectedly", method, exc_info=error)


# Request fields that identify what a call is about; put on every log line of the call, failures included.
_LOGGED_REQUEST_FIELDS = ("request_id", "job_id")
# A hostile request may carry a huge id; the log gets its start (validation rejects it anyway).
_MAX_LOGGED_FIELD_CHARS = 200


def _call_fields(method: str, request: Any) -> dict[str, str]:
    """The log fields of one call: its method and the request's ids, when it has them."""
    fields = {"rpc": method}
    for name in _LOGGED_REQUEST_FIELDS:
        value = getattr(request, name, None)
        if isinstance(value, str) and value:
            fields[name] = value[:_MAX_LOGGED_FIELD_CHARS]
    return fields


class ErrorInterceptor(WrappingInterceptor):
    """Maps exceptions raised by servicers to statuses and logs each call's outcome with its method and ids."""

    def wrap_unary(self, method: str, behavior: UnaryBehavior) -> UnaryBehavior:
        """Runs the call; any exception leaves as its mapped status."""

        async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            with log_context(**_call_fields(method, request)):
                try:
                    return await behavior(request, context)
                except (AbortError, asyncio.CancelledError):
                    raise
                except Exception as error:  # noqa: BLE001 - the last line of defence: nothing may end in UNKNOWN
                    _log_failure(method, error, (time.perf_counter() - started) * 1000)
                    await abort_with(context, as_convgen_error(error))

        return wrapped
