"""Composition root of the batch service: builds everything from the settings and serves it."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass

import grpc

from batch_service.api import BatchServicer
from batch_service.datasets.api import DatasetLimits, DatasetServicer
from batch_service.datasets.runner import ExportRunner, RunnerConfig
from batch_service.engine import BatchEngine, EngineConfig
from batch_service.event_feed import JobFeeds
from batch_service.generation_client import GenerationClient, open_channel
from batch_service.job_log import LogUploader, LogUploaderConfig
from batch_service.notifications import Notifications
from batch_service.request_parsing import BatchLimits
from convgen.blobs import BlobStore
from convgen.blobs.factory import open_blob_store
from convgen.db.bootstrap import DatabaseHandle, open_database
from convgen.rpc.auth import auth_interceptor
from convgen.rpc.server import ServiceHost, freeze_startup_objects, wait_for_termination_signal
from convgen.settings import Settings
from convgen.v1 import batch_pb2, batch_pb2_grpc, dataset_pb2, dataset_pb2_grpc

logger = logging.getLogger(__name__)

BATCH_SERVICE = batch_pb2.DESCRIPTOR.services_by_name["BatchService"].full_name
DATASET_SERVICE = dataset_pb2.DESCRIPTOR.services_by_name["DatasetService"].full_name


@dataclass
class BatchApp:
    """A running batch service and what it owns."""

    host: ServiceHost
    engine: BatchEngine
    notifications: Notifications
    feeds: JobFeeds
    logs: LogUploader
    exports: ExportRunner
    client: GenerationClient
    owned_db: DatabaseHandle | None
    owned_blobs: BlobStore | None

    @property
    def port(self) -> int:
        """The port the service listens on."""
        return self.host.port

    @classmethod
    async def start(
        cls,
        settings: Settings,
        *,
        database: DatabaseHandle | None = None,
        blobs: BlobStore | None = None,
        generation_channel: grpc.aio.Channel | None = None,
        port: int | None = None,
        log_sweep_seconds: float = 10.0,
    ) -> BatchApp:
        """Opens (or takes) the pool and blob store, connects to the generation service and serves."""
        handle = database if database is not None else await open_database(settings)
        store = blobs if blobs is not None else await open_blob_store(settings)
        token = settings.generation_auth_token.get_secret_value() if settings.generation_auth_token else None
        client = GenerationClient(
            generation_channel if generation_channel is not None else open_channel(settings),
            deadline_seconds=settings.generation_deadline_seconds,
            token=token,
        )
        logs = LogUploader(
            handle.db, store, LogUploaderConfig(bucket=settings.log_bucket, sweep_seconds=log_sweep_seconds)
        )
        engine = BatchEngine(
            handle.db,
            client,
            logs,
            EngineConfig(
                # Unique per process start, so a restarted replica never mistakes a dead one's leases for its own.
                owner=f"{settings.instance_name}/{uuid.uuid4()}",
                worker_concurrency=settings.batch_worker_concurrency,
                lease_seconds=settings.batch_lease_seconds,
                poll_seconds=settings.batch_poll_seconds,
                retry_base_seconds=settings.batch_retry_base_seconds,
                retry_max_seconds=settings.batch_retry_max_seconds,
                max_lease_recoveries=settings.batch_max_lease_recoveries,
                breaker_failures=settings.batch_breaker_failures,
            ),
        )
        exports = ExportRunner(
            handle.db,
            store,
            RunnerConfig(
                owner=engine.owner,
                bucket=settings.dataset_bucket,
                lease_seconds=settings.dataset_lease_seconds,
                poll_seconds=settings.dataset_poll_seconds,
                read_concurrency=settings.dataset_read_concurrency,
                spool_dir=settings.dataset_spool_dir,
            ),
        )
        notifications = Notifications(handle.dsn, on_work=engine.wake)
        feeds = JobFeeds(handle.db, notifications)
        host = ServiceHost(
            settings, name="batch service", key="batch", interceptors=[auth_interceptor(settings, "batch")]
        )
        host.add(
            batch_pb2_grpc.add_BatchServiceServicer_to_server,
            BatchServicer(
                handle.db,
                engine,
                generation=client,
                feeds=feeds,
                logs=logs,
                limits=BatchLimits(
                    max_items=settings.batch_max_items,
                    default_concurrency=settings.batch_default_concurrency,
                    max_concurrency=settings.batch_max_concurrency,
                    default_max_attempts=settings.batch_default_max_attempts,
                    max_page_size=settings.max_page_size,
                    max_message_bytes=settings.grpc_max_message_bytes,
                ),
            ),
            BATCH_SERVICE,
        )
        host.add(
            dataset_pb2_grpc.add_DatasetServiceServicer_to_server,
            DatasetServicer(
                handle.db,
                store,
                exports,
                DatasetLimits(max_page_size=settings.max_page_size, max_message_bytes=settings.grpc_max_message_bytes),
            ),
            DATASET_SERVICE,
        )
        notifications.start()
        logs.start()
        engine.start()
        exports.start()
        await host.start(settings.batch_port if port is None else port)
        logger.info("batch engine %s started (generation target %s)", engine.owner, settings.generation_target)
        return cls(
            host=host,
            engine=engine,
            notifications=notifications,
            feeds=feeds,
            logs=logs,
            exports=exports,
            client=client,
            owned_db=handle if database is None else None,
            owned_blobs=store if blobs is None else None,
        )

    async def stop(self, grace: float) -> None:
        """Stops calls and claims, lets in-flight work finish within grace, releases the rest, closes everything."""
        await asyncio.gather(self.host.stop(grace), self.engine.stop(grace), self.exports.stop())
        await self.feeds.close()
        await self.logs.stop()
        await self.notifications.stop()
        await self.client.close()
        if self.owned_blobs is not None:
            await self.owned_blobs.close()
        if self.owned_db is not None:
            await self.owned_db.close()


async def serve(settings: Settings) -> None:
    """Runs the batch service until SIGTERM or SIGINT."""
    app = await BatchApp.start(settings)
    freeze_startup_objects()
    signal_name = await wait_for_termination_signal()
    logger.info("%s received: shutting down (grace %.1fs)", signal_name, settings.shutdown_grace_seconds)
    await app.stop(settings.shutdown_grace_seconds)
