"""One reader of a job's new events per process, shared by all its watchers (100 watchers cost one query)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from batch_service import converters
from batch_service.notifications import JobSignal, Notifications
from batch_service.store import events
from convgen.background import repeat_forever, stop_task, wait_for_event
from convgen.db.database import Database
from convgen.v1 import batch_pb2

# Re-read the table this often even without a notification (a safety net, not the mechanism).
SAFETY_POLL_SECONDS = 5.0
PAGE = 500
# Events kept in memory per watched job (about 1.7 KB each, so about 7 MB): some 10 s of events at full speed.
# A watcher further behind reads the table itself.
BUFFER = 4_000


@dataclass(frozen=True)
class FeedEvent:
    """An event, converted once for every watcher."""

    sequence: int
    message: batch_pb2.BatchJobEvent
    ends_stream: bool


class JobFeed:
    """The new events of one job, read once per notification and kept for the watchers of this process."""

    def __init__(self, db: Database, job_id: uuid.UUID, signal: JobSignal) -> None:
        self._db = db
        self._job_id = job_id
        self._signal = signal
        self._events: list[FeedEvent] = []
        self._first = 1  # sequence of self._events[0]
        self._last = 0  # highest sequence read so far (0 until the first read)
        self._arrived = asyncio.Event()
        self._started = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Starts reading."""
        self._task = asyncio.create_task(
            repeat_forever(f"event feed of job {self._job_id}", self._wait_for_events, self._read_new),
            name=f"job-feed-{self._job_id}",
        )

    async def stop(self) -> None:
        """Stops reading."""
        if self._task is not None:
            await stop_task(self._task)

    async def after(self, sequence: int) -> list[FeedEvent]:
        """The events after sequence that are known now (from memory, or from the table for a watcher behind)."""
        if self._events and self._first <= sequence + 1:
            return self._events[sequence + 1 - self._first : sequence + 1 - self._first + PAGE]
        if self._last and sequence >= self._last:
            return []
        async with self._db.connection() as conn:
            rows = await events.after(conn, self._job_id, sequence, limit=PAGE)
        return [FeedEvent(r.sequence, converters.event(r), r.ends_stream) for r in rows]

    async def wait_beyond(self, sequence: int) -> None:
        """Returns once an event after sequence has been read (or after the safety poll interval)."""
        while self._last <= sequence:
            if not await wait_for_event(self._arrived, SAFETY_POLL_SECONDS):
                return

    async def _wait_for_events(self) -> None:
        # The first round reads at once; later ones wait for a notification (or the safety poll).
        if self._started:
            await self._signal.wait(SAFETY_POLL_SECONDS)
        self._started = True

    async def _read_new(self) -> None:
        while True:
            async with self._db.connection() as conn:
                if not self._last:
                    self._last = await events.last_sequence(conn, self._job_id)
                    self._first = self._last + 1
                rows = await events.after(conn, self._job_id, self._last, limit=PAGE)
            if not rows:
                return
            self._events.extend(FeedEvent(r.sequence, converters.event(r), r.ends_stream) for r in rows)
            self._last = rows[-1].sequence
            if len(self._events) > BUFFER:
                drop = len(self._events) - BUFFER
                del self._events[:drop]
                self._first += drop
            # Wake every watcher waiting for these events, and arm a new event for the next ones.
            arrived, self._arrived = self._arrived, asyncio.Event()
            arrived.set()
            if len(rows) < PAGE:
                return


@dataclass
class _Entry:
    feed: JobFeed
    watchers: int
    resources: contextlib.AsyncExitStack


class JobFeeds:
    """The feeds of the jobs watched in this process, started on the first watcher and stopped after the last."""

    def __init__(self, db: Database, notifications: Notifications) -> None:
        self._db = db
        self._notifications = notifications
        self._feeds: dict[uuid.UUID, _Entry] = {}
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def feed(self, job_id: uuid.UUID) -> AsyncIterator[JobFeed]:
        """The job's feed for as long as the block runs."""
        async with self._lock:
            entry = self._feeds.get(job_id)
            if entry is None:
                resources = contextlib.AsyncExitStack()
                signal = await resources.enter_async_context(self._notifications.subscribe(job_id))
                feed = JobFeed(self._db, job_id, signal)
                feed.start()
                resources.push_async_callback(feed.stop)
                entry = self._feeds[job_id] = _Entry(feed, 0, resources)
            entry.watchers += 1
        try:
            yield entry.feed
        finally:
            # No await while deciding: the last watcher detaches the feed, then stops it outside any lock.
            entry.watchers -= 1
            if entry.watchers == 0 and self._feeds.get(job_id) is entry:
                del self._feeds[job_id]
                await entry.resources.aclose()

    async def close(self) -> None:
        """Stops every feed, also those whose watcher streams were abandoned without being closed."""
        # gRPC may drop a cancelled stream's generator without closing it; its feed must not outlive the service.
        entries = list(self._feeds.values())
        self._feeds.clear()
        for entry in entries:
            await entry.resources.aclose()

    @property
    def active(self) -> int:
        """How many jobs have a running feed in this process."""
        return len(self._feeds)
