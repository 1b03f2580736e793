"""All SQL for the conversations table."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from convgen.catalog.models import GenerationParameters, Tier
from convgen.db.database import Connection
from convgen.pricing import Cost, CostByKind, TokenUsage


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
    usage: TokenUsage
    cost: Cost
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
    priced = r["cost_usd"] is not None
    return ConversationRow(
        id=r["id"],
        created_at=r["created_at"],
        conversation_id=r["conversation_id"],
        request_id=r["request_id"],
        created_by=r["created_by"],
        persona_id=r["persona_id"],
        emotional_arc_id=r["emotional_arc_id"],
        training_topic_id=r["training_topic_id"],
        tier=Tier(r["tier"]),
        template_id=r["template_id"],
        processing_status=r["processing_status"],
        raw_bucket=r["raw_bucket"],
        raw_key=r["raw_key"],
        final_bucket=r["final_bucket"],
        final_key=r["final_key"],
        turn_count=r["turn_count"],
        model=r["model"],
        usage=TokenUsage(
            input_tokens=r["input_tokens"],
            output_tokens=r["output_tokens"],
            cache_creation_5m_input_tokens=r["cache_creation_5m_input_tokens"],
            cache_creation_1h_input_tokens=r["cache_creation_1h_input_tokens"],
            cache_read_input_tokens=r["cache_read_input_tokens"],
            service_tier=r["service_tier"],
        ),
        cost=Cost(
            usd=r["cost_usd"],
            # Rows costed before the split have a total only.
            by_kind=CostByKind(
                input=r["input_cost_usd"],
                output=r["output_cost_usd"],
                cache_write_5m=r["cache_write_5m_cost_usd"],
                cache_write_1h=r["cache_write_1h_cost_usd"],
                cache_read=r["cache_read_cost_usd"],
            )
            if priced and r["input_cost_usd"] is not None
            else None,
            price_version=r["price_version"] or "",
        ),
        validation_warnings=list(r["validation_warnings"]),
        persona_key=r["persona_key"],
        arc_key=r["arc_key"],
        topic_key=r["topic_key"],
        template_name=r["template_name"],
    )


async def insert(conn: Connection, new: NewConversation) -> tuple[uuid.UUID, datetime]:
    """Inserts a conversation; returns (pk, created_at).

    Raises asyncpg.UniqueViolationError when the request_id already has a conversation.
    """
    usage, by_kind = new.usage, new.cost.by_kind
    row = await conn.fetchrow(
        """
        INSERT INTO conversations (
            conversation_id, request_id, created_by, persona_id, emotional_arc_id, training_topic_id, tier,
            template_id, processing_status, raw_bucket, raw_key, final_bucket, final_key, turn_count, model,
            input_tokens, output_tokens, cache_creation_5m_input_tokens, cache_creation_1h_input_tokens,
            cache_read_input_tokens, service_tier, price_version, cost_usd, input_cost_usd, output_cost_usd,
            cache_write_5m_cost_usd, cache_write_1h_cost_usd, cache_read_cost_usd, validation_warnings)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21,
                $22, $23, $24, $25, $26, $27, $28, $29)
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
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_creation_5m_input_tokens,
        usage.cache_creation_1h_input_tokens,
        usage.cache_read_input_tokens,
        usage.service_tier,
        new.cost.price_version,
        new.cost.usd,
        by_kind.input if by_kind else None,
        by_kind.output if by_kind else None,
        by_kind.cache_write_5m if by_kind else None,
        by_kind.cache_write_1h if by_kind else None,
        by_kind.cache_read if by_kind else None,
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


@dataclass(frozen=True)
class OutputStats:
    """Output tokens of a template's recent conversations: how many, their average and the largest."""

    conversations: int
    average: float
    largest: int


async def output_stats(
    conn: Connection, model: str, template_ids: list[uuid.UUID], *, recent: int
) -> dict[uuid.UUID, OutputStats]:
    """Per template, the output tokens of its `recent` newest conversations made by the model."""
    rows = await conn.fetch(
        """
        SELECT template_id, count(*) AS n, avg(output_tokens)::float8 AS average, max(output_tokens) AS largest
        FROM (
            SELECT template_id, output_tokens,
                   row_number() OVER (PARTITION BY template_id ORDER BY created_at DESC) AS newest
            FROM conversations
            WHERE model = $1 AND template_id = ANY($2::uuid[])
        ) recent
        WHERE newest <= $3
        GROUP BY template_id
        """,
        model,
        template_ids,
        recent,
    )
    return {r["template_id"]: OutputStats(r["n"], r["average"], r["largest"]) for r in rows}
