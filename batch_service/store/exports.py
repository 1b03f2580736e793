"""All SQL for the dataset_exports table: creation, leases of the runner, results and listing."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from batch_service.datasets.domain import (
    DroppedRow,
    ExportFile,
    ExportResult,
    ExportRow,
    ExportSpec,
    ExportState,
)
from convgen.db.database import Connection


def export_row(r: asyncpg.Record) -> ExportRow:
    """An ExportRow from a dataset_exports record."""
    return ExportRow(
        id=r["id"],
        request_id=r["request_id"],
        state=ExportState(r["state"]),
        spec=ExportSpec.from_json(r["spec"]),
        selected=r["selected_conversations"],
        processed=r["processed_conversations"],
        exported_train=r["exported_train"],
        exported_eval=r["exported_eval"],
        dropped_by_reason={str(k): int(v) for k, v in r["dropped_by_reason"].items()},
        files=[ExportFile.from_json(f) for f in r["files"]],
        report=r["report"],
        dropped_sample=[DroppedRow.from_json(d) for d in r["dropped_sample"]],
        error_code=r["error_code"],
        error_message=r["error_message"],
        runs=r["runs"],
        created_at=r["created_at"],
        started_at=r["started_at"],
        finished_at=r["finished_at"],
    )


async def insert(conn: Connection, *, request_id: str | None, spec: ExportSpec, selected: int) -> ExportRow | None:
    """Inserts a running export; None when its request_id is taken already."""
    row = await conn.fetchrow(
        """
        INSERT INTO dataset_exports (request_id, state, spec, selected_conversations)
        VALUES ($1, 'running', $2, $3)
        ON CONFLICT (request_id) DO NOTHING
        RETURNING *
        """,
        request_id,
        spec.to_json(),
        selected,
    )
    return export_row(row) if row else None


async def get(conn: Connection, export_id: uuid.UUID) -> ExportRow | None:
    """An export by id."""
    row = await conn.fetchrow("SELECT * FROM dataset_exports WHERE id = $1", export_id)
    return export_row(row) if row else None


async def get_by_request_id(conn: Connection, request_id: str) -> ExportRow | None:
    """The export created for an idempotency key."""
    row = await conn.fetchrow("SELECT * FROM dataset_exports WHERE request_id = $1", request_id)
    return export_row(row) if row else None


async def list_page(conn: Connection, *, after: tuple[datetime, uuid.UUID] | None, limit: int) -> list[ExportRow]:
    """Newest first, keyset-paginated on (created_at, id)."""
    rows = await conn.fetch(
        """
        SELECT * FROM dataset_exports
        WHERE ($1::timestamptz IS NULL OR (created_at, id) < ($1, $2::uuid))
        ORDER BY created_at DESC, id DESC
        LIMIT $3
        """,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [export_row(r) for r in rows]


async def claim(conn: Connection, *, owner: str, lease_seconds: float) -> ExportRow | None:
    """Takes the oldest running export whose lease is free or expired under this owner's lease; a new run starts."""
    row = await conn.fetchrow(
        """
        UPDATE dataset_exports SET
            lease_owner = $1,
            lease_expires_at = clock_timestamp() + make_interval(secs => $2),
            runs = runs + 1,
            processed_conversations = 0,
            started_at = clock_timestamp(),
            updated_at = clock_timestamp()
        WHERE id = (
            SELECT id FROM dataset_exports
            WHERE state = 'running' AND (lease_expires_at IS NULL OR lease_expires_at < clock_timestamp())
            ORDER BY created_at, id
            LIMIT 1
            FOR UPDATE SKIP LOCKED
        )
        RETURNING *
        """,
        owner,
        lease_seconds,
    )
    return export_row(row) if row else None


async def renew(
    conn: Connection, export_id: uuid.UUID, *, owner: str, lease_seconds: float, selected: int, processed: int
) -> bool:
    """Extends this owner's lease and records progress; False when the lease is no longer this owner's."""
    status = await conn.execute(
        """
        UPDATE dataset_exports SET
            lease_expires_at = clock_timestamp() + make_interval(secs => $3),
            selected_conversations = $4,
            processed_conversations = $5,
            updated_at = clock_timestamp()
        WHERE id = $1 AND lease_owner = $2 AND state = 'running'
        """,
        export_id,
        owner,
        lease_seconds,
        selected,
        processed,
    )
    return status.endswith(" 1")


async def release(conn: Connection, export_id: uuid.UUID, *, owner: str, retry_after_seconds: float) -> None:
    """Gives this owner's lease back; any replica may run the export again after the delay."""
    await conn.execute(
        """
        UPDATE dataset_exports SET
            lease_owner = NULL,
            lease_expires_at = clock_timestamp() + make_interval(secs => $3),
            updated_at = clock_timestamp()
        WHERE id = $1 AND lease_owner = $2 AND state = 'running'
        """,
        export_id,
        owner,
        retry_after_seconds,
    )


async def succeed(conn: Connection, export_id: uuid.UUID, *, owner: str, result: ExportResult) -> ExportRow | None:
    """Records a finished run; None when the lease is no longer this owner's (another run owns the result)."""
    row = await conn.fetchrow(
        """
        UPDATE dataset_exports SET
            state = 'succeeded',
            selected_conversations = $3,
            processed_conversations = $3,
            exported_train = $4,
            exported_eval = $5,
            dropped_by_reason = $6,
            files = $7,
            report = $8,
            dropped_sample = $9,
            lease_owner = NULL,
            lease_expires_at = NULL,
            finished_at = clock_timestamp(),
            updated_at = clock_timestamp()
        WHERE id = $1 AND lease_owner = $2 AND state = 'running'
        RETURNING *
        """,
        export_id,
        owner,
        result.selected,
        result.exported_train,
        result.exported_eval,
        result.dropped_by_reason,
        [f.to_json() for f in result.files],
        result.report,
        [d.to_json() for d in result.dropped_sample],
    )
    return export_row(row) if row else None


async def fail(
    conn: Connection, export_id: uuid.UUID, *, owner: str, error_code: str, error_message: str
) -> ExportRow | None:
    """Records a failed export; None when the lease is no longer this owner's."""
    row = await conn.fetchrow(
        """
        UPDATE dataset_exports SET
            state = 'failed', error_code = $3, error_message = $4,
            lease_owner = NULL, lease_expires_at = NULL,
            finished_at = clock_timestamp(), updated_at = clock_timestamp()
        WHERE id = $1 AND lease_owner = $2 AND state = 'running'
        RETURNING *
        """,
        export_id,
        owner,
        error_code,
        error_message,
    )
    return export_row(row) if row else None
