"""The read-only queries of a dataset export: its selection over batch_items, conversations and the catalog.

Every statement narrows batch_items by the same predicate (the jobs, then tier / persona / arc / topic filters) and,
for stored conversations, by the created_at window, so the count, the rows and the coverage agree. They run inside
one REPEATABLE READ transaction of the exporter, which makes them one consistent snapshot.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg

from batch_service.datasets.domain import CoverageCell, SelectedConversation, Selection
from batch_service.store.usage_columns import CONVERSATION_USAGE_COLUMNS, conversation_usage_of
from convgen.catalog.models import Tier
from convgen.db.database import Connection

# $1..$5: the items of the jobs within the filters (NULL filter = any).
_ITEMS = """
    i.batch_job_id = ANY($1::uuid[])
    AND ($2::text[] IS NULL OR i.tier = ANY($2::text[]))
    AND ($3::uuid[] IS NULL OR i.persona_id = ANY($3::uuid[]))
    AND ($4::uuid[] IS NULL OR i.emotional_arc_id = ANY($4::uuid[]))
    AND ($5::uuid[] IS NULL OR i.training_topic_id = ANY($5::uuid[]))
"""
# $6, $7: the created_at window of the conversations.
_WINDOW = """
    ($6::timestamptz IS NULL OR c.created_at >= $6) AND ($7::timestamptz IS NULL OR c.created_at < $7)
"""
# Rows are exported in creation order (the earliest of a near-duplicate cluster is the one kept).
_ORDER = "c.created_at, c.id"


def _parameters(selection: Selection) -> list[Any]:
    def optional(values: Sequence[Any]) -> list[Any] | None:
        return list(values) if values else None

    return [
        list(selection.job_ids),
        optional([t.value for t in selection.tiers]),
        optional(selection.persona_ids),
        optional(selection.emotional_arc_ids),
        optional(selection.training_topic_ids),
        selection.created_after,
        selection.created_before,
    ]


async def job_states(conn: Connection, job_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The state of each job that exists, by id."""
    rows = await conn.fetch("SELECT id, state FROM batch_jobs WHERE id = ANY($1::uuid[])", list(job_ids))
    return {r["id"]: r["state"] for r in rows}


async def count_selected(conn: Connection, selection: Selection) -> int:
    """Conversations the selection matches."""
    value = await conn.fetchval(
        f"""
        SELECT count(DISTINCT c.id) FROM batch_items i JOIN conversations c ON c.id = i.conversation_id
        WHERE i.status = 'completed' AND {_ITEMS} AND {_WINDOW}
        """,
        *_parameters(selection),
    )
    return int(value or 0)


_SELECTED = f"""
    SELECT DISTINCT ON ({_ORDER})
        c.id, c.conversation_id, c.request_id, c.created_by, i.batch_job_id, i.id AS item_id,
        c.persona_id, p.persona_key, c.emotional_arc_id, a.arc_key, c.training_topic_id, t.topic_key,
        c.tier, c.template_id, pt.template_name, c.processing_status, c.raw_bucket, c.raw_key, c.final_bucket,
        c.final_key, c.turn_count, c.model, {", ".join(f"c.{column}" for column in CONVERSATION_USAGE_COLUMNS)},
        c.validation_warnings, c.created_at
    FROM batch_items i
    JOIN conversations c ON c.id = i.conversation_id
    JOIN personas p ON p.id = c.persona_id
    JOIN emotional_arcs a ON a.id = c.emotional_arc_id
    JOIN training_topics t ON t.id = c.training_topic_id
    JOIN prompt_templates pt ON pt.id = c.template_id
    WHERE i.status = 'completed' AND {_ITEMS} AND {_WINDOW}
    ORDER BY {_ORDER}, i.id
"""


def _selected(r: asyncpg.Record) -> SelectedConversation:
    return SelectedConversation(
        pk=r["id"],
        business_key=r["conversation_id"],
        request_id=r["request_id"],
        created_by=r["created_by"],
        job_id=r["batch_job_id"],
        item_id=r["item_id"],
        persona_id=r["persona_id"],
        persona_key=r["persona_key"],
        emotional_arc_id=r["emotional_arc_id"],
        arc_key=r["arc_key"],
        training_topic_id=r["training_topic_id"],
        topic_key=r["topic_key"],
        tier=Tier(r["tier"]),
        template_id=r["template_id"],
        template_name=r["template_name"],
        processing_status=r["processing_status"],
        raw_bucket=r["raw_bucket"],
        raw_key=r["raw_key"],
        final_bucket=r["final_bucket"],
        final_key=r["final_key"],
        turn_count=r["turn_count"],
        model=r["model"],
        usage=conversation_usage_of(r),
        validation_warnings=list(r["validation_warnings"]),
        created_at=r["created_at"],
    )


async def stream_selected(
    conn: Connection, selection: Selection, *, prefetch: int = 500
) -> AsyncIterator[SelectedConversation]:
    """The selected conversations in creation order, through a cursor (the caller holds a transaction)."""
    async for record in conn.cursor(_SELECTED, *_parameters(selection), prefetch=prefetch):
        yield _selected(record)


async def stream_coverage(conn: Connection, selection: Selection) -> AsyncIterator[CoverageCell]:
    """Each job's persona × arc × topic combinations with their items by outcome (the caller holds a transaction)."""
    query = f"""
        SELECT i.batch_job_id, i.persona_id, i.emotional_arc_id, i.training_topic_id,
               p.persona_key, a.arc_key, t.topic_key,
               count(*) AS items,
               count(*) FILTER (WHERE i.status = 'completed' AND {_WINDOW}) AS selected,
               count(*) FILTER (WHERE i.status = 'completed' AND NOT ({_WINDOW})) AS outside_window,
               count(*) FILTER (WHERE i.status = 'failed') AS failed,
               count(*) FILTER (WHERE i.status = 'cancelled') AS cancelled,
               count(*) FILTER (WHERE i.status IN ('queued', 'processing')) AS pending
        FROM batch_items i
        LEFT JOIN conversations c ON c.id = i.conversation_id
        LEFT JOIN personas p ON p.id = i.persona_id
        LEFT JOIN emotional_arcs a ON a.id = i.emotional_arc_id
        LEFT JOIN training_topics t ON t.id = i.training_topic_id
        WHERE {_ITEMS}
        GROUP BY i.batch_job_id, i.persona_id, i.emotional_arc_id, i.training_topic_id,
                 p.persona_key, a.arc_key, t.topic_key
        ORDER BY i.batch_job_id, p.persona_key, a.arc_key, t.topic_key, i.persona_id, i.emotional_arc_id,
                 i.training_topic_id
    """
    async for r in conn.cursor(query, *_parameters(selection), prefetch=1000):
        yield CoverageCell(
            job_id=r["batch_job_id"],
            persona_id=r["persona_id"],
            emotional_arc_id=r["emotional_arc_id"],
            training_topic_id=r["training_topic_id"],
            persona_key=r["persona_key"] or str(r["persona_id"]),
            arc_key=r["arc_key"] or str(r["emotional_arc_id"]),
            topic_key=r["topic_key"] or str(r["training_topic_id"]),
            items=r["items"],
            selected=r["selected"],
            failed=r["failed"],
            cancelled=r["cancelled"],
            pending=r["pending"],
            outside_window=r["outside_window"],
        )


async def template_texts(conn: Connection, template_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, tuple[str, str]]:
    """(name, text) of each template, by id."""
    rows = await conn.fetch(
        "SELECT id, template_name, template_text FROM prompt_templates WHERE id = ANY($1::uuid[])", list(template_ids)
    )
    return {r["id"]: (r["template_name"], r["template_text"]) for r in rows}
