"""WatchBatchJob: a snapshot, then every event in sequence order from the table, woken by notifications."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

from batch_service import converters
from batch_service.notifications import Notifications
from batch_service.store import events, jobs
from convgen.blobs import BlobRef
from convgen.db.database import Database
from convgen.errors import NotFound, OutOfRange
from convgen.v1 import batch_pb2

# Re-read the table this often even without a notification (a safety net, not the mechanism).
SAFETY_POLL_SECONDS = 5.0
PAGE = 500


async def watch_job(
    db: Database,
    notifications: Notifications,
    locate_log: Callable[[uuid.UUID], BlobRef],
    job_id: uuid.UUID,
    after_sequence: int | None,
) -> AsyncIterator[batch_pb2.BatchJobEvent]:
    """Yields the snapshot, then events after the resume point, until the event that makes the job terminal."""
    # Subscribe before reading anything, so an event committed meanwhile still wakes us.
    async with notifications.subscribe(job_id) as signal:
        async with db.connection() as conn:
            job = await jobs.get(conn, job_id)
        if job is None:
            raise NotFound(f"batch job {job_id} does not exist", reason="BATCH_JOB_NOT_FOUND")
        if after_sequence is not None and after_sequence > job.last_sequence:
            raise OutOfRange(
                f"after_sequence: {after_sequence} is past the job's latest event {job.last_sequence}",
                reason="SEQUENCE_OUT_OF_RANGE",
            )
        last = job.last_sequence if after_sequence is None else after_sequence
        yield converters.snapshot(job, locate_log(job.id), last)
        if job.state.terminal and last >= job.terminal_sequence:
            return
        ending = False
        while True:
            async with db.connection() as conn:
                page = await events.after(conn, job_id, last, limit=PAGE)
            if ending and not page:
                # The terminal event was the job's latest: the job really ended (it was not re-run since).
                return
            ending = False
            for row in page:
                yield converters.event(row)
                last = row.sequence
                ending = row.ends_stream
            if ending:
                continue
            if len(page) < PAGE:
                await signal.wait(SAFETY_POLL_SECONDS)
