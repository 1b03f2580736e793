"""Bearer-token authentication of incoming calls; with no tokens configured, only local callers get in."""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

import grpc

from convgen.errors import Unauthenticated
from convgen.rpc.interceptors import StreamBehavior, UnaryBehavior, WriterBehavior, write_responses
from convgen.settings import Settings

logger = logging.getLogger(__name__)

# Method prefixes that stay reachable without a token when AUTH_OPEN_HEALTH_AND_REFLECTION is on.
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/", "/grpc.reflection.v1.")


def is_local_peer(peer: str) -> bool:
    """True for loopback TCP peers and unix sockets (gRPC peer strings like ipv4:127.0.0.1:5000)."""
    if peer.startswith("unix:"):
        return True
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        host = rest.rsplit(":", 1)[0]
    elif kind == "ipv6":
        host = rest.rsplit(":", 1)[0].strip("[]")
    else:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks `authorization: Bearer <token>` against the accepted tokens before a servicer runs."""

    def __init__(self, tokens: Iterable[str], *, open_health_and_reflection: bool, service: str) -> None:
        self._tokens = [t.encode() for t in tokens]
        self._open = open_health_and_reflection
        # Guards read the metadata from the call's context, so one guarded handler per method serves every call.
        self._guarded: dict[str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]] = {}
        if not self._tokens:
            logger.warning("%s: auth is OFF (AUTH_TOKENS unset): accepting local callers only", service)

    def _is_open(self, method: str) -> bool:
        return self._open and method.startswith(OPEN_PREFIXES)

    def check(self, metadata: Iterable[tuple[str, Any]], peer: str) -> None:
        """Raises Unauthenticated unless the call may proceed."""
        if not self._tokens:
            if not is_local_peer(peer):
                raise Unauthenticated(
                    "auth is off on this server (AUTH_TOKENS unset), so only local callers are accepted",
                    reason="AUTH_REQUIRED_FOR_REMOTE_CALLERS",
                )
            return
        values = [str(value) for key, value in metadata if key == "authorization"]
        if not values:
            raise Unauthenticated("missing bearer token in the authorization metadata", reason="TOKEN_MISSING")
        scheme, _, token = values[0].partition(" ")
        presented = token.strip().encode()
        if scheme.lower() != "bearer" or not presented:
            raise Unauthenticated("authorization metadata must be 'Bearer <token>'", reason="TOKEN_MALFORMED")
        # Compare against every token so timing does not reveal which one nearly matched.
        matches = [hmac.compare_digest(presented, accepted) for accepted in self._tokens]
        if not any(matches):
            raise Unauthenticated("invalid bearer token", reason="TOKEN_INVALID")

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or self._is_open(method):
            return handler
        cached = self._guarded.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        guarded = self._guard(handler)
        self._guarded[method] = (handler, guarded)
        return guarded

    def _guard(self, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        replace: Callable[..., grpc.RpcMethodHandler[Any, Any]] = handler._replace  # type: ignore[attr-defined]
        if handler.unary_unary is not None:
            return replace(unary_unary=self._guard_unary(cast(UnaryBehavior, handler.unary_unary)))
        if handler.unary_stream is not None:
            return replace(unary_stream=self._guard_stream(cast(StreamBehavior, handler.unary_stream)))
        if handler.stream_stream is not None:
            # Server reflection is the one bidirectional stream; the guard works on any request shape.
            return replace(stream_stream=self._guard_stream(cast(StreamBehavior, handler.stream_stream)))
        return handler

    def _guard_unary(self, behavior: UnaryBehavior) -> UnaryBehavior:
        async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            self.check(context.invocation_metadata() or (), context.peer())
            return await behavior(request, context)

        return guarded

    def _guard_stream(self, behavior: StreamBehavior) -> WriterBehavior:
        async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            self.check(context.invocation_metadata() or (), context.peer())
            await write_responses(behavior(request, context), context)

        return guarded


def auth_interceptor(settings: Settings, service: str) -> AuthInterceptor:
    """The auth interceptor a service's settings ask for."""
    return AuthInterceptor(
        settings.accepted_tokens,
        open_health_and_reflection=settings.auth_open_health_and_reflection,
        service=service,
    )
