"""Runs exports in the background: one at a time per replica, each under a lease, so any replica can finish one.

A replica claims the oldest running export whose lease is free (FOR UPDATE SKIP LOCKED), renews the lease with its
progress while the pipeline runs, and records the result only if the lease is still its own. A replica that dies
(SIGKILL, a lost machine) stops renewing; when the lease expires another replica, or this one restarted, runs the
export again from the start and writes the same files.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

from batch_service.datasets.domain import ExportRow
from batch_service.datasets.pipeline import ExportPipeline, PipelineConfig, Progress
from batch_service.store import exports
from convgen.background import repeat_forever, stop_task, wait_for_event
from convgen.blobs import BlobStore
from convgen.db.database import Database
from convgen.errors import ConvgenError, Unavailable
from convgen.logging_setup import log_context
from convgen.rpc.status import status_code_for

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunnerConfig:
    """Who this runner is, where files go and how leases behave."""

    owner: str
    bucket: str
    lease_seconds: float
    poll_seconds: float
    read_concurrency: int
    spool_dir: Path | None
    # Runs that end on an unavailable dependency (S3 or PostgreSQL down) before the export fails.
    max_runs: int = 5
    retry_seconds: float = 10.0


class ExportRunner:
    """The background loop that claims and runs exports."""

    def __init__(self, db: Database, blobs: BlobStore, config: RunnerConfig) -> None:
        self._db = db
        self._blobs = blobs
        self._config = config
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Starts looking for exports to run."""
        self._task = asyncio.create_task(
            repeat_forever("dataset export runner", self._wait, self._run_available), name="dataset-export-runner"
        )

    async def stop(self) -> None:
        """Stops the loop; an export in progress gives its lease back for another replica."""
        if self._task is not None:
            await stop_task(self._task)

    def wake(self) -> None:
        """Looks for work now (an export was just created)."""
        self._wake.set()

    async def _wait(self) -> None:
        await wait_for_event(self._wake, self._config.poll_seconds)
        self._wake.clear()

    async def _run_available(self) -> None:
        while True:
            async with self._db.connection() as conn:
                export = await exports.claim(conn, owner=self._config.owner, lease_seconds=self._config.lease_seconds)
            if export is None:
                return
            with log_context(export_id=str(export.id)):
                await self._run(export)

    async def _run(self, export: ExportRow) -> None:
        config = self._config
        logger.info("export %s: run %d started by %s", export.id, export.runs, config.owner)
        progress = Progress(selected=export.selected)
        pipeline = ExportPipeline(
            self._db,
            self._blobs,
            PipelineConfig(config.bucket, config.read_concurrency, config.spool_dir),
            export_id=export.id,
            created_at=export.created_at,
            spec=export.spec,
            progress=progress,
        )
        work = asyncio.create_task(pipeline.run(), name=f"export-{export.id}")
        try:
            if not await self._heartbeat(export.id, work, progress):
                logger.warning("export %s: lease lost to another replica; this run stops", export.id)
                await stop_task(work)
                return
            result = work.result()
        except asyncio.CancelledError:
            await stop_task(work)
            await asyncio.shield(self._release(export.id, 0.0))
            raise
        except Unavailable as error:
            await self._retry_or_fail(export, error)
            return
        except ConvgenError as error:
            await self._fail(export.id, status_code_for(error).name, error.message)
            return
        except Exception as error:
            logger.exception("export %s failed", export.id)
            await self._fail(export.id, "INTERNAL", f"export failed: {type(error).__name__}: {error}")
            return
        async with self._db.connection() as conn:
            done = await exports.succeed(conn, export.id, owner=config.owner, result=result)
        if done is None:
            logger.warning("export %s: finished after its lease was taken over; the other run records it", export.id)
        else:
            logger.info(
                "export %s succeeded: %d selected, %d train, %d eval, %d dropped",
                export.id,
                result.selected,
                result.exported_train,
                result.exported_eval,
                sum(result.dropped_by_reason.values()),
            )

    async def _heartbeat(self, export_id: uuid.UUID, work: asyncio.Task[object], progress: Progress) -> bool:
        """Renews the lease with the progress until the work ends; False when the lease was lost."""
        interval = min(1.0, self._config.lease_seconds / 3)
        while not work.done():
            await asyncio.wait([work], timeout=interval)
            if work.done():
                break
            async with self._db.connection() as conn:
                still_ours = await exports.renew(
                    conn,
                    export_id,
                    owner=self._config.owner,
                    lease_seconds=self._config.lease_seconds,
                    selected=progress.selected,
                    processed=progress.processed,
                )
            if not still_ours:
                return False
        return True

    async def _retry_or_fail(self, export: ExportRow, error: Unavailable) -> None:
        if export.runs >= self._config.max_runs:
            await self._fail(
                export.id, status_code_for(error).name, f"{error.message} (gave up after {export.runs} runs)"
            )
            return
        logger.warning("export %s: run %d stopped, retrying later: %s", export.id, export.runs, error.message)
        await self._release(export.id, self._config.retry_seconds)

    async def _release(self, export_id: uuid.UUID, retry_after: float) -> None:
        async with self._db.connection() as conn:
            await exports.release(conn, export_id, owner=self._config.owner, retry_after_seconds=retry_after)

    async def _fail(self, export_id: uuid.UUID, code: str, message: str) -> None:
        logger.warning("export %s failed: %s: %s", export_id, code, message)
        async with self._db.connection() as conn:
            await exports.fail(conn, export_id, owner=self._config.owner, error_code=code, error_message=message)
