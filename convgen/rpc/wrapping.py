"""The mechanism both server interceptors share: wrap each method's behaviour once, reuse it for every call."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, cast

import grpc

UnaryBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
StreamBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncGenerator[Any, None] | Awaitable[None]]
# A streaming handler in gRPC's reader/writer style: writes with context.write() and returns nothing.
WriterBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[None]]


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    """Wraps the behaviour of every method it applies to; subclasses say how to wrap one call (wrap_unary)."""

    def __init__(self) -> None:
        # Wrapping is the same for every call of a method: done once (a handler per call costs CPU on the hot path).
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]] = {}

    def applies_to(self, method: str) -> bool:
        """Whether calls of this method are wrapped (all of them unless a subclass says otherwise)."""
        return True

    def wrap_unary(self, method: str, behavior: UnaryBehavior) -> UnaryBehavior:
        """The behaviour a unary method gets instead of its own."""
        raise NotImplementedError

    def wrap_stream(self, method: str, behavior: StreamBehavior) -> WriterBehavior:
        """A server-streaming (or bidirectional) method: sending its whole stream is wrapped as one unary call."""

        async def send(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            await write_responses(behavior(request, context), context)

        return self.wrap_unary(method, send)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not self.applies_to(method):
            return handler
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        # Generated handlers are namedtuples; _replace swaps in the wrapped behaviour.
        replace: Callable[..., grpc.RpcMethodHandler[Any, Any]] = handler._replace  # type: ignore[attr-defined]
        if handler.unary_unary is not None:
            return replace(unary_unary=self.wrap_unary(method, cast(UnaryBehavior, handler.unary_unary)))
        if handler.unary_stream is not None:
            return replace(unary_stream=self.wrap_stream(method, cast(StreamBehavior, handler.unary_stream)))
        if handler.stream_stream is not None:
            # Server reflection is the one bidirectional stream; the wrappers pass any request shape through.
            return replace(stream_stream=self.wrap_stream(method, cast(StreamBehavior, handler.stream_stream)))
        return handler


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
