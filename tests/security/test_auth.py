"""Bearer-token authentication on both services, and the batch service's own token towards the generation service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from convgen.errors import Unauthenticated
from convgen.rpc.auth import AuthInterceptor, is_local_peer
from convgen.v1 import batch_pb2, catalog_pb2
from tests.security.helpers import BATCH_TO_GENERATION, CLIENT_TOKEN, bearer
from tests.support.demo_catalog import seed_job_request
from tests.support.jobs import wait_terminal
from tests.support.services import Services, running_services, test_settings


@pytest.fixture
async def services(database_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    settings = test_settings(database_url, tmp_path, auth_tokens=f"{CLIENT_TOKEN},{BATCH_TO_GENERATION}")
    async with running_services(
        settings,
        batch_overrides={"auth_tokens": CLIENT_TOKEN, "generation_auth_token": BATCH_TO_GENERATION},
    ) as running:
        yield running


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ((), "missing bearer token in the authorization metadata"),
        (bearer("wrong"), "invalid bearer token"),
        ((("authorization", f"Basic {CLIENT_TOKEN}"),), "authorization metadata must be 'Bearer <token>'"),
    ],
)
async def test_calls_without_a_valid_token_are_unauthenticated(
    services: Services, metadata: tuple[tuple[str, str], ...], message: str
) -> None:
    for call in (
        services.catalog_stub.ListPersonas(catalog_pb2.ListPersonasRequest(), metadata=metadata),
        services.batch_stub.ListBatchJobs(batch_pb2.ListBatchJobsRequest(), metadata=metadata),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert caught.value.details() == message


async def test_streams_are_guarded_too(services: Services) -> None:
    call = services.batch_stub.WatchBatchJob(
        batch_pb2.WatchBatchJobRequest(job_id="00000000-0000-0000-0000-000000000001")
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_health_stays_open_and_valid_tokens_work(services: Services) -> None:
    assert services.generation_channel is not None
    health = await health_pb2_grpc.HealthStub(services.generation_channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    personas = await services.catalog_stub.ListPersonas(
        catalog_pb2.ListPersonasRequest(), metadata=bearer(CLIENT_TOKEN)
    )
    assert len(personas.personas) == 3


async def test_the_batch_service_authenticates_to_the_generation_service_with_its_own_token(
    services: Services,
) -> None:
    job = await services.batch_stub.CreateBatchJob(seed_job_request(), metadata=bearer(CLIENT_TOKEN))
    async with asyncio.timeout(60):
        async for _ in services.batch_stub.WatchBatchJob(
            batch_pb2.WatchBatchJobRequest(job_id=job.id), metadata=bearer(CLIENT_TOKEN)
        ):
            pass
    done = await services.batch_stub.GetBatchJob(
        batch_pb2.GetBatchJobRequest(job_id=job.id), metadata=bearer(CLIENT_TOKEN)
    )
    assert (done.state, done.completed_items) == (batch_pb2.BATCH_JOB_STATE_COMPLETED, 8)


async def test_a_wrong_service_token_fails_items_with_a_clear_unauthenticated_message(
    database_url: str, tmp_path: Path
) -> None:
    settings = test_settings(database_url, tmp_path, auth_tokens=BATCH_TO_GENERATION)
    async with running_services(settings, batch_overrides={"auth_tokens": None, "generation_auth_token": "stale"}) as s:
        job = await s.batch_stub.CreateBatchJob(seed_job_request())
        done = await wait_terminal(s.batch_stub, job.id)
        assert (done.state, done.failed_items) == (batch_pb2.BATCH_JOB_STATE_FAILED, 8)
        failed = await s.batch_stub.ListBatchItems(batch_pb2.ListBatchItemsRequest(job_id=job.id))
        assert {i.error_message for i in failed.items} == {"generation failed: UNAUTHENTICATED: invalid bearer token"}


async def test_health_can_be_closed_too(database_url: str, tmp_path: Path) -> None:
    settings = test_settings(database_url, tmp_path, auth_tokens=CLIENT_TOKEN, auth_open_health_and_reflection=False)
    async with running_services(settings, batch=False) as s:
        assert s.generation_channel is not None
        stub = health_pb2_grpc.HealthStub(s.generation_channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Check(health_pb2.HealthCheckRequest())
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        ok = await stub.Check(health_pb2.HealthCheckRequest(), metadata=bearer(CLIENT_TOKEN))
        assert ok.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize(
    ("peer", "local"),
    [
        ("ipv4:127.0.0.1:5000", True),
        ("ipv4:127.8.9.10:5000", True),
        ("ipv6:[::1]:5000", True),
        ("unix:/tmp/socket", True),
        ("ipv4:10.0.0.7:5000", False),
        ("ipv6:[2001:db8::1]:5000", False),
        ("ipv4:not-an-ip:1", False),
        ("", False),
    ],
)
def test_local_peers(peer: str, local: bool) -> None:
    assert is_local_peer(peer) is local


def test_with_auth_off_remote_callers_are_refused() -> None:
    interceptor = AuthInterceptor([], open_health_and_reflection=True, service="test")
    interceptor.check((), "ipv4:127.0.0.1:1234")
    with pytest.raises(Unauthenticated) as caught:
        interceptor.check((), "ipv4:192.0.2.10:1234")
    assert "only local callers are accepted" in caught.value.message
