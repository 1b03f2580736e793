"""Runs the real services in-process on OS-assigned ports, reached over real gRPC channels."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from batch_service.app import BatchApp
from convgen.settings import Settings
from convgen.v1 import batch_pb2_grpc, catalog_pb2_grpc, generation_pb2_grpc
from generation_service.app import GenerationApp


def test_settings(database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    """Settings for an in-process test: given database, file blobs under data_dir, offline model, quick timings."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "convgen_data_dir": data_dir,
        "blob_store": "file",
        "model_client": "offline",
        "listen_host": "127.0.0.1",
        "generation_port": 0,
        "batch_port": 0,
        "log_format": "text",
        "database_pool_min_size": 1,
        "database_pool_max_size": 10,
        "batch_lease_seconds": 5.0,
        "batch_poll_seconds": 0.5,
        "batch_retry_base_seconds": 0.05,
        "batch_retry_max_seconds": 0.2,
        "model_retry_base_seconds": 0.01,
        "model_retry_max_seconds": 0.05,
        "shutdown_grace_seconds": 2.0,
    }
    values.update(overrides)
    return Settings(**values)


test_settings.__test__ = False  # type: ignore[attr-defined]


@dataclass
class Services:
    """Running services and channels to them."""

    settings: Settings
    generation: GenerationApp | None
    batch: BatchApp | None
    generation_channel: grpc.aio.Channel | None
    batch_channel: grpc.aio.Channel | None

    @property
    def targets(self) -> tuple[str, str]:
        """(generation target, batch target) of the running services."""
        assert self.generation is not None
        assert self.batch is not None
        return f"127.0.0.1:{self.generation.port}", f"127.0.0.1:{self.batch.port}"

    @property
    def generation_stub(self) -> generation_pb2_grpc.GenerationServiceStub:
        """A stub on the generation service."""
        assert self.generation_channel is not None
        return generation_pb2_grpc.GenerationServiceStub(self.generation_channel)

    @property
    def catalog_stub(self) -> catalog_pb2_grpc.CatalogServiceStub:
        """A stub on the catalog service (hosted by the generation service)."""
        assert self.generation_channel is not None
        return catalog_pb2_grpc.CatalogServiceStub(self.generation_channel)

    @property
    def batch_stub(self) -> batch_pb2_grpc.BatchServiceStub:
        """A stub on the batch service."""
        assert self.batch_channel is not None
        return batch_pb2_grpc.BatchServiceStub(self.batch_channel)


@asynccontextmanager
async def running_services(
    settings: Settings,
    *,
    batch: bool = True,
    log_sweep_seconds: float = 0.5,
    generation_overrides: dict[str, Any] | None = None,
    batch_overrides: dict[str, Any] | None = None,
) -> AsyncIterator[Services]:
    """Starts the generation service (and the batch service pointed at it); stops both afterwards."""
    generation = await GenerationApp.start(settings.with_overrides(**(generation_overrides or {})))
    generation_channel = grpc.aio.insecure_channel(f"127.0.0.1:{generation.port}")
    batch_app: BatchApp | None = None
    batch_channel: grpc.aio.Channel | None = None
    try:
        if batch:
            batch_settings = settings.with_overrides(
                **{**(batch_overrides or {}), "generation_target": f"127.0.0.1:{generation.port}"}
            )
            batch_app = await BatchApp.start(batch_settings, log_sweep_seconds=log_sweep_seconds)
            batch_channel = grpc.aio.insecure_channel(f"127.0.0.1:{batch_app.port}")
        yield Services(settings, generation, batch_app, generation_channel, batch_channel)
    finally:
        async with stopping_within(STOP_LIMIT_SECONDS):
            if batch_channel is not None:
                await batch_channel.close()
            if batch_app is not None:
                await batch_app.stop(0.5)
            await generation_channel.close()
            await generation.stop(0.5)


async def assert_serving(services: Services) -> None:
    """Every running service answers SERVING to grpc.health.v1."""
    for channel in (services.generation_channel, services.batch_channel):
        if channel is not None:
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING


# Stopping takes a second or two; far longer means something hangs, and the failure should say where.
STOP_LIMIT_SECONDS = 60.0


@asynccontextmanager
async def stopping_within(seconds: float) -> AsyncIterator[None]:
    """Fails with the stacks of every pending task when shutting down takes longer than seconds."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise AssertionError(f"services did not stop within {seconds:.0f}s; pending tasks:\n{task_stacks()}") from None


def task_stacks() -> str:
    """Where every pending asyncio task is suspended, innermost frame last."""
    # Not Task.print_stack: it stumbles over gRPC's Cython frames, which have no line numbers.
    lines = []
    for task in asyncio.all_tasks():
        lines.append(f"task {task.get_name()}: {task.get_coro()!r}")
        lines.extend(f"    {f.f_code.co_filename}:{f.f_lineno} in {f.f_code.co_name}" for f in task.get_stack(limit=12))
    return "\n".join(lines)


def claude_settings(base_url: str) -> dict[str, Any]:
    """Overrides that make the generation service call the Messages API at base_url through the real SDK."""
    return {
        "model_client": "anthropic",
        "anthropic_api_key": "test-key",
        "anthropic_base_url": base_url,
        "model_timeout_seconds": 10.0,
    }
