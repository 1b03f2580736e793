"""Composition root of the generation service: builds everything from the settings and serves it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from convgen.blobs import BlobStore
from convgen.blobs.factory import open_blob_store
from convgen.db.bootstrap import DatabaseHandle, open_database
from convgen.db.database import Database
from convgen.pricing import load_price_table
from convgen.rpc.auth import auth_interceptor
from convgen.rpc.server import ServiceHost, freeze_startup_objects, wait_for_termination_signal
from convgen.settings import Settings
from convgen.v1 import catalog_pb2, catalog_pb2_grpc, generation_pb2, generation_pb2_grpc
from generation_service.api import CatalogServicer, GenerationServicer
from generation_service.estimates import ConversationEstimator, EstimatorConfig
from generation_service.generator import ConversationGenerator, GeneratorConfig
from generation_service.model.factory import build_model_client
from generation_service.model.port import ModelClient
from generation_service.request_claims import RequestClaims

logger = logging.getLogger(__name__)

GENERATION_SERVICE = generation_pb2.DESCRIPTOR.services_by_name["GenerationService"].full_name
CATALOG_SERVICE = catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name


@dataclass
class GenerationApp:
    """A running generation service and what it owns."""

    host: ServiceHost
    claims: RequestClaims
    generator: ConversationGenerator
    model: ModelClient
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
        db: Database | None = None,
        blobs: BlobStore | None = None,
        model: ModelClient | None = None,
        port: int | None = None,
    ) -> GenerationApp:
        """Opens (or takes) the pool, blob store and model client, then serves on port (default GENERATION_PORT)."""
        handle = await open_database(settings) if db is None else None
        database = handle.db if handle is not None else db
        assert database is not None
        store = blobs if blobs is not None else await open_blob_store(settings)
        model_client = model if model is not None else build_model_client(settings)
        claims = RequestClaims(
            database, instance_name=settings.instance_name, lease_seconds=settings.generation_claim_lease_seconds
        )
        prices = load_price_table(settings.model_price_table_file)
        generator = ConversationGenerator(
            database,
            store,
            model_client,
            claims,
            GeneratorConfig(
                conversation_bucket=settings.conversation_bucket, max_tokens=settings.model_max_tokens, prices=prices
            ),
        )
        estimator = ConversationEstimator(
            database,
            model_client,
            EstimatorConfig(
                prices=prices,
                cache_ttl=settings.model_cache_ttl,
                default_output_tokens=settings.estimate_default_output_tokens,
            ),
        )
        host = ServiceHost(
            settings,
            name="generation service",
            key="generation",
            interceptors=[auth_interceptor(settings, "generation")],
        )
        host.add(
            generation_pb2_grpc.add_GenerationServiceServicer_to_server,
            GenerationServicer(
                generator,
                estimator,
                database,
                store,
                max_page_size=settings.max_page_size,
                max_message_bytes=settings.grpc_max_message_bytes,
            ),
            GENERATION_SERVICE,
        )
        host.add(
            catalog_pb2_grpc.add_CatalogServiceServicer_to_server,
            CatalogServicer(database, settings.max_page_size),
            CATALOG_SERVICE,
        )
        claims.start()
        await generator.start()
        await host.start(settings.generation_port if port is None else port)
        return cls(
            host=host,
            claims=claims,
            generator=generator,
            model=model_client,
            owned_db=handle,
            owned_blobs=store if blobs is None else None,
        )

    async def stop(self, grace: float) -> None:
        """Stops taking calls, lets in-flight ones finish within grace, then releases what it opened."""
        await self.host.stop(grace)
        await self.generator.stop()
        await self.claims.stop()
        await self.model.close()
        if self.owned_blobs is not None:
            await self.owned_blobs.close()
        if self.owned_db is not None:
            await self.owned_db.close()


async def serve(settings: Settings) -> None:
    """Runs the generation service until SIGTERM or SIGINT."""
    app = await GenerationApp.start(settings)
    freeze_startup_objects()
    signal_name = await wait_for_termination_signal()
    logger.info("%s received: shutting down (grace %.1fs)", signal_name, settings.shutdown_grace_seconds)
    await app.stop(settings.shutdown_grace_seconds)
