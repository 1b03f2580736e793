"""Bearer-token authentication of incoming calls; with no tokens configured, only local callers get in."""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Iterable
from typing import Any

import grpc

from convgen.errors import Unauthenticated
from convgen.rpc.wrapping import UnaryBehavior, WrappingInterceptor
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


class AuthInterceptor(WrappingInterceptor):
    """Checks `authorization: Bearer <token>` against the accepted tokens before a servicer runs."""

    def __init__(self, tokens: Iterable[str], *, open_health_and_reflection: bool, service: str) -> None:
        super().__init__()
        self._tokens = [t.encode() for t in tokens]
        self._open = open_health_and_reflection
        if not self._tokens:
            logger.warning("%s: auth is OFF (AUTH_TOKENS unset): accepting local callers only", service)

    def applies_to(self, method: str) -> bool:
        """Every method needs a token, except health and reflection when they are configured open."""
        return not (self._open and method.startswith(OPEN_PREFIXES))

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

    def wrap_unary(self, method: str, behavior: UnaryBehavior) -> UnaryBehavior:
        """Checks the caller, then runs the call (the guard reads the metadata from each call's context)."""

        async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            self.check(context.invocation_metadata() or (), context.peer())
            return await behavior(request, context)

        return guarded


def auth_interceptor(settings: Settings, service: str) -> AuthInterceptor:
    """The auth interceptor a service's settings ask for."""
    return AuthInterceptor(
        settings.accepted_tokens,
        open_health_and_reflection=settings.auth_open_health_and_reflection,
        service=service,
    )
