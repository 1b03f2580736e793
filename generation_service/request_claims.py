"""At most one generation per request_id at a time, across calls and processes, surviving crashed holders."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from convgen.db.database import Connection, Database, DatabaseUnavailable
from convgen.errors import Aborted
from generation_service.store import claims

logger = logging.getLogger(__name__)

DoneCheck = Callable[[Connection, str], Awaitable[bool]]


@dataclass(frozen=True)
class Holding:
    """The outcome of waiting for a request_id: whether we had to wait for another holder."""

    waited: bool


class RequestClaims:
    """Claims request_ids in PostgreSQL with a renewed lease; a duplicate waits for the holder to finish."""

    def __init__(
        self,
        db: Database,
        *,
        instance_name: str,
        lease_seconds: float = 30.0,
        poll_seconds: float = 0.05,
        max_poll_seconds: float = 1.0,
    ) -> None:
        self._db = db
        # Unique per process start: a restarted process must not renew the leases of its dead predecessor.
        self.owner = f"{instance_name}/{uuid.uuid4()}"
        self._lease = lease_seconds
        self._poll = poll_seconds
        self._max_poll = max_poll_seconds
        self._local: dict[str, asyncio.Lock] = {}
        self._held: set[str] = set()
        self._finished: set[str] = set()
        self._heartbeat: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Starts renewing this process's leases."""
        self._heartbeat = asyncio.create_task(self._renew_forever(), name="request-claims-heartbeat")

    async def stop(self) -> None:
        """Stops renewing leases (held claims then expire by themselves)."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat

    @asynccontextmanager
    async def hold(self, request_id: str, *, deadline: float | None, done: DoneCheck) -> AsyncIterator[Holding]:
        """Holds the claim on request_id for the block; waits (until deadline) while another call holds it.

        Yields without the claim when `done` reports, while waiting, that the holder already stored a result.
        """
        lock = self._local.setdefault(request_id, asyncio.Lock())
        waited = lock.locked()
        try:
            await self._acquire_local(lock, request_id, deadline)
            try:
                claimed, waited_remote = await self._acquire_remote(request_id, deadline, done)
                if not claimed:
                    yield Holding(waited=True)
                    return
                self._held.add(request_id)
                try:
                    yield Holding(waited=waited or waited_remote)
                finally:
                    self._held.discard(request_id)
                    if request_id not in self._finished:
                        await self._release(request_id)
                    self._finished.discard(request_id)
            finally:
                lock.release()
        finally:
            if not lock.locked() and self._local.get(request_id) is lock:
                del self._local[request_id]

    async def finish(self, conn: Connection, request_id: str) -> None:
        """Drops the claim inside the transaction that stores the result."""
        await claims.release(conn, request_id, self.owner)
        self._finished.add(request_id)

    async def _acquire_local(self, lock: asyncio.Lock, request_id: str, deadline: float | None) -> None:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            await asyncio.wait_for(lock.acquire(), timeout)
        except TimeoutError:
            raise _busy(request_id) from None

    async def _acquire_remote(self, request_id: str, deadline: float | None, done: DoneCheck) -> tuple[bool, bool]:
        """(claimed, waited): loops until the claim is ours, the holder stored a result, or the deadline passes."""
        delay = self._poll
        waited = False
        while True:
            async with self._db.connection() as conn:
                if await claims.try_claim(conn, request_id, self.owner, self._lease):
                    return True, waited
                if await done(conn, request_id):
                    return False, True
            waited = True
            if deadline is not None and time.monotonic() + delay >= deadline:
                raise _busy(request_id)
            await asyncio.sleep(delay)
            delay = min(self._max_poll, delay * 2)

    async def _release(self, request_id: str) -> None:
        try:
            async with self._db.connection() as conn:
                await claims.release(conn, request_id, self.owner)
        except DatabaseUnavailable:
            logger.warning("could not release claim on %s; it expires with its lease", request_id)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self._lease / 3)
            if not self._held:
                continue
            try:
                async with self._db.connection() as conn:
                    await claims.renew_all(conn, self.owner, self._lease)
            except DatabaseUnavailable as error:
                logger.warning("could not renew generation claims: %s", error.message)


def _busy(request_id: str) -> Aborted:
    return Aborted(
        f"request_id {request_id!r} is being generated by another call; retry later to get its result",
        reason="REQUEST_IN_PROGRESS",
        retry_after=1.0,
    )
