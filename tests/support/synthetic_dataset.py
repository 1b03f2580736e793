"""Writes a completed batch job of N stored conversations straight into PostgreSQL and a blob store.

For exports too big to generate through the services in a test or a benchmark (the export does not care how the
rows got there): a batch_jobs row in state completed, N completed batch_items, N conversations (demo catalog
persona × core arc × topic combinations, in turn) and their final blobs, written with COPY and bounded concurrency.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from convgen.blobs import BlobStore
from convgen.blobs.filesystem import FileBlobStore
from tests.support.near_duplicates import stream_conversations

NIL = uuid.UUID(int=0)
BUCKET = "conversation-files"
_BATCH = 2000


@dataclass(frozen=True)
class SyntheticJob:
    """What was written."""

    job_id: uuid.UUID
    conversations: int
    blob_bytes: int


async def _combinations(conn: asyncpg.Connection[Any]) -> list[tuple[uuid.UUID, uuid.UUID, uuid.UUID, uuid.UUID]]:
    """(persona, arc, topic, template) of every demo persona × core arc (with its template) × topic."""
    rows = await conn.fetch(
        """
        SELECT p.id AS persona, a.id AS arc, t.id AS topic, pt.id AS template
        FROM personas p CROSS JOIN emotional_arcs a CROSS JOIN training_topics t
        JOIN LATERAL (SELECT id FROM prompt_templates WHERE arc_key = a.arc_key AND tier = 'template' AND active
                      ORDER BY template_name LIMIT 1) pt ON true
        WHERE a.tier = 'template'
        ORDER BY p.persona_key, a.arc_key, t.topic_key
        """
    )
    return [(r["persona"], r["arc"], r["topic"], r["template"]) for r in rows]


def _batches(documents: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    iterator = iter(documents)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


async def write_job(
    dsn: str,
    blobs: BlobStore,
    count: int,
    *,
    seed: int = 0,
    near_duplicate_share: float = 0.1,
    blob_concurrency: int = 64,
) -> SyntheticJob:
    """A completed job of `count` conversations (about near_duplicate_share of them light edits of earlier ones)."""
    conn = await asyncpg.connect(dsn)
    try:
        combinations = await _combinations(conn)
        job_id = await conn.fetchval(
            """
            INSERT INTO batch_jobs (name, created_by, state, error_policy, concurrency, max_attempts, total_items,
                                    queued_items, completed_items, started_at, finished_at)
            VALUES ($1, $2, 'completed', 'continue', 64, 3, $3, 0, $3, now(), now())
            RETURNING id
            """,
            f"synthetic {count}",
            NIL,
            count,
        )
        start = datetime.now(UTC) - timedelta(days=1)
        position = 0
        total_bytes = 0
        documents = stream_conversations(count, near_duplicate_share=near_duplicate_share, seed=seed)
        for batch in _batches(documents, _BATCH):
            conversations, items, payloads = [], [], []
            for document in batch:
                persona, arc, topic, template = combinations[position % len(combinations)]
                pk, business_key = uuid.uuid4(), uuid.uuid4()
                key = f"final/{NIL}/{business_key}.json"
                data = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
                payloads.append((key, data))
                total_bytes += len(data)
                tokens = len(data) // 4
                created = start + timedelta(milliseconds=position)
                conversations.append(
                    (
                        pk, business_key, f"synthetic/{job_id}/{position}", NIL, persona, arc, topic, "template",
                        template, "completed", BUCKET, f"raw/{NIL}/{business_key}_raw.json", BUCKET, key,
                        len(document["turns"]), "claude-sonnet-5-5", 2000, tokens, 0, 1500,
                        Decimal(tokens) * Decimal("0.000015"), created,
                    )
                )  # fmt: skip
                items.append(
                    (
                        job_id, position, persona, arc, topic, "template", template, "completed", 1, 1, pk,
                        2000, tokens, 0, 1500, Decimal(tokens) * Decimal("0.000015"), created, created,
                    )
                )  # fmt: skip
                position += 1
            await _write_blobs(blobs, payloads, blob_concurrency)
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "conversations",
                    records=conversations,
                    columns=[
                        "id", "conversation_id", "request_id", "created_by", "persona_id", "emotional_arc_id",
                        "training_topic_id", "tier", "template_id", "processing_status", "raw_bucket", "raw_key",
                        "final_bucket", "final_key", "turn_count", "model", "input_tokens", "output_tokens",
                        "cache_creation_5m_input_tokens", "cache_read_input_tokens", "cost_usd", "created_at",
                    ],
                )  # fmt: skip
                await conn.copy_records_to_table(
                    "batch_items",
                    records=items,
                    columns=[
                        "batch_job_id", "position", "persona_id", "emotional_arc_id", "training_topic_id", "tier",
                        "template_id", "status", "run", "attempts", "conversation_id", "input_tokens",
                        "output_tokens", "cache_creation_5m_input_tokens", "cache_read_input_tokens", "cost_usd",
                        "started_at", "finished_at",
                    ],
                )  # fmt: skip
        await conn.execute("ANALYZE conversations")
        await conn.execute("ANALYZE batch_items")
    finally:
        await conn.close()
    return SyntheticJob(job_id, count, total_bytes)


async def _write_blobs(blobs: BlobStore, payloads: list[tuple[str, bytes]], concurrency: int) -> None:
    if isinstance(blobs, FileBlobStore):
        # Straight to disk on a thread: the store's own one-thread executor would make this the slowest step.
        await asyncio.to_thread(_write_files, blobs.root / BUCKET, payloads)
        return
    limit = asyncio.Semaphore(concurrency)

    async def put(key: str, data: bytes) -> None:
        async with limit:
            await blobs.put(BUCKET, key, data, content_type="application/json")

    await asyncio.gather(*(put(key, data) for key, data in payloads))


def _write_files(root: Path, payloads: list[tuple[str, bytes]]) -> None:
    made: set[Path] = set()
    for key, data in payloads:
        path = root / key
        if path.parent not in made:
            os.makedirs(path.parent, exist_ok=True)
            made.add(path.parent)
        path.write_bytes(data)
