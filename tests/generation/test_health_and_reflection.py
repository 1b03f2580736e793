"""The generation service answers grpc.health.v1 and lists its services through server reflection."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.support.services import Services, running_services, test_settings


@pytest.fixture
async def services(database_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    async with running_services(test_settings(database_url, tmp_path)) as running:
        yield running


@pytest.mark.parametrize("service", ["", "convgen.v1.GenerationService", "convgen.v1.CatalogService"])
async def test_health_check_answers_serving(services: Services, service: str) -> None:
    assert services.generation_channel is not None
    stub = health_pb2_grpc.HealthStub(services.generation_channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service))
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_health_watch_streams_through_the_interceptors(services: Services) -> None:
    """Regression: Health/Watch writes with context.write() instead of yielding, which the interceptors once broke."""
    assert services.generation_channel is not None
    call = health_pb2_grpc.HealthStub(services.generation_channel).Watch(
        health_pb2.HealthCheckRequest(service="convgen.v1.GenerationService")
    )
    try:
        first = await asyncio.wait_for(call.read(), 10)
    finally:
        call.cancel()
    assert isinstance(first, health_pb2.HealthCheckResponse)
    assert first.status == health_pb2.HealthCheckResponse.SERVING


async def list_services(channel: object) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    async for response in call:
        return {s.name for s in response.list_services_response.service}
    return set()


async def test_reflection_lists_the_services(services: Services) -> None:
    generation = await list_services(services.generation_channel)
    assert {"convgen.v1.GenerationService", "convgen.v1.CatalogService", "grpc.health.v1.Health"} <= generation
    batch = await list_services(services.batch_channel)
    assert {"convgen.v1.BatchService", "convgen.v1.DatasetService"} <= batch
    assert services.batch_channel is not None
    for service in ("convgen.v1.BatchService", "convgen.v1.DatasetService"):
        health = await health_pb2_grpc.HealthStub(services.batch_channel).Check(
            health_pb2.HealthCheckRequest(service=service)
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.slow
async def test_the_health_command_used_by_container_health_checks(services: Services) -> None:
    assert services.generation is not None
    target = f"127.0.0.1:{services.generation.port}"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clients.cli.main", "health", "--target", target, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    assert (process.returncode, out.decode().strip()) == (0, "SERVING")
    closed = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "clients.cli.main",
        "health",
        "--target",
        "127.0.0.1:1",
        "--timeout",
        "0.5",
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await closed.communicate()
    assert closed.returncode == 1
    assert err.decode().startswith("error: ")
