"""The options of every channel convgen opens: the batch service's to the generation service, the client's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def channel_options(max_message_bytes: int, extra: Sequence[tuple[str, Any]] = ()) -> list[tuple[str, Any]]:
    """Large messages, keepalive pings, quick reconnects; `extra` adds or overrides options."""
    options: dict[str, Any] = {
        "grpc.max_receive_message_length": max_message_bytes,
        "grpc.max_send_message_length": max_message_bytes,
        "grpc.keepalive_time_ms": 30_000,
        "grpc.keepalive_timeout_ms": 10_000,
        # Reconnect soon after a server comes back (gRPC's default backoff grows to two minutes).
        "grpc.initial_reconnect_backoff_ms": 250,
        "grpc.min_reconnect_backoff_ms": 250,
        "grpc.max_reconnect_backoff_ms": 5_000,
    }
    options.update(dict(extra))
    return list(options.items())
