"""All SQL for the generation_failures table: generations that failed after the model was called."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from convgen.db.database import Connection


@dataclass(frozen=True)
class GenerationFailure:
    """Why one generation failed, at which step, with the raw response when there was one."""

    request_id: str
    conversation_id: uuid.UUID
    created_by: uuid.UUID
    persona_id: uuid.UUID
    emotional_arc_id: uuid.UUID
    training_topic_id: uuid.UUID
    tier: str
    template_id: uuid.UUID
    step: str
    error_code: str
    reason: str
    error_message: str
    raw_bucket: str | None
    raw_key: str | None
    model: str


async def record(conn: Connection, f: GenerationFailure) -> uuid.UUID:
    """Stores a failure and returns its id."""
    failure_id: uuid.UUID = await conn.fetchval(
        """
        INSERT INTO generation_failures (
            request_id, conversation_id, created_by, persona_id, emotional_arc_id, training_topic_id, tier,
            template_id, step, error_code, reason, error_message, raw_bucket, raw_key, model)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
        RETURNING id
        """,
        f.request_id,
        f.conversation_id,
        f.created_by,
        f.persona_id,
        f.emotional_arc_id,
        f.training_topic_id,
        f.tier,
        f.template_id,
        f.step,
        f.error_code,
        f.reason,
        f.error_message,
        f.raw_bucket,
        f.raw_key,
        f.model,
    )
    return failure_id
