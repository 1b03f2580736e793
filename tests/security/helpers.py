"""Helpers for security tests: the bearer tokens the services are configured with, and metadata carrying one."""

from __future__ import annotations

CLIENT_TOKEN = "client-token-7f3a"
BATCH_TO_GENERATION = "batch-to-generation-91c2"


def bearer(token: str) -> tuple[tuple[str, str]]:
    """gRPC metadata with `authorization: Bearer token`."""
    return (("authorization", f"Bearer {token}"),)
