"""The token and cost columns batch_jobs, batch_items and conversations carry, named as the fields of Usage."""

from __future__ import annotations

from dataclasses import fields
from decimal import Decimal
from typing import Any

import asyncpg

from batch_service.domain import Usage

USAGE_COLUMNS = tuple(f.name for f in fields(Usage))
# PostgreSQL array types of the columns, for statements that unnest one array per column.
USAGE_ARRAY_TYPES = tuple("numeric[]" if f.type == "Decimal" else "bigint[]" for f in fields(Usage))
# A conversation has every column but the count: its NULL cost_usd says that its price is unknown.
CONVERSATION_USAGE_COLUMNS = tuple(column for column in USAGE_COLUMNS if column != "unpriced_conversations")


def usage_of(r: asyncpg.Record) -> Usage:
    """The Usage in a batch_jobs or batch_items record."""
    return Usage(**{column: r[column] for column in USAGE_COLUMNS})


def conversation_usage_of(r: asyncpg.Record) -> Usage:
    """The Usage of a conversations record: a NULL cost (unknown price) is one unpriced conversation, costing 0.

    The costs by kind are NULL also for conversations costed before price tables (their cost_usd is known); they
    count as 0 there.
    """
    values = {column: r[column] for column in CONVERSATION_USAGE_COLUMNS}
    unpriced = values["cost_usd"] is None
    priced: dict[str, Any] = {column: Decimal(0) if value is None else value for column, value in values.items()}
    return Usage(**priced, unpriced_conversations=int(unpriced))
