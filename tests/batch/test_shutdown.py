"""SIGTERM: services stop taking work, let in-flight work finish within the grace period, and release the rest."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import grpc
import pytest

from convgen.v1 import batch_pb2, batch_pb2_grpc, generation_pb2_grpc
from tests.support.cluster import ProcessCluster
from tests.support.demo_catalog import seed_job_request, seed_request
from tests.support.jobs import wait_terminal
from tests.support.postgres import fetch


def pair(database_url: str, workdir: Path, *, latency: float, grace: float) -> ProcessCluster:
    """The Messages API with this latency, a generation service and a batch service with this grace period."""
    env = {
        "DATABASE_URL": database_url,
        "CONVGEN_DATA_DIR": str(workdir / "data"),
        "LISTEN_HOST": "127.0.0.1",
        "SHUTDOWN_GRACE_SECONDS": str(grace),
        "BATCH_LEASE_SECONDS": "30",
    }
    return ProcessCluster(workdir, env, api_args=["--latency", str(latency)])


async def item_states(dsn: str, job_id: str) -> dict[str, int]:
    rows = await fetch(
        dsn, "SELECT status, count(*) AS n FROM batch_items WHERE batch_job_id = $1 GROUP BY status", uuid.UUID(job_id)
    )
    return {r["status"]: r["n"] for r in rows}


async def wait_for_processing(stub: batch_pb2_grpc.BatchServiceStub, job_id: str) -> None:
    async with asyncio.timeout(30):
        while (await stub.GetBatchJob(batch_pb2.GetBatchJobRequest(job_id=job_id))).processing_items == 0:
            await asyncio.sleep(0.05)


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_sigterm_lets_in_flight_items_finish_and_claims_nothing_new(database_url: str, tmp_path: Path) -> None:
    async with pair(database_url, tmp_path, latency=1.5, grace=10) as cluster:
        batch = cluster.batches[0]
        async with grpc.aio.insecure_channel(batch.address) as channel:
            stub = batch_pb2_grpc.BatchServiceStub(channel)
            job = await stub.CreateBatchJob(seed_job_request(concurrency=2))
            await wait_for_processing(stub, job.id)
        assert await batch.terminate() == 0
        states = await item_states(database_url, job.id)
        assert states.get("processing", 0) == 0, "nothing is left in processing"
        assert 1 <= states.get("completed", 0) <= 4, "in-flight items finished; nothing new was claimed"
        assert states.get("queued", 0) >= 4

        await batch.start()
        async with grpc.aio.insecure_channel(batch.address) as channel:
            done = await wait_terminal(batch_pb2_grpc.BatchServiceStub(channel), job.id)
        assert done.completed_items == 8


@pytest.mark.timeout(180)
async def test_items_still_running_after_the_grace_period_are_released(database_url: str, tmp_path: Path) -> None:
    async with pair(database_url, tmp_path, latency=5.0, grace=0.5) as cluster:
        batch = cluster.batches[0]
        async with grpc.aio.insecure_channel(batch.address) as channel:
            stub = batch_pb2_grpc.BatchServiceStub(channel)
            job = await stub.CreateBatchJob(seed_job_request(concurrency=3))
            await wait_for_processing(stub, job.id)
        assert await batch.terminate() == 0
        states = await item_states(database_url, job.id)
        assert states == {"queued": 8}, "the unfinished items went back to the queue"
        released = await fetch(
            database_url,
            "SELECT message FROM batch_job_events WHERE batch_job_id = $1 AND kind = 'released'",
            uuid.UUID(job.id),
        )
        assert released
        assert all(r["message"] == "released: worker shutting down" for r in released)


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_generation_service_finishes_an_in_flight_call_on_sigterm(database_url: str, tmp_path: Path) -> None:
    async with pair(database_url, tmp_path, latency=2.0, grace=10) as cluster:
        generation, batch = cluster.processes
        batch.kill()
        async with grpc.aio.insecure_channel(generation.address) as channel:
            stub = generation_pb2_grpc.GenerationServiceStub(channel)
            call = asyncio.ensure_future(stub.GenerateConversation(seed_request("in-flight")))
            await asyncio.sleep(0.5)  # the call is now waiting on the model
            exit_code = asyncio.ensure_future(generation.terminate())
            stored = await call
            assert stored.pk != stored.business_key
            assert await exit_code == 0
