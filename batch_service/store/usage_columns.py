"""The token and cost columns batch_jobs and batch_items both carry."""

from __future__ import annotations

import asyncpg

from batch_service.domain import Usage


def usage_of(r: asyncpg.Record) -> Usage:
    """The Usage in a batch_jobs or batch_items record."""
    return Usage(
        input_tokens=r["input_tokens"],
        output_tokens=r["output_tokens"],
        cache_creation_input_tokens=r["cache_creation_input_tokens"],
        cache_read_input_tokens=r["cache_read_input_tokens"],
        cost_usd=r["cost_usd"],
    )
