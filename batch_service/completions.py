"""Group commit of item completions: outcomes that arrive together share one transaction per job."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from dataclasses import dataclass

from batch_service import transitions
from batch_service.domain import Completion, ItemRow
from batch_service.transitions import TransitionResult
from convgen.background import stop_task
from convgen.db.database import Database

# At most this many completions go into one transaction.
MAX_GROUP = 256
# How long the writer lets completions gather before a write: well under any model latency, long enough for
# items that finish together (a burst of fast model answers) to share a transaction.
GATHER_SECONDS = 0.003


@dataclass
class _Pending:
    item: ItemRow
    completion: Completion
    result: asyncio.Future[TransitionResult | None]


class CompletionRecorder:
    """Collects completions while the previous group is being written, then writes them as one group per job.

    Under load, dozens of items finish during one commit; writing them together turns five round trips per item
    into five per group. When idle a completion is written at once (no timer, no added latency).
    """

    def __init__(self, db: Database, *, owner: str) -> None:
        self._db = db
        self._owner = owner
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Starts the writer."""
        self._task = asyncio.create_task(self._write_forever(), name="batch-completion-writer")

    async def stop(self) -> None:
        """Stops the writer; completions still waiting fail with CancelledError (their leases expire)."""
        if self._task is not None:
            await stop_task(self._task)
        for pending in self._pending:
            pending.result.cancel()
        self._pending.clear()

    async def complete(self, item: ItemRow, completion: Completion) -> TransitionResult | None:
        """Records one completion (grouped with others); None when the item's lease was lost."""
        future: asyncio.Future[TransitionResult | None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(item, completion, future))
        self._wake.set()
        return await future

    async def _write_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(GATHER_SECONDS)
            while self._pending:
                group, self._pending = self._pending[:MAX_GROUP], self._pending[MAX_GROUP:]
                await self._write(group)

    async def _write(self, group: list[_Pending]) -> None:
        by_job: dict[uuid.UUID, list[_Pending]] = defaultdict(list)
        for pending in group:
            by_job[pending.item.job_id].append(pending)
        await asyncio.gather(*(self._write_job(job_id, entries) for job_id, entries in by_job.items()))

    async def _write_job(self, job_id: uuid.UUID, entries: list[_Pending]) -> None:
        try:
            result = await transitions.complete_items(
                self._db, job_id, [e.completion for e in entries], owner=self._owner
            )
        except Exception as error:  # noqa: BLE001 - handed to every waiter, which decides (e.g. retries)
            for entry in entries:
                if not entry.result.done():
                    entry.result.set_exception(error)
            return
        recorded = {item.id: item for item in result.items}
        terminal_given = False
        for entry in entries:
            if entry.result.done():
                continue
            item = recorded.get(entry.item.id)
            if item is None:
                entry.result.set_result(None)
                continue
            # The job's terminal state is reported once, by the entry that brought it about.
            became_terminal = result.became_terminal and not terminal_given
            terminal_given = terminal_given or became_terminal
            entry.result.set_result(TransitionResult(result.job, [item], became_terminal=became_terminal))
