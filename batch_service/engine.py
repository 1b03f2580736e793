"""The worker engine of one batch service process: claims items under leases, runs them, records outcomes."""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from batch_service import transitions
from batch_service.completions import CompletionRecorder
from batch_service.domain import Completion, ItemRow, JobRow
from batch_service.generation_client import GenerationClient, GenerationFailed
from batch_service.job_log import LogUploader
from batch_service.store import items, jobs
from batch_service.transitions import TransitionResult
from convgen.background import repeat_forever, stop_task, wait_for_event
from convgen.db.database import Database, DatabaseUnavailable
from convgen.logging_setup import log_context

logger = logging.getLogger(__name__)

# A freed slot waits this long for others before a claim round (a round costs the same for 1 item or 50).
CLAIM_GATHER_SECONDS = 0.003


@dataclass(frozen=True)
class EngineConfig:
    """How one process claims and runs items."""

    owner: str
    worker_concurrency: int
    lease_seconds: float
    poll_seconds: float
    retry_base_seconds: float
    retry_max_seconds: float
    max_lease_recoveries: int


@dataclass(frozen=True)
class ProcessedItem:
    """What running one item led to: the job after it and the item in its new state."""

    job: JobRow
    item: ItemRow


class BatchEngine:
    """Claims due items of running jobs (bounded per job and per process), generates them, records outcomes."""

    def __init__(
        self,
        db: Database,
        client: GenerationClient,
        log_uploader: LogUploader,
        config: EngineConfig,
        rng: random.Random | None = None,
    ) -> None:
        self._db = db
        self._completions = CompletionRecorder(db, owner=config.owner)
        self._client = client
        self._logs = log_uploader
        self._config = config
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight: dict[uuid.UUID, ItemRow] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._claiming = False
        # When the model reports rate limiting, the whole process stops claiming until this moment.
        self._backoff_until = 0.0
        # Grows while the generation service is unreachable, back to 0 at the next success.
        self._unreachable_backoff = 0.0

    @property
    def owner(self) -> str:
        """The lease owner name of this process."""
        return self._config.owner

    def wake(self) -> None:
        """Asks the dispatcher for a claim round now (items became claimable)."""
        self._wake.set()

    def start(self) -> None:
        """Starts the dispatcher, the lease heartbeat and the reaper of dead workers' leases."""
        self._claiming = True
        self._completions.start()
        self._loops = [
            asyncio.create_task(
                repeat_forever("claim round", self._wait_for_work, self._claim_if_free), name="batch-dispatcher"
            ),
            asyncio.create_task(
                repeat_forever("lease heartbeat", self._heartbeat_interval, self._renew_leases),
                name="batch-lease-heartbeat",
            ),
            asyncio.create_task(
                repeat_forever("lease reaper", self._reap_interval, self._reap), name="batch-lease-reaper"
            ),
        ]

    async def stop(self, grace: float) -> None:
        """Stops claiming, lets in-flight items finish within grace, then releases the rest back to the queue."""
        self._claiming = False
        dispatcher = self._loops[0] if self._loops else None
        if dispatcher is not None:
            await stop_task(dispatcher)
        if self._tasks:
            logger.info("waiting up to %.1fs for %d in-flight item(s)", grace, len(self._tasks))
            await asyncio.wait(set(self._tasks), timeout=grace)
        unfinished = list(self._tasks)
        for task in unfinished:
            task.cancel()
        if unfinished:
            await asyncio.gather(*unfinished, return_exceptions=True)
        for loop in self._loops[1:]:
            await stop_task(loop)
        await self._completions.stop()
        await self._release_leftovers()

    # --- one item, synchronously (ProcessNext) -----------------------------------------------------------------------

    async def process_next(self, job_id: uuid.UUID) -> tuple[JobRow, ProcessedItem | None]:
        """Claims one due item of the job and runs it to its next state; (job, None) when nothing was due."""
        job, claimed = await transitions.claim(
            self._db, job_id, owner=self.owner, lease_seconds=self._config.lease_seconds, limit=1, explicit=True
        )
        if not claimed:
            return job, None
        item = claimed[0]
        self._in_flight[item.id] = item
        try:
            result = await self._run_item(job, item)
        finally:
            self._in_flight.pop(item.id, None)
        if result is None:
            async with self._db.connection() as conn:
                current_job = await jobs.get(conn, job_id)
                current_item = await items.get(conn, item.id)
            assert current_job is not None
            assert current_item is not None
            return current_job, ProcessedItem(current_job, current_item)
        return result.job, ProcessedItem(result.job, result.items[0])

    # --- the dispatcher ------------------------------------------------------------------------------------------

    async def _claim_if_free(self) -> None:
        free = self._config.worker_concurrency - len(self._in_flight)
        if self._claiming and free > 0 and self._backoff_until <= time.monotonic():
            await self._claim_round(free)

    async def _wait_for_work(self) -> None:
        pause = self._backoff_until - time.monotonic()
        timeout = self._config.poll_seconds if pause <= 0 else min(pause, self._config.poll_seconds)
        await wait_for_event(self._wake, timeout)
        # Slots free up in bursts (completions are written in groups): claim for the whole burst at once.
        await asyncio.sleep(CLAIM_GATHER_SECONDS)
        self._wake.clear()

    async def _claim_round(self, free: int) -> None:
        async with self._db.connection() as conn:
            runnable = await jobs.runnable(conn, limit=32)
        for candidate in runnable:
            if free <= 0 or not self._claiming:
                return
            job, claimed = await transitions.claim(
                self._db,
                candidate.id,
                owner=self.owner,
                lease_seconds=self._config.lease_seconds,
                limit=min(free, candidate.free),
            )
            free -= len(claimed)
            for item in claimed:
                self._spawn(job, item)

    def _spawn(self, job: JobRow, item: ItemRow) -> None:
        self._in_flight[item.id] = item
        task = asyncio.create_task(self._run_in_background(job, item), name=f"batch-item-{item.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_in_background(self, job: JobRow, item: ItemRow) -> None:
        try:
            await self._run_item(job, item)
        except asyncio.CancelledError:
            # Shutdown cut the item short: it stays leased to us until stop() puts it back in the queue.
            raise
        except Exception as error:  # a bug while recording: the item must still end with its cause, not hang
            logger.exception("recording the outcome of item %s failed", item.id)
            await self._fail_for_bug(item, "record_outcome", error)
        self._in_flight.pop(item.id, None)
        self._wake.set()

    async def _fail_for_bug(self, item: ItemRow, step: str, error: Exception) -> None:
        message = f"batch worker error at step {step}: {type(error).__name__}: {error}"
        try:
            await transitions.fail_item(self._db, item, owner=self.owner, error_code="INTERNAL", error_message=message)
        except Exception:  # if even that fails, the lease expires and the reaper takes the item over
            logger.exception("could not fail item %s after a worker error", item.id)

    # --- running one item ----------------------------------------------------------------------------------------

    async def _run_item(self, job: JobRow, item: ItemRow) -> TransitionResult | None:
        """Generates the item's conversation and records the outcome; None when the lease was lost meanwhile."""
        with log_context(job_id=str(job.id), item_id=str(item.id)):
            try:
                generated = await self._client.generate(
                    item.parameters, request_id=item.request_id, created_by=job.created_by
                )
            except GenerationFailed as failure:
                return await self._record_failure(job, item, failure)
            except Exception as error:  # a bug must fail the item with its cause, not leave it stuck
                logger.exception("unexpected error running item %s", item.id)
                await self._fail_for_bug(item, "generation", error)
                return None
            self._unreachable_backoff = 0.0
            completion = Completion(
                item_id=item.id,
                conversation_pk=generated.pk,
                conversation_business_key=generated.business_key,
                usage=generated.usage,
            )
            return await self._record(lambda: self._completions.complete(item, completion))

    async def _record_failure(self, job: JobRow, item: ItemRow, failure: GenerationFailed) -> TransitionResult | None:
        if failure.unreachable:
            # The generation service is down or restarting: stop claiming for a while and put the item back
            # without spending one of its attempts (a deploy must not fail a job).
            self._unreachable_backoff = min(max(self._unreachable_backoff * 2, 0.5), 10.0)
            self._backoff_until = max(self._backoff_until, time.monotonic() + self._unreachable_backoff)
            delay = self._unreachable_backoff
            logger.warning("generation service unreachable; pausing claims for %.1fs: %s", delay, failure.message)
            return await self._record(
                lambda: transitions.release_unreachable(
                    self._db,
                    item,
                    owner=self.owner,
                    delay_seconds=delay,
                    error_code=failure.code,
                    error_message=failure.describe(),
                    max_recoveries=self._config.max_lease_recoveries,
                )
            )
        if failure.code == "RESOURCE_EXHAUSTED":
            pause = failure.retry_after if failure.retry_after is not None else self._config.retry_base_seconds
            self._backoff_until = max(self._backoff_until, time.monotonic() + pause)
            logger.info("model rate-limited: pausing claims of this process for %.1fs", pause)
        if failure.transient and item.attempts < job.max_attempts:
            delay = self._retry_delay(item.attempts, failure.retry_after)
            message = f"attempt {item.attempts} of {job.max_attempts} failed: {failure.describe()}"
            return await self._record(
                lambda: transitions.retry_item_later(
                    self._db,
                    item,
                    owner=self.owner,
                    delay_seconds=delay,
                    error_code=failure.code,
                    error_message=message,
                )
            )
        if failure.transient:
            message = f"generation failed after {item.attempts} attempts: {failure.describe()}"
        else:
            message = f"generation failed: {failure.describe()}"
        return await self._record(
            lambda: transitions.fail_item(
                self._db, item, owner=self.owner, error_code=failure.code, error_message=message
            )
        )

    def _retry_delay(self, attempt: int, retry_after: float | None) -> float:
        backoff = min(self._config.retry_max_seconds, self._config.retry_base_seconds * 2 ** (attempt - 1))
        delay = self._rng.uniform(backoff / 2, backoff)
        return max(delay, retry_after or 0.0)

    async def _record(self, transition: Callable[[], Awaitable[TransitionResult | None]]) -> TransitionResult | None:
        """Records an outcome; while the database is down, keeps trying for about two lease periods."""
        give_up = time.monotonic() + 2 * self._config.lease_seconds
        delay = 0.2
        while True:
            try:
                result = await transition()
            except DatabaseUnavailable as error:
                if time.monotonic() > give_up:
                    logger.error("could not record an item outcome (%s); its lease will expire", error.message)
                    return None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            if result is None:
                logger.warning("lease lost before the outcome was recorded; another worker owns the item now")
            elif result.became_terminal:
                self._logs.job_ended()
            return result

    # --- leases --------------------------------------------------------------------------------------------------

    async def _heartbeat_interval(self) -> None:
        await asyncio.sleep(self._config.lease_seconds / 3)

    async def _renew_leases(self) -> None:
        if self._in_flight:
            async with self._db.connection() as conn:
                await items.renew_leases(
                    conn, list(self._in_flight), owner=self.owner, lease_seconds=self._config.lease_seconds
                )

    async def _reap_interval(self) -> None:
        await asyncio.sleep(self._config.lease_seconds / 2 * self._rng.uniform(0.8, 1.2))

    async def _reap(self) -> None:
        await self.reap_expired_leases()

    async def reap_expired_leases(self) -> int:
        """Re-queues items whose worker stopped renewing its lease; returns how many were recovered."""
        async with self._db.connection() as conn:
            job_ids = await items.jobs_with_expired_leases(conn)
        recovered = 0
        for job_id in job_ids:
            result = await transitions.recover_expired_leases(
                self._db, job_id, max_recoveries=self._config.max_lease_recoveries
            )
            recovered += len(result.items)
            if result.items:
                logger.info("recovered %d item(s) of job %s from a lost worker", len(result.items), job_id)
                self._wake.set()
            if result.became_terminal:
                self._logs.job_ended()
        return recovered

    async def _release_leftovers(self) -> None:
        """Releases items still leased to this process (their tasks were cancelled at shutdown)."""
        if not self._in_flight:
            return
        job_ids = {item.job_id for item in self._in_flight.values()}
        for job_id in job_ids:
            try:
                result = await transitions.release_owned(
                    self._db, job_id, owner=self.owner, reason="worker shutting down"
                )
                logger.info("released %d item(s) of job %s at shutdown", len(result.items), job_id)
            except DatabaseUnavailable as error:
                logger.warning("could not release items of job %s (their leases will expire): %s", job_id, error)
        self._in_flight.clear()
