"""All SQL for the conversations table."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import asyncpg

from convgen.catalog.models import GenerationParameters, Tier
from convgen.db.database import Connection


@dataclass(frozen=True)
class NewConversation:
    """A conversation ready to insert; the database assigns id (the primary key) and created_at."""

    conversation_id: uuid.UUID
    request_id: str
    created_by: uuid.UUID
    persona_id: uuid.UUID
    emotional_arc_id: uuid.UUID
    training_topic_id: uuid.UUID
    tier: Tier
    template_id: uuid.UUID
    processing_status: str
    raw_bucket: str
    raw_key: str
    final_bucket: str
    final_key: str
    turn_count: int
    model: str
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    cost_usd: Decimal
    validation_warnings: list[str] = field(default_factory=list)

    @property
    def parameters(self) -> GenerationParameters:
        """The parameters the conversation was generated from, with the template that served it."""
        return GenerationParameters(
            self.persona_id, self.emotional_arc_id, self.training_topic_id, self.tier, self.template_id
        )


@dataclass(frozen=True, kw_only=True)
class ConversationRow(NewConversation):
    """A stored conversation: what was inserted, its keys, and the human keys of its catalog entries."""

    id: uuid.UUID
    created_at: datetime
    persona_key: str
    arc_key: str
    topic_key: str
    template_name: str


@dataclass(frozen=True)
class ConversationFilter:
    """Optional filters of a listing; None means any."""

    persona_id: uuid.UUID | None = None
    emotional_arc_id: uuid.UUID | None = None
    training_topic_id: uuid.UUID | None = None
    tier: Tier | None = None
    created_by: uuid.UUID | None = None


_SELECT = """
    SELECT c.*, p.persona_key, a.arc_key, t.topic_key, pt.template_name
    FROM conversations c
    JOIN personas p ON p.id = c.persona_id
    JOIN emotional_arcs a ON a.id = c.emotional_arc_id
    JOIN training_topics t ON t.id = c.training_topic_id
    JOIN prompt_templates pt ON pt.id = c.template_id
"""


def _row(r: asyncpg.Record) -> ConversationRow:
    values = dict(r)
    values["tier"] = Tier(values["tier"])
    values["validation_warnings"] = list(values["validation_warnings"])
    return ConversationRow(**values)


async def insert(conn: Connection, new: NewConversation) -> tuple[uuid.UUID, datetime]:
    """Inserts a conversation; returns (pk, created_at).

    Raises asyncpg.UniqueViolationError when the request_id already has a conversation.
    """
    row = await conn.fetchrow(
        """
        INSERT INTO conversations (
            conversation_id, request_id, created_by, persona_id, emotional_arc_id, training_topic_id, tier,
            template_id, processing_status, raw_bucket, raw_key, final_bucket, final_key, turn_count, model,
            input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens, cost_usd,
            validation_warnings)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
        RETURNING id, created_at
        """,
        new.conversation_id,
        new.request_id,
        new.created_by,
        new.persona_id,
        new.emotional_arc_id,
        new.training_topic_id,
        new.tier.value,
        new.template_id,
        new.processing_status,
        new.raw_bucket,
        new.raw_key,
        new.final_bucket,
        new.final_key,
        new.turn_count,
        new.model,
        new.input_tokens,
        new.output_tokens,
        new.cache_creation_input_tokens,
        new.cache_read_input_tokens,
        new.cost_usd,
        new.validation_warnings,
    )
    assert row is not None
    return row["id"], row["created_at"]


async def get_by_pk(conn: Connection, pk: uuid.UUID) -> ConversationRow | None:
    """A conversation by primary key."""
    row = await conn.fetchrow(_SELECT + " WHERE c.id = $1", pk)
    return _row(row) if row else None


async def get_by_business_key(conn: Connection, business_key: uuid.UUID) -> ConversationRow | None:
    """A conversation by business key (conversation_id)."""
    row = await conn.fetchrow(_SELECT + " WHERE c.conversation_id = $1", business_key)
    return _row(row) if row else None


async def get_by_request_id(conn: Connection, request_id: str) -> ConversationRow | None:
    """The conversation generated for an idempotency key."""
    row = await conn.fetchrow(_SELECT + " WHERE c.request_id = $1", request_id)
    return _row(row) if row else None


async def list_page(
    conn: Connection,
    filters: ConversationFilter,
    *,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[ConversationRow]:
    """Newest first, keyset-paginated on (created_at, id)."""
    rows = await conn.fetch(
        _SELECT
        + """
        WHERE ($1::uuid IS NULL OR c.persona_id = $1)
          AND ($2::uuid IS NULL OR c.emotional_arc_id = $2)
          AND ($3::uuid IS NULL OR c.training_topic_id = $3)
          AND ($4::text IS NULL OR c.tier = $4)
          AND ($5::uuid IS NULL OR c.created_by = $5)
          AND ($6::timestamptz IS NULL OR (c.created_at, c.id) < ($6, $7::uuid))
        ORDER BY c.created_at DESC, c.id DESC
        LIMIT $8
        """,
        filters.persona_id,
        filters.emotional_arc_id,
        filters.training_topic_id,
        filters.tier.value if filters.tier else None,
        filters.created_by,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [_row(r) for r in rows]
