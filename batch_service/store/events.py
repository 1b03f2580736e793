"""All SQL for the batch_job_events table: the append-only, per-job-sequenced record of every transition."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import asyncpg

from batch_service.domain import Counters, EventKind, EventRow, ItemState, JobState, StateReason
from convgen.db.database import Connection

# NOTIFY channel; payloads are "job_id:sequence" (ids only, never content).
EVENTS_CHANNEL = "convgen_batch_events"
# NOTIFY channel telling dispatchers that items became claimable.
WORK_CHANNEL = "convgen_batch_work"


@dataclass(frozen=True)
class NewEvent:
    """An event to append; the caller reserved its sequence number under the job's row lock."""

    sequence: int
    kind: EventKind
    job_state: JobState
    counters: Counters
    previous_job_state: JobState | None = None
    item_id: uuid.UUID | None = None
    position: int | None = None
    item_state: ItemState | None = None
    attempt: int | None = None
    conversation_pk: uuid.UUID | None = None
    conversation_business_key: uuid.UUID | None = None
    error_code: str | None = None
    error_message: str | None = None
    retry_delay_ms: int | None = None
    message: str = ""
    state_reason: StateReason | None = None


def event_row(r: asyncpg.Record) -> EventRow:
    """An EventRow from a batch_job_events record."""
    return EventRow(
        job_id=r["batch_job_id"],
        sequence=r["sequence"],
        kind=EventKind(r["kind"]),
        job_state=JobState(r["job_state"]),
        previous_job_state=JobState(r["previous_job_state"]) if r["previous_job_state"] else None,
        item_id=r["item_id"],
        position=r["position"],
        item_state=ItemState(r["item_state"]) if r["item_state"] else None,
        attempt=r["attempt"],
        conversation_pk=r["conversation_pk"],
        conversation_business_key=r["conversation_business_key"],
        error_code=r["error_code"],
        error_message=r["error_message"],
        retry_delay_ms=r["retry_delay_ms"],
        message=r["message"],
        state_reason=StateReason(r["state_reason"], r["state_message"] or "") if r["state_reason"] else None,
        counters=Counters(
            total=r["queued_items"]
            + r["processing_items"]
            + r["completed_items"]
            + r["failed_items"]
            + r["cancelled_items"],
            queued=r["queued_items"],
            processing=r["processing_items"],
            completed=r["completed_items"],
            failed=r["failed_items"],
            cancelled=r["cancelled_items"],
        ),
        created_at=r["created_at"],
    )


async def append(
    conn: Connection, job_id: uuid.UUID, events: Sequence[NewEvent], *, wake_workers: bool = False
) -> None:
    """Appends events in one statement and notifies listeners of the last sequence at commit."""
    if not events:
        return

    def column(name: str) -> list[object]:
        values = [getattr(e, name) for e in events]
        return [v.value if isinstance(v, (EventKind, JobState, ItemState)) else v for v in values]

    await conn.execute(
        """
        WITH inserted AS (
            INSERT INTO batch_job_events (
                batch_job_id, sequence, kind, job_state, previous_job_state, item_id, position, item_state, attempt,
                conversation_pk, conversation_business_key, error_code, error_message, retry_delay_ms, message,
                queued_items, processing_items, completed_items, failed_items, cancelled_items, state_reason,
                state_message)
            SELECT $1, * FROM unnest(
                $2::bigint[], $3::text[], $4::text[], $5::text[], $6::uuid[], $7::int[], $8::text[], $9::int[],
                $10::uuid[], $11::uuid[], $12::text[], $13::text[], $14::bigint[], $15::text[],
                $16::int[], $17::int[], $18::int[], $19::int[], $20::int[], $24::text[], $25::text[])
            RETURNING sequence
        )
        SELECT pg_notify($21, $1::text || ':' || max(sequence)),
               CASE WHEN $22 THEN pg_notify($23, $1::text) END
        FROM inserted
        """,
        job_id,
        column("sequence"),
        column("kind"),
        column("job_state"),
        column("previous_job_state"),
        column("item_id"),
        column("position"),
        column("item_state"),
        column("attempt"),
        column("conversation_pk"),
        column("conversation_business_key"),
        column("error_code"),
        column("error_message"),
        column("retry_delay_ms"),
        column("message"),
        [e.counters.queued for e in events],
        [e.counters.processing for e in events],
        [e.counters.completed for e in events],
        [e.counters.failed for e in events],
        [e.counters.cancelled for e in events],
        EVENTS_CHANNEL,
        wake_workers,
        WORK_CHANNEL,
        [e.state_reason.reason if e.state_reason else None for e in events],
        [e.state_reason.message if e.state_reason else None for e in events],
    )


async def after(conn: Connection, job_id: uuid.UUID, after_sequence: int, *, limit: int) -> list[EventRow]:
    """A job's events with a sequence above after_sequence, in order."""
    rows = await conn.fetch(
        "SELECT * FROM batch_job_events WHERE batch_job_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3",
        job_id,
        after_sequence,
        limit,
    )
    return [event_row(r) for r in rows]


async def last_sequence(conn: Connection, job_id: uuid.UUID) -> int:
    """The sequence of the job's latest event (0 when it has none)."""
    value: int | None = await conn.fetchval("SELECT last_sequence FROM batch_jobs WHERE id = $1", job_id)
    return value or 0


@dataclass(frozen=True)
class LogEvent:
    """An event with the human keys of its item's parameters, for rendering log lines."""

    event: EventRow
    persona_key: str | None
    arc_key: str | None
    topic_key: str | None


async def stream_for_log(conn: Connection, job_id: uuid.UUID, *, batch: int = 5000) -> AsyncIterator[LogEvent]:
    """Every event of a job in order, with item parameter keys, read in batches (logs of big jobs are large)."""
    last = 0
    while True:
        rows = await conn.fetch(
            """
            SELECT e.*, p.persona_key, a.arc_key, t.topic_key
            FROM batch_job_events e
            LEFT JOIN batch_items i ON i.id = e.item_id
            LEFT JOIN personas p ON p.id = i.persona_id
            LEFT JOIN emotional_arcs a ON a.id = i.emotional_arc_id
            LEFT JOIN training_topics t ON t.id = i.training_topic_id
            WHERE e.batch_job_id = $1 AND e.sequence > $2
            ORDER BY e.sequence
            LIMIT $3
            """,
            job_id,
            last,
            batch,
        )
        for r in rows:
            yield LogEvent(event_row(r), r["persona_key"], r["arc_key"], r["topic_key"])
        if len(rows) < batch:
            return
        last = rows[-1]["sequence"]


async def notify_work(conn: Connection) -> None:
    """Wakes every dispatcher (items became claimable)."""
    await conn.execute("SELECT pg_notify($1, '')", WORK_CHANNEL)
