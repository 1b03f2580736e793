"""Server interceptors: every error leaves as a specific gRPC status with rich details, never UNKNOWN."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, cast

import grpc
from grpc.aio import AbortError

from convgen import errors
from convgen.logging_setup import log_context
from convgen.rpc.status import status_code_for, to_rpc_status

logger = logging.getLogger(__name__)

STATUS_DETAILS_KEY = "grpc-status-details-bin"

UnaryBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
StreamBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncGenerator[Any, None] | Awaitable[None]]
# A streaming handler in gRPC's reader/writer style: writes with context.write() and returns nothing.
WriterBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[None]]


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


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Maps exceptions raised by servicers to statuses and logs each call's outcome with its method."""

    def __init__(self) -> None:
        # Wrapping is the same for every call of a method: done once (a handler per call costs CPU on the hot path).
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = _wrap_handler(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


def _wrap_handler(method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    # Generated handlers are namedtuples; _replace swaps in the wrapped behaviour.
    replace: Callable[..., grpc.RpcMethodHandler[Any, Any]] = handler._replace  # type: ignore[attr-defined]
    if handler.unary_unary is not None:
        return replace(unary_unary=_wrap_unary(method, cast(UnaryBehavior, handler.unary_unary)))
    if handler.unary_stream is not None:
        return replace(unary_stream=_wrap_stream(method, cast(StreamBehavior, handler.unary_stream)))
    if handler.stream_stream is not None:
        return replace(stream_stream=_wrap_stream(method, cast(StreamBehavior, handler.stream_stream)))
    return handler


def _wrap_unary(method: str, behavior: UnaryBehavior) -> UnaryBehavior:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = time.perf_counter()
        with log_context(rpc=method):
            try:
                return await behavior(request, context)
            except (AbortError, asyncio.CancelledError):
                raise
            except Exception as error:  # noqa: BLE001 - the last line of defence: nothing may end in UNKNOWN
                _log_failure(method, error, (time.perf_counter() - started) * 1000)
                await abort_with(context, as_convgen_error(error))

    return wrapped


def _wrap_stream(method: str, behavior: StreamBehavior) -> WriterBehavior:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        started = time.perf_counter()
        with log_context(rpc=method):
            try:
                await write_responses(behavior(request, context), context)
            except (AbortError, asyncio.CancelledError):
                raise
            except Exception as error:  # noqa: BLE001 - the last line of defence: nothing may end in UNKNOWN
                _log_failure(method, error, (time.perf_counter() - started) * 1000)
                await abort_with(context, as_convgen_error(error))

    return wrapped


async def write_responses(
    responses: AsyncGenerator[Any, None] | Awaitable[None], context: grpc.aio.ServicerContext[Any, Any]
) -> None:
    """Sends a streaming servicer's responses: iterates a generator, or awaits a handler that writes itself."""
    if inspect.isawaitable(responses):
        await responses
        return
    # We write instead of handing gRPC a generator: gRPC drops a generator it iterates without closing it when the
    # call is cancelled mid-send, so its cleanup (a job feed, a pooled connection) would wait for the garbage
    # collector. Here a cancellation unwinds through the servicer's generator at once, in this task.
    async with contextlib.aclosing(responses) as stream:
        async for response in stream:
            await context.write(response)
