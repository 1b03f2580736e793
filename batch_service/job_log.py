"""Job logs: one line per event, rendered from the event table; uploaded as {job_id}/log.txt when a job ends."""

from __future__ import annotations

import asyncio
import io
import logging
import uuid
from dataclasses import dataclass

from batch_service.domain import EventKind, JobRow
from batch_service.store import events, jobs
from batch_service.store.events import LogEvent
from convgen.background import repeat_forever, stop_task, wait_for_event
from convgen.blobs import BlobRef, BlobStore
from convgen.db.database import Database
from convgen.errors import ConvgenError, NotFound

logger = logging.getLogger(__name__)


def log_key(job_id: uuid.UUID) -> str:
    """{job_id}/log.txt, as the original system's users asked."""
    return f"{job_id}/log.txt"


def summary_line(job: JobRow) -> str:
    """The final summary: counts, tokens and cost by kind, the cache hit ratio, and what could not be priced."""
    c, u = job.counters, job.usage
    unpriced = f" (not counting {u.unpriced_conversations} of unknown price)" if u.unpriced_conversations else ""
    return (
        f"summary: {c.total} items: {c.completed} completed, {c.failed} failed, {c.cancelled} cancelled; "
        f"tokens: input {u.input_tokens}, output {u.output_tokens}, cache write {u.cache_creation_5m_input_tokens} "
        f"(5m) + {u.cache_creation_1h_input_tokens} (1h), cache read {u.cache_read_input_tokens}; "
        f"cache hit ratio {u.cache_hit_ratio:.3f}; cost ${u.cost_usd:.6f}{unpriced}: input ${u.input_cost_usd:.6f}, "
        f"output ${u.output_cost_usd:.6f}, cache write ${u.cache_write_5m_cost_usd + u.cache_write_1h_cost_usd:.6f}, "
        f"cache read ${u.cache_read_cost_usd:.6f}"
    )


def render_line(entry: LogEvent) -> str:
    """One log line: time, sequence, the item (position, id, parameter keys) and what happened."""
    e = entry.event
    stamp = e.created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if e.kind is EventKind.JOB:
        return f"{stamp} [{e.sequence:06d}] {e.message}"
    keys = "/".join(k for k in (entry.persona_key, entry.arc_key, entry.topic_key) if k)
    return f"{stamp} [{e.sequence:06d}] item #{e.position} {e.item_id} ({keys}) {e.message}"


async def render(db: Database, job_id: uuid.UUID) -> tuple[str, int]:
    """The whole log text of a job and its line count."""
    buffer = io.StringIO()
    count = 0
    async with db.connection() as conn:
        async for entry in events.stream_for_log(conn, job_id):
            buffer.write(render_line(entry))
            buffer.write("\n")
            count += 1
    return buffer.getvalue(), count


@dataclass(frozen=True)
class LogUploaderConfig:
    """Where logs go and how often pending uploads are retried."""

    bucket: str
    sweep_seconds: float = 10.0


class LogUploader:
    """Uploads a job's log when it ends; retries in the background until the blob store takes it."""

    def __init__(self, db: Database, blobs: BlobStore, config: LogUploaderConfig) -> None:
        self._db = db
        self._blobs = blobs
        self._config = config
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Starts the background sweep (it also uploads logs of jobs that ended while S3 was down)."""
        self._task = asyncio.create_task(
            repeat_forever("log upload sweep", self._wait_for_sweep, self._sweep_once), name="job-log-uploader"
        )

    async def stop(self) -> None:
        """Stops the sweep."""
        if self._task is not None:
            await stop_task(self._task)

    def job_ended(self) -> None:
        """Asks for an upload round now (a job just reached a terminal state)."""
        self._wake.set()

    def locate(self, job_id: uuid.UUID) -> BlobRef:
        """Where a job's log is (or will be) uploaded."""
        return self._blobs.locate(self._config.bucket, log_key(job_id))

    async def upload(self, job_id: uuid.UUID) -> bool:
        """Renders and uploads one job's log if its latest terminal state is not uploaded yet; True when done."""
        async with self._db.connection() as conn:
            job = await jobs.get(conn, job_id)
        if job is None:
            raise NotFound(f"batch job {job_id} does not exist")
        if not job.state.terminal or job.log_uploaded:
            return job.log_uploaded
        text, lines = await render(self._db, job_id)
        await self._blobs.put(
            self._config.bucket, log_key(job_id), text.encode(), content_type="text/plain; charset=utf-8"
        )
        async with self._db.connection() as conn:
            await jobs.mark_log_uploaded(conn, job_id, job.terminal_sequence)
        logger.info("uploaded log of job %s (%d lines)", job_id, lines, extra={"job_id": str(job_id)})
        return True

    async def _wait_for_sweep(self) -> None:
        await wait_for_event(self._wake, self._config.sweep_seconds)
        self._wake.clear()

    async def _sweep_once(self) -> None:
        async with self._db.connection() as conn:
            pending = await jobs.pending_log_uploads(conn, limit=50)
        for job_id in pending:
            try:
                await self.upload(job_id)
            except ConvgenError as error:
                # S3 (or the database) is down: the job stays pending and the next sweep tries again.
                logger.warning("log upload of job %s failed, will retry: %s", job_id, error.message)
