"""Batch service replicas as real processes on one database: shared work, no double processing, crash recovery."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import grpc
import pytest

from convgen.v1 import batch_pb2, batch_pb2_grpc
from tests.support.cluster import ProcessCluster
from tests.support.demo_catalog import CatalogIds
from tests.support.jobs import wait_terminal
from tests.support.postgres import fetch

pytestmark = pytest.mark.slow  # replicas as processes, 200- and 60-item jobs, about 15 s

REPLICA_ENV = {
    "BLOB_STORE": "file",
    "LISTEN_HOST": "127.0.0.1",
    "LOG_FORMAT": "json",
    "BATCH_LEASE_SECONDS": "2",
    "BATCH_POLL_SECONDS": "0.5",
    # Below the jobs' concurrency (16), so no replica can hold every slot: each job needs both replicas.
    "BATCH_WORKER_CONCURRENCY": "8",
    "BATCH_RETRY_BASE_SECONDS": "0.1",
    "SHUTDOWN_GRACE_SECONDS": "2",
    "DATABASE_POOL_MIN_SIZE": "1",
}


def replicas(database_url: str, workdir: Path, count: int) -> ProcessCluster:
    """The Messages API (0.1 s ± 20 %), one generation service and `count` batch replicas on the test's database."""
    env = {**REPLICA_ENV, "DATABASE_URL": database_url, "CONVGEN_DATA_DIR": str(workdir / "data")}
    api_args = ["--latency", "0.1", "--jitter", "0.2", "--seed", "7"]
    return ProcessCluster(workdir, env, api_args=api_args, batch_replicas=count)


async def assert_exactly_one_conversation_per_item(dsn: str, job_id: str, total: int) -> None:
    job = uuid.UUID(job_id)
    items = await fetch(dsn, "SELECT status, conversation_id FROM batch_items WHERE batch_job_id = $1", job)
    assert len(items) == total
    assert {r["status"] for r in items} == {"completed"}
    conversations = await fetch(
        dsn,
        "SELECT c.id FROM conversations c JOIN batch_items i ON c.request_id LIKE 'batch-item/' || i.id || '/%' "
        "WHERE i.batch_job_id = $1",
        job,
    )
    assert len(conversations) == total, "each item has exactly one conversation"
    assert {r["conversation_id"] for r in items} == {r["id"] for r in conversations}


async def test_two_replicas_share_a_200_item_job_without_processing_any_item_twice(
    database_url: str, tmp_path: Path
) -> None:
    catalog = await CatalogIds.of_database(database_url)
    async with replicas(database_url, tmp_path, 2) as cluster:
        job = await cluster.stub().CreateBatchJob(
            batch_pb2.CreateBatchJobRequest(
                name="two replicas", combination=catalog.combination(200), concurrency=16, auto_start=False
            )
        )
        assert job.total_items == 200
        # A watcher on the OTHER replica must see every event, whichever replica's worker caused it.
        async with grpc.aio.insecure_channel(cluster.batches[1].address) as other:
            stream = batch_pb2_grpc.BatchServiceStub(other).WatchBatchJob(batch_pb2.WatchBatchJobRequest(job_id=job.id))
            snapshot = await stream.read()
            await cluster.stub().ResumeBatchJob(batch_pb2.ResumeBatchJobRequest(job_id=job.id))
            watched = []
            while (event := await stream.read()) is not grpc.aio.EOF:
                watched.append(event)
        done = await wait_terminal(cluster.stub(), job.id, within=90)

        assert done.state == batch_pb2.BATCH_JOB_STATE_COMPLETED
        assert done.completed_items == 200
        await assert_exactly_one_conversation_per_item(database_url, job.id, 200)
        claims = await fetch(
            database_url,
            "SELECT item_id, count(*) AS n FROM batch_job_events WHERE batch_job_id = $1 AND kind = 'processing' "
            "GROUP BY item_id",
            uuid.UUID(job.id),
        )
        assert len(claims) == 200
        assert all(r["n"] == 1 for r in claims), "no item was claimed twice"
        workers = await fetch(
            database_url,
            "SELECT DISTINCT substring(message from 'on worker (.*)$') AS owner FROM batch_job_events "
            "WHERE batch_job_id = $1 AND kind = 'processing'",
            uuid.UUID(job.id),
        )
        assert len(workers) == 2, "both replicas claimed items"
        stored = await fetch(
            database_url,
            "SELECT max(sequence) AS last FROM batch_job_events WHERE batch_job_id = $1",
            uuid.UUID(job.id),
        )
        assert [e.sequence for e in watched] == list(range(snapshot.sequence + 1, stored[0]["last"] + 1))
        assert sum(e.item.kind == batch_pb2.ITEM_TRANSITION_KIND_COMPLETED for e in watched) == 200


async def test_killed_replica_leaves_nothing_stuck_and_no_duplicates(database_url: str, tmp_path: Path) -> None:
    catalog = await CatalogIds.of_database(database_url)
    async with replicas(database_url, tmp_path, 1) as cluster:
        job = await cluster.stub().CreateBatchJob(
            batch_pb2.CreateBatchJobRequest(name="killed mid-job", combination=catalog.combination(60), concurrency=8)
        )
        replica = cluster.batches[0]
        async with asyncio.timeout(30):
            while (await cluster.stub().GetBatchJob(batch_pb2.GetBatchJobRequest(job_id=job.id))).completed_items < 10:
                await asyncio.sleep(0.05)
        replica.kill()
        in_flight = await fetch(
            database_url,
            "SELECT count(*) AS n FROM batch_items WHERE batch_job_id = $1 AND status = 'processing'",
            uuid.UUID(job.id),
        )
        assert in_flight[0]["n"] > 0, "the kill happened while items were in flight"

        await replica.start()
        async with grpc.aio.insecure_channel(replica.address) as channel:  # the old one is in reconnect backoff
            done = await wait_terminal(batch_pb2_grpc.BatchServiceStub(channel), job.id, within=90)

        assert done.state == batch_pb2.BATCH_JOB_STATE_COMPLETED
        assert (done.completed_items, done.processing_items) == (60, 0)
        await assert_exactly_one_conversation_per_item(database_url, job.id, 60)
        released = await fetch(
            database_url,
            "SELECT count(*) AS n FROM batch_job_events WHERE batch_job_id = $1 AND kind = 'released'",
            uuid.UUID(job.id),
        )
        assert released[0]["n"] == in_flight[0]["n"], "every item the dead worker held was recovered from its lease"
