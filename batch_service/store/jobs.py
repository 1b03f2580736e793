"""All SQL for the batch_jobs table. Counters only ever change by increments, under the row lock."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from batch_service.domain import CounterDelta, Counters, ErrorPolicy, JobRow, JobState, NewJob, Usage
from batch_service.store.usage_columns import usage_of
from convgen.db.database import Connection


def job_row(r: asyncpg.Record) -> JobRow:
    """A JobRow from a batch_jobs record."""
    return JobRow(
        id=r["id"],
        name=r["name"],
        request_id=r["request_id"],
        created_by=r["created_by"],
        state=JobState(r["state"]),
        stop_target=JobState(r["stop_target"]) if r["stop_target"] else None,
        error_policy=ErrorPolicy(r["error_policy"]),
        concurrency=r["concurrency"],
        max_attempts=r["max_attempts"],
        counters=Counters(
            total=r["total_items"],
            queued=r["queued_items"],
            processing=r["processing_items"],
            completed=r["completed_items"],
            failed=r["failed_items"],
            cancelled=r["cancelled_items"],
        ),
        usage=usage_of(r),
        last_sequence=r["last_sequence"],
        terminal_sequence=r["terminal_sequence"],
        log_uploaded_sequence=r["log_uploaded_sequence"],
        created_at=r["created_at"],
        started_at=r["started_at"],
        finished_at=r["finished_at"],
        updated_at=r["updated_at"],
    )


async def insert(conn: Connection, job: NewJob) -> JobRow | None:
    """Inserts a job; None when its request_id is taken already."""
    row = await conn.fetchrow(
        """
        INSERT INTO batch_jobs (name, request_id, created_by, state, error_policy, concurrency, max_attempts,
                                total_items, queued_items, started_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, CASE WHEN $4 = 'running' THEN clock_timestamp() END)
        ON CONFLICT (request_id) DO NOTHING
        RETURNING *
        """,
        job.name,
        job.request_id,
        job.created_by,
        job.state.value,
        job.error_policy.value,
        job.concurrency,
        job.max_attempts,
        job.total_items,
    )
    return job_row(row) if row else None


async def get(conn: Connection, job_id: uuid.UUID) -> JobRow | None:
    """A job by id."""
    row = await conn.fetchrow("SELECT * FROM batch_jobs WHERE id = $1", job_id)
    return job_row(row) if row else None


async def get_by_request_id(conn: Connection, request_id: str) -> JobRow | None:
    """The job created for an idempotency key."""
    row = await conn.fetchrow("SELECT * FROM batch_jobs WHERE request_id = $1", request_id)
    return job_row(row) if row else None


async def lock(conn: Connection, job_id: uuid.UUID) -> JobRow | None:
    """A job, row-locked until the transaction ends (every multi-table change locks the job first)."""
    row = await conn.fetchrow("SELECT * FROM batch_jobs WHERE id = $1 FOR UPDATE", job_id)
    return job_row(row) if row else None


async def advance(
    conn: Connection, job_id: uuid.UUID, delta: CounterDelta, *, events: int, usage: Usage | None = None
) -> JobRow:
    """Applies counter increments and reserves `events` sequence numbers; returns the job after."""
    u = usage or Usage()
    row = await conn.fetchrow(
        """
        UPDATE batch_jobs SET
            queued_items = queued_items + $2,
            processing_items = processing_items + $3,
            completed_items = completed_items + $4,
            failed_items = failed_items + $5,
            cancelled_items = cancelled_items + $6,
            input_tokens = input_tokens + $7,
            output_tokens = output_tokens + $8,
            cache_creation_input_tokens = cache_creation_input_tokens + $9,
            cache_read_input_tokens = cache_read_input_tokens + $10,
            cost_usd = cost_usd + $11,
            last_sequence = last_sequence + $12,
            updated_at = clock_timestamp()
        WHERE id = $1
        RETURNING *
        """,
        job_id,
        delta.queued,
        delta.processing,
        delta.completed,
        delta.failed,
        delta.cancelled,
        u.input_tokens,
        u.output_tokens,
        u.cache_creation_input_tokens,
        u.cache_read_input_tokens,
        u.cost_usd,
        events,
    )
    assert row is not None, f"job {job_id} vanished inside its own transaction"
    return job_row(row)


async def change_state(
    conn: Connection, job_id: uuid.UUID, state: JobState, *, stop_target: JobState | None = None
) -> JobRow:
    """Moves the job to a state and reserves one sequence number for the state-change event."""
    row = await conn.fetchrow(
        """
        UPDATE batch_jobs SET
            state = $2,
            stop_target = $3,
            last_sequence = last_sequence + 1,
            started_at = CASE WHEN $2 = 'running' THEN coalesce(started_at, clock_timestamp()) ELSE started_at END,
            finished_at = CASE WHEN $2 IN ('completed', 'failed', 'cancelled') THEN clock_timestamp() END,
            terminal_sequence = CASE WHEN $2 IN ('completed', 'failed', 'cancelled')
                                     THEN last_sequence + 1 ELSE terminal_sequence END,
            updated_at = clock_timestamp()
        WHERE id = $1
        RETURNING *
        """,
        job_id,
        state.value,
        stop_target.value if stop_target else None,
    )
    assert row is not None, f"job {job_id} vanished inside its own transaction"
    return job_row(row)


async def list_page(
    conn: Connection, *, state: JobState | None, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[JobRow]:
    """Newest first, keyset-paginated on (created_at, id)."""
    rows = await conn.fetch(
        """
        SELECT * FROM batch_jobs
        WHERE ($1::text IS NULL OR state = $1)
          AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid))
        ORDER BY created_at DESC, id DESC
        LIMIT $4
        """,
        state.value if state else None,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [job_row(r) for r in rows]


@dataclass(frozen=True)
class RunnableJob:
    """A running job that has queued items and free concurrency."""

    id: uuid.UUID
    free: int


async def runnable(conn: Connection, *, limit: int) -> list[RunnableJob]:
    """Running jobs with queued items and room under their concurrency, oldest first."""
    rows = await conn.fetch(
        """
        SELECT id, concurrency - processing_items AS free FROM batch_jobs
        WHERE state = 'running' AND queued_items > 0 AND processing_items < concurrency
        ORDER BY created_at
        LIMIT $1
        """,
        limit,
    )
    return [RunnableJob(id=r["id"], free=r["free"]) for r in rows]


async def pending_log_uploads(conn: Connection, *, limit: int) -> list[uuid.UUID]:
    """Terminal jobs whose latest log is not uploaded yet."""
    rows = await conn.fetch(
        """
        SELECT id FROM batch_jobs
        WHERE log_uploaded_sequence < terminal_sequence AND state IN ('completed', 'failed', 'cancelled')
        ORDER BY terminal_sequence
        LIMIT $1
        """,
        limit,
    )
    return [r["id"] for r in rows]


async def mark_log_uploaded(conn: Connection, job_id: uuid.UUID, sequence: int) -> None:
    """Records that the log up to a terminal sequence is in the blob store."""
    await conn.execute(
        "UPDATE batch_jobs SET log_uploaded_sequence = $2 WHERE id = $1 AND log_uploaded_sequence < $2",
        job_id,
        sequence,
    )
