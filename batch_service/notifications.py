"""PostgreSQL LISTEN/NOTIFY on one dedicated connection per process, reconnecting by itself; fans out to waiters."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from batch_service.store.events import EVENTS_CHANNEL, WORK_CHANNEL
from convgen.background import stop_task, wait_for_event
from convgen.db.database import is_connectivity_error

logger = logging.getLogger(__name__)


class JobSignal:
    """Set whenever a job has new events (or the listener reconnected and anything may have been missed)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.latest_sequence = 0

    def notify(self, sequence: int) -> None:
        """Records a new event sequence and wakes the waiter."""
        self.latest_sequence = max(self.latest_sequence, sequence)
        self._event.set()

    async def wait(self, max_wait: float) -> None:
        """Waits for a notification (or max_wait seconds, as a safety net) and re-arms."""
        await wait_for_event(self._event, max_wait)
        self._event.clear()


class Notifications:
    """Listens for job events and work signals; delivers them to in-process subscribers."""

    def __init__(self, dsn: str, *, on_work: Callable[[], None], reconnect_seconds: float = 1.0) -> None:
        self._dsn = dsn
        self._on_work = on_work
        self._reconnect = reconnect_seconds
        self._subscribers: dict[uuid.UUID, set[JobSignal]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def start(self) -> None:
        """Starts listening in the background."""
        self._task = asyncio.create_task(self._run(), name="pg-notifications")

    async def stop(self) -> None:
        """Stops listening and closes the connection."""
        if self._task is not None:
            await stop_task(self._task)

    @asynccontextmanager
    async def subscribe(self, job_id: uuid.UUID) -> AsyncIterator[JobSignal]:
        """A signal for one job's events while the block runs."""
        signal = JobSignal()
        self._subscribers[job_id].add(signal)
        try:
            yield signal
        finally:
            subscribers = self._subscribers.get(job_id)
            if subscribers is not None:
                subscribers.discard(signal)
                if not subscribers:
                    del self._subscribers[job_id]

    def _on_event(self, connection: Any, _pid: int, channel: str, payload: object) -> None:
        job_text, _, sequence = str(payload).partition(":")
        try:
            job_id = uuid.UUID(job_text)
        except ValueError:
            logger.warning("ignoring malformed notification %r", payload)
            return
        for signal in self._subscribers.get(job_id, ()):
            signal.notify(int(sequence) if sequence.isdigit() else 0)

    def _on_work_signal(self, connection: Any, _pid: int, channel: str, payload: object) -> None:
        self._on_work()

    def _wake_everyone(self) -> None:
        # After a reconnect notifications may have been missed: everyone re-reads from the table.
        for subscribers in self._subscribers.values():
            for signal in subscribers:
                signal.notify(0)
        self._on_work()

    async def _run(self) -> None:
        first = True
        while True:
            closed = asyncio.Event()
            try:
                conn = await asyncpg.connect(self._dsn)
            except Exception as error:  # noqa: BLE001 - any failure to connect is retried after a pause
                if not is_connectivity_error(error):
                    logger.error("notification listener cannot connect: %s", error)
                await asyncio.sleep(self._reconnect)
                continue
            try:
                conn.add_termination_listener(lambda _conn, closed=closed: closed.set())
                await conn.add_listener(EVENTS_CHANNEL, self._on_event)
                await conn.add_listener(WORK_CHANNEL, self._on_work_signal)
                self.connected.set()
                if not first:
                    logger.info("notification listener reconnected")
                first = False
                self._wake_everyone()
                await self._watch_connection(conn, closed)
            except Exception as error:  # noqa: BLE001 - a dropped connection is re-established below
                if not is_connectivity_error(error):
                    logger.error("notification listener failed: %s", error)
            finally:
                self.connected.clear()
                if not conn.is_closed():
                    conn.terminate()
            await asyncio.sleep(self._reconnect)

    async def _watch_connection(self, conn: asyncpg.Connection[Any], closed: asyncio.Event) -> None:
        # An idle LISTEN connection notices a dead server only when it next talks to it, so ping now and then.
        while not closed.is_set():
            if not await wait_for_event(closed, 5.0):
                async with asyncio.timeout(5.0):
                    await conn.execute("SELECT 1")
