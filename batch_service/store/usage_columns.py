"""The token and cost columns batch_jobs and batch_items both carry, named as the fields of Usage."""

from __future__ import annotations

from dataclasses import fields

import asyncpg

from batch_service.domain import Usage

USAGE_COLUMNS = tuple(f.name for f in fields(Usage))


def usage_of(r: asyncpg.Record) -> Usage:
    """The Usage in a batch_jobs or batch_items record."""
    return Usage(**{column: r[column] for column in USAGE_COLUMNS})
