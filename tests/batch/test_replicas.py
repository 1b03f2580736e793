"""Batch service replicas as real processes on one database: shared work, no double processing, crash recovery."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from convgen.v1 import batch_pb2, batch_pb2_grpc, common_pb2
from tests.batch.helpers import wait_terminal
from tests.support.postgres import fetch
from tests.support.processes import FakeApiProcess, ServiceProcess, clean_environment

CORE_ARCS = [
    "53583301-5758-4781-99df-57b9c5fc1949",
    "33d2ac3e-3f92-44a5-a53d-788fdece2545",
    "4d2efafa-1df5-42de-9568-dc41b3839d7b",
    "1cb3c7a2-77e7-48d2-90f3-bd91e4fd4f51",
    "d2466485-d5a0-4c54-b9c4-d5ce3cf47ad3",
]
PERSONAS = ["aa514346-cd61-42ac-adad-498934975402", "5a4a6042-5bb7-4da6-b2e2-119b6f97be6f"]


async def topic_ids(dsn: str, count: int) -> list[str]:
    rows = await fetch(dsn, "SELECT id FROM training_topics ORDER BY topic_key LIMIT $1", count)
    return [str(r["id"]) for r in rows]


class Cluster:
    """A fake Messages API, one generation service and N batch services, all separate processes."""

    def __init__(self, database_url: str, workdir: Path, *, latency: float) -> None:
        self.workdir = workdir
        self.api = FakeApiProcess(workdir, ["--latency", str(latency), "--jitter", "0.2", "--seed", "7"])
        self.base_env = {
            "DATABASE_URL": database_url,
            "CONVGEN_DATA_DIR": str(workdir / "data"),
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
        self.generation: ServiceProcess | None = None
        self.batches: list[ServiceProcess] = []
        self.channel: grpc.aio.Channel | None = None

    async def start(self, batch_replicas: int) -> None:
        base_url = await self.api.start()
        env = clean_environment(
            {
                **self.base_env,
                "MODEL_CLIENT": "anthropic",
                "ANTHROPIC_API_KEY": "test-key",
                "ANTHROPIC_BASE_URL": base_url,
            }
        )
        self.generation = ServiceProcess("generation", env, self.workdir)
        await self.generation.start()
        batch_env = clean_environment({**self.base_env, "GENERATION_TARGET": self.generation.address})
        for n in range(batch_replicas):
            replica = ServiceProcess("batch", batch_env, self.workdir, name=f"batch-{n}")
            await replica.start()
            self.batches.append(replica)
        self.channel = grpc.aio.insecure_channel(self.batches[0].address)

    @property
    def stub(self) -> batch_pb2_grpc.BatchServiceStub:
        assert self.channel is not None
        return batch_pb2_grpc.BatchServiceStub(self.channel)

    async def stop(self) -> None:
        if self.channel is not None:
            await self.channel.close()
        for process in [*self.batches, self.generation]:
            if process is not None:
                process.kill()
        self.api.stop()


@pytest.fixture
async def cluster(database_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    running = Cluster(database_url, tmp_path, latency=0.1)
    try:
        yield running
    finally:
        await running.stop()


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
    cluster: Cluster, database_url: str
) -> None:
    await cluster.start(batch_replicas=2)
    topics = await topic_ids(database_url, 20)
    job = await cluster.stub.CreateBatchJob(
        batch_pb2.CreateBatchJobRequest(
            name="two replicas",
            combination=batch_pb2.Combination(
                persona_ids=PERSONAS,
                emotional_arc_ids=CORE_ARCS,
                training_topic_ids=topics,
                tier=common_pb2.TIER_TEMPLATE,
            ),
            concurrency=16,
            auto_start=False,
        )
    )
    assert job.total_items == 200
    # A watcher on the OTHER replica must see every event, whichever replica's worker caused it.
    async with grpc.aio.insecure_channel(cluster.batches[1].address) as other:
        stream = batch_pb2_grpc.BatchServiceStub(other).WatchBatchJob(batch_pb2.WatchBatchJobRequest(job_id=job.id))
        snapshot = await stream.read()
        await cluster.stub.ResumeBatchJob(batch_pb2.ResumeBatchJobRequest(job_id=job.id))
        watched = []
        while (event := await stream.read()) is not grpc.aio.EOF:
            watched.append(event)
    done = await wait_terminal(cluster.stub, job.id, within=90)

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
        database_url, "SELECT max(sequence) AS last FROM batch_job_events WHERE batch_job_id = $1", uuid.UUID(job.id)
    )
    assert [e.sequence for e in watched] == list(range(snapshot.sequence + 1, stored[0]["last"] + 1))
    assert sum(e.item.kind == batch_pb2.ITEM_TRANSITION_KIND_COMPLETED for e in watched) == 200


async def test_killed_replica_leaves_nothing_stuck_and_no_duplicates(cluster: Cluster, database_url: str) -> None:
    await cluster.start(batch_replicas=1)
    topics = await topic_ids(database_url, 20)
    job = await cluster.stub.CreateBatchJob(
        batch_pb2.CreateBatchJobRequest(
            name="killed mid-job",
            combination=batch_pb2.Combination(
                persona_ids=PERSONAS[:1],
                emotional_arc_ids=CORE_ARCS[:3],
                training_topic_ids=topics,
                tier=common_pb2.TIER_TEMPLATE,
            ),
            concurrency=8,
        )
    )
    replica = cluster.batches[0]
    async with asyncio.timeout(30):
        while (await cluster.stub.GetBatchJob(batch_pb2.GetBatchJobRequest(job_id=job.id))).completed_items < 10:
            await asyncio.sleep(0.05)
    replica.kill()
    in_flight = await fetch(
        database_url,
        "SELECT count(*) AS n FROM batch_items WHERE batch_job_id = $1 AND status = 'processing'",
        uuid.UUID(job.id),
    )
    assert in_flight[0]["n"] > 0, "the kill happened while items were in flight"

    await replica.start()
    assert cluster.channel is not None
    await cluster.channel.close()
    cluster.channel = grpc.aio.insecure_channel(replica.address)
    done = await wait_terminal(cluster.stub, job.id, within=90)

    assert done.state == batch_pb2.BATCH_JOB_STATE_COMPLETED
    assert (done.completed_items, done.processing_items) == (60, 0)
    await assert_exactly_one_conversation_per_item(database_url, job.id, 60)
    released = await fetch(
        database_url,
        "SELECT count(*) AS n FROM batch_job_events WHERE batch_job_id = $1 AND kind = 'released'",
        uuid.UUID(job.id),
    )
    assert released[0]["n"] == in_flight[0]["n"], "every item the dead worker held was recovered from its lease"
