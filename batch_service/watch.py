"""WatchBatchJob: a snapshot, then every event in sequence order, until the event that ends the job."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Callable

from batch_service import converters
from batch_service.domain import job_not_found
from batch_service.event_feed import JobFeeds
from batch_service.store import jobs
from convgen.blobs import BlobRef
from convgen.db.database import Database
from convgen.errors import OutOfRange
from convgen.v1 import batch_pb2


async def watch_job(
    db: Database,
    feeds: JobFeeds,
    locate_log: Callable[[uuid.UUID], BlobRef],
    job_id: uuid.UUID,
    after_sequence: int | None,
) -> AsyncGenerator[batch_pb2.BatchJobEvent, None]:
    """Yields the snapshot, then events after the resume point, until the event that makes the job terminal."""
    # Join the job's feed before reading anything, so an event committed meanwhile still reaches us.
    async with feeds.feed(job_id) as feed:
        async with db.connection() as conn:
            job = await jobs.get(conn, job_id)
        if job is None:
            raise job_not_found(job_id)
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
            batch = await feed.after(last)
            if ending and not batch:
                # The terminal event was the job's latest: the job really ended (it was not re-run since).
                return
            ending = False
            for event in batch:
                yield event.message
                last = event.sequence
                ending = event.ends_stream
            if not batch:
                await feed.wait_beyond(last)
