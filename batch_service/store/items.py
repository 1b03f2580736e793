"""All SQL for the batch_items table: creation, claims with leases, outcomes, recovery and listing."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from batch_service.domain import Completion, ItemRow, ItemState
from batch_service.store.usage_columns import usage_of
from convgen.catalog.models import GenerationParameters, Tier
from convgen.db.database import Connection

_COLUMNS = """
    i.id, i.batch_job_id, i.position, i.persona_id, i.emotional_arc_id, i.training_topic_id, i.tier, i.template_id,
    i.status, i.run, i.attempts, i.error_code, i.error_message, i.conversation_id,
    i.input_tokens, i.output_tokens, i.cache_creation_input_tokens, i.cache_read_input_tokens, i.cost_usd,
    i.started_at, i.finished_at
"""
# RETURNING cannot join, so outcome statements return the item alone; the business key is added by the caller.
_RETURNING = """
    RETURNING id, batch_job_id, position, persona_id, emotional_arc_id, training_topic_id, tier, template_id,
              status, run, attempts, error_code, error_message, conversation_id,
              input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens, cost_usd,
              started_at, finished_at
"""


def item_row(r: asyncpg.Record) -> ItemRow:
    """An ItemRow from a batch_items record (with the business key when the statement joined conversations)."""
    return ItemRow(
        id=r["id"],
        job_id=r["batch_job_id"],
        position=r["position"],
        parameters=GenerationParameters(
            persona_id=r["persona_id"],
            emotional_arc_id=r["emotional_arc_id"],
            training_topic_id=r["training_topic_id"],
            tier=Tier(r["tier"]),
            template_id=r["template_id"],
        ),
        status=ItemState(r["status"]),
        run=r["run"],
        attempts=r["attempts"],
        error_code=r["error_code"],
        error_message=r["error_message"],
        conversation_pk=r["conversation_id"],
        conversation_business_key=r.get("business_key"),
        usage=usage_of(r),
        started_at=r["started_at"],
        finished_at=r["finished_at"],
    )


async def create_all(conn: Connection, job_id: uuid.UUID, parameters: Sequence[GenerationParameters]) -> None:
    """Inserts a job's items in position order with COPY (fast for 100,000 items)."""
    await conn.copy_records_to_table(
        "batch_items",
        records=(
            (job_id, position, p.persona_id, p.emotional_arc_id, p.training_topic_id, p.tier.value, p.template_id)
            for position, p in enumerate(parameters)
        ),
        columns=[
            "batch_job_id",
            "position",
            "persona_id",
            "emotional_arc_id",
            "training_topic_id",
            "tier",
            "template_id",
        ],
    )


async def claim(conn: Connection, job_id: uuid.UUID, *, owner: str, lease_seconds: float, limit: int) -> list[ItemRow]:
    """Moves up to `limit` due queued items of a job to processing under this owner's lease."""
    rows = await conn.fetch(
        """
        UPDATE batch_items SET
            status = 'processing', lease_owner = $2, lease_expires_at = clock_timestamp() + make_interval(secs => $3),
            attempts = attempts + 1, started_at = clock_timestamp()
        WHERE id IN (
            SELECT id FROM batch_items
            WHERE batch_job_id = $1 AND status = 'queued' AND next_attempt_at <= clock_timestamp()
            ORDER BY next_attempt_at, position
            LIMIT $4
            FOR UPDATE SKIP LOCKED
        )
        """
        + _RETURNING,
        job_id,
        owner,
        lease_seconds,
        limit,
    )
    return sorted((item_row(r) for r in rows), key=lambda i: i.position)


async def complete(conn: Connection, completions: Sequence[Completion], *, owner: str) -> list[ItemRow]:
    """Marks this owner's processing items completed, in one statement; items whose lease was lost are skipped."""
    rows = await conn.fetch(
        """
        UPDATE batch_items SET
            status = 'completed', conversation_id = v.v_conversation_pk, finished_at = clock_timestamp(),
            lease_owner = NULL, lease_expires_at = NULL, error_code = NULL, error_message = NULL,
            input_tokens = v.v_input, output_tokens = v.v_output,
            cache_creation_input_tokens = v.v_cache_write, cache_read_input_tokens = v.v_cache_read, cost_usd = v.v_cost
        FROM unnest($2::uuid[], $3::uuid[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[], $8::numeric[])
            AS v(v_item_id, v_conversation_pk, v_input, v_output, v_cache_write, v_cache_read, v_cost)
        WHERE batch_items.id = v.v_item_id AND batch_items.status = 'processing' AND batch_items.lease_owner = $1
        """
        + _RETURNING,
        owner,
        [c.item_id for c in completions],
        [c.conversation_pk for c in completions],
        [c.usage.input_tokens for c in completions],
        [c.usage.output_tokens for c in completions],
        [c.usage.cache_creation_input_tokens for c in completions],
        [c.usage.cache_read_input_tokens for c in completions],
        [c.usage.cost_usd for c in completions],
    )
    return sorted((item_row(r) for r in rows), key=lambda i: i.position)


async def fail(
    conn: Connection, item_id: uuid.UUID, *, owner: str, error_code: str, error_message: str
) -> ItemRow | None:
    """Marks this owner's processing item failed for good; None if the lease was lost."""
    row = await conn.fetchrow(
        """
        UPDATE batch_items SET
            status = 'failed', error_code = $3, error_message = $4, finished_at = clock_timestamp(),
            lease_owner = NULL, lease_expires_at = NULL
        WHERE id = $1 AND status = 'processing' AND lease_owner = $2
        """
        + _RETURNING,
        item_id,
        owner,
        error_code,
        error_message,
    )
    return item_row(row) if row else None


async def requeue(
    conn: Connection,
    item_id: uuid.UUID,
    *,
    owner: str,
    delay_seconds: float,
    error_code: str,
    error_message: str,
    spend_attempt: bool,
) -> ItemRow | None:
    """Puts this owner's processing item back in the queue, due after the delay; None if the lease was lost.

    Without spend_attempt the attempt is given back and counted as a recovery instead (the failure was not the
    item's: the generation service was unreachable).
    """
    row = await conn.fetchrow(
        """
        UPDATE batch_items SET
            status = 'queued',
            attempts = CASE WHEN $6 THEN attempts ELSE greatest(attempts - 1, 0) END,
            lease_recoveries = lease_recoveries + CASE WHEN $6 THEN 0 ELSE 1 END,
            error_code = $4, error_message = $5, next_attempt_at = clock_timestamp() + make_interval(secs => $3),
            lease_owner = NULL, lease_expires_at = NULL
        WHERE id = $1 AND status = 'processing' AND lease_owner = $2
        """
        + _RETURNING,
        item_id,
        owner,
        delay_seconds,
        error_code,
        error_message,
        spend_attempt,
    )
    return item_row(row) if row else None


async def recoveries_of(conn: Connection, item_id: uuid.UUID, *, owner: str) -> int | None:
    """How often this owner's processing item was put back without using an attempt; None if not ours."""
    value: int | None = await conn.fetchval(
        "SELECT lease_recoveries FROM batch_items WHERE id = $1 AND status = 'processing' AND lease_owner = $2",
        item_id,
        owner,
    )
    return value


async def release_owned(conn: Connection, job_id: uuid.UUID, *, owner: str) -> list[ItemRow]:
    """Puts this owner's processing items of a job back in the queue without using an attempt (shutdown)."""
    rows = await conn.fetch(
        """
        UPDATE batch_items SET
            status = 'queued', attempts = greatest(attempts - 1, 0), next_attempt_at = clock_timestamp(),
            lease_owner = NULL, lease_expires_at = NULL
        WHERE batch_job_id = $1 AND status = 'processing' AND lease_owner = $2
        """
        + _RETURNING,
        job_id,
        owner,
    )
    return [item_row(r) for r in rows]


async def jobs_with_expired_leases(conn: Connection) -> list[uuid.UUID]:
    """Jobs that have processing items whose lease has expired (their worker died)."""
    rows = await conn.fetch(
        """
        SELECT DISTINCT batch_job_id FROM batch_items
        WHERE status = 'processing' AND lease_expires_at < clock_timestamp()
        """
    )
    return [r["batch_job_id"] for r in rows]


async def recover_expired(conn: Connection, job_id: uuid.UUID, *, max_recoveries: int) -> list[ItemRow]:
    """Re-queues a job's items whose lease expired, without using an attempt (only under the job's lock)."""
    rows = await conn.fetch(
        """
        UPDATE batch_items SET
            status = 'queued', attempts = greatest(attempts - 1, 0), lease_recoveries = lease_recoveries + 1,
            next_attempt_at = clock_timestamp(), lease_owner = NULL, lease_expires_at = NULL
        WHERE batch_job_id = $1 AND status = 'processing' AND lease_expires_at < clock_timestamp()
          AND lease_recoveries < $2
        """
        + _RETURNING,
        job_id,
        max_recoveries,
    )
    return [item_row(r) for r in rows]


async def fail_expired(conn: Connection, job_id: uuid.UUID, *, max_recoveries: int) -> list[ItemRow]:
    """Fails a job's expired items that were already recovered max_recoveries times (they kill their workers)."""
    rows = await conn.fetch(
        """
        UPDATE batch_items SET
            status = 'failed', error_code = 'ABORTED', finished_at = clock_timestamp(),
            error_message = 'worker lost: the item''s worker stopped renewing its lease '
                            || (lease_recoveries + 1) || ' times; giving up',
            lease_owner = NULL, lease_expires_at = NULL
        WHERE batch_job_id = $1 AND status = 'processing' AND lease_expires_at < clock_timestamp()
          AND lease_recoveries >= $2
        """
        + _RETURNING,
        job_id,
        max_recoveries,
    )
    return [item_row(r) for r in rows]


async def renew_leases(conn: Connection, item_ids: Sequence[uuid.UUID], *, owner: str, lease_seconds: float) -> int:
    """Extends this owner's leases on the items it is still working on; returns how many."""
    result = await conn.execute(
        """
        UPDATE batch_items SET lease_expires_at = clock_timestamp() + make_interval(secs => $2)
        WHERE status = 'processing' AND lease_owner = $1 AND id = ANY($3::uuid[])
        """,
        owner,
        lease_seconds,
        list(item_ids),
    )
    return int(result.split()[-1])


async def cancel_queued(conn: Connection, job_id: uuid.UUID) -> list[ItemRow]:
    """Cancels every queued item of a job."""
    rows = await conn.fetch(
        """
        UPDATE batch_items SET status = 'cancelled', finished_at = clock_timestamp()
        WHERE batch_job_id = $1 AND status = 'queued'
        """
        + _RETURNING,
        job_id,
    )
    return sorted((item_row(r) for r in rows), key=lambda i: i.position)


async def requeue_failed(conn: Connection, job_id: uuid.UUID, item_ids: Sequence[uuid.UUID] | None) -> list[ItemRow]:
    """Re-queues failed items (all of the job's, or the listed ones) as a new run with fresh attempts."""
    rows = await conn.fetch(
        """
        UPDATE batch_items SET
            status = 'queued', run = run + 1, attempts = 0, lease_recoveries = 0,
            next_attempt_at = clock_timestamp(), error_code = NULL, error_message = NULL,
            finished_at = NULL, started_at = NULL
        WHERE batch_job_id = $1 AND status = 'failed' AND ($2::uuid[] IS NULL OR id = ANY($2::uuid[]))
        """
        + _RETURNING,
        job_id,
        list(item_ids) if item_ids is not None else None,
    )
    return sorted((item_row(r) for r in rows), key=lambda i: i.position)


async def states_of(conn: Connection, job_id: uuid.UUID, item_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, ItemState]:
    """The state of each listed item that belongs to the job."""
    rows = await conn.fetch(
        "SELECT id, status FROM batch_items WHERE batch_job_id = $1 AND id = ANY($2::uuid[])", job_id, list(item_ids)
    )
    return {r["id"]: ItemState(r["status"]) for r in rows}


async def get(conn: Connection, item_id: uuid.UUID) -> ItemRow | None:
    """An item with its conversation's business key."""
    row = await conn.fetchrow(
        f"""
        SELECT {_COLUMNS}, c.conversation_id AS business_key
        FROM batch_items i LEFT JOIN conversations c ON c.id = i.conversation_id
        WHERE i.id = $1
        """,
        item_id,
    )
    return item_row(row) if row else None


async def list_page(
    conn: Connection, job_id: uuid.UUID, *, status: ItemState | None, after_position: int, limit: int
) -> list[ItemRow]:
    """A job's items in position order after a position (keyset; uses the (job, status, position) indexes)."""
    rows = await conn.fetch(
        f"""
        SELECT {_COLUMNS}, c.conversation_id AS business_key
        FROM batch_items i LEFT JOIN conversations c ON c.id = i.conversation_id
        WHERE i.batch_job_id = $1 AND ($2::text IS NULL OR i.status = $2) AND i.position > $3
        ORDER BY i.position
        LIMIT $4
        """,
        job_id,
        status.value if status else None,
        after_position,
        limit,
    )
    return [item_row(r) for r in rows]
