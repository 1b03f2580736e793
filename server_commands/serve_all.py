"""`convgen serve all`: both services in one process, sharing the pool and the blob store."""

from __future__ import annotations

import logging

from batch_service.app import BatchApp
from convgen.blobs.factory import open_blob_store
from convgen.db.bootstrap import open_database
from convgen.rpc.server import freeze_startup_objects, wait_for_termination_signal
from convgen.settings import Settings
from generation_service.app import GenerationApp

logger = logging.getLogger(__name__)


async def serve_all(settings: Settings) -> None:
    """Runs the generation and batch services in this process until SIGTERM or SIGINT."""
    handle = await open_database(settings)
    blobs = await open_blob_store(settings)
    generation = await GenerationApp.start(settings, db=handle.db, blobs=blobs)
    local = settings.with_overrides(generation_target=f"127.0.0.1:{generation.port}")
    batch = await BatchApp.start(local, database=handle, blobs=blobs)
    freeze_startup_objects()
    signal_name = await wait_for_termination_signal()
    logger.info("%s received: shutting down (grace %.1fs)", signal_name, settings.shutdown_grace_seconds)
    await batch.stop(settings.shutdown_grace_seconds)
    await generation.stop(settings.shutdown_grace_seconds)
    await blobs.close()
    await handle.close()
