"""WatchBatchJob: snapshot first, every transition once in sequence order, terminal last; resumable; many watchers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from batch_service.store.events import EVENTS_CHANNEL, WORK_CHANNEL
from convgen.v1 import batch_pb2, batch_pb2_grpc
from tests.support.demo_catalog import seed_job_request
from tests.support.jobs import TERMINAL, wait_terminal
from tests.support.postgres import fetch
from tests.support.services import Services, running_services, test_settings


@pytest.fixture
async def services(database_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    async with running_services(test_settings(database_url, tmp_path)) as running:
        yield running


async def collect(
    stub: batch_pb2_grpc.BatchServiceStub, job_id: str, started: asyncio.Event | None = None, **request: int
) -> list[batch_pb2.BatchJobEvent]:
    """Every event of a watch stream; `started` is set once the snapshot arrived."""
    events = []
    async for event in stub.WatchBatchJob(batch_pb2.WatchBatchJobRequest(job_id=job_id, **request)):
        events.append(event)
        if started is not None:
            started.set()
    return events


async def stored_sequences(dsn: str, job_id: str) -> list[int]:
    rows = await fetch(
        dsn, "SELECT sequence FROM batch_job_events WHERE batch_job_id = $1 ORDER BY sequence", uuid.UUID(job_id)
    )
    return [r["sequence"] for r in rows]


async def test_twenty_watchers_see_the_same_complete_sequence(services: Services, database_url: str) -> None:
    stub = services.batch_stub
    job = await stub.CreateBatchJob(seed_job_request(auto_start=False, concurrency=3))
    started = [asyncio.Event() for _ in range(20)]
    watchers = [asyncio.create_task(collect(stub, job.id, flag)) for flag in started]
    # Every watcher has its snapshot (so it is subscribed) before the job starts.
    await asyncio.wait_for(asyncio.gather(*(flag.wait() for flag in started)), 30)
    await stub.ResumeBatchJob(batch_pb2.ResumeBatchJobRequest(job_id=job.id))
    results = await asyncio.wait_for(asyncio.gather(*watchers), 60)

    stored = await stored_sequences(database_url, job.id)
    for events in results:
        snapshot, rest = events[0], events[1:]
        assert snapshot.WhichOneof("event") == "snapshot"
        assert snapshot.snapshot.id == job.id
        sequences = [e.sequence for e in rest]
        assert sequences == list(range(snapshot.sequence + 1, stored[-1] + 1)), "every event once, in order"
        assert rest[-1].WhichOneof("event") == "job"
        assert rest[-1].job_state in TERMINAL
        assert rest[-1].counters.completed_items == 8
    assert len({tuple(e.sequence for e in events) for events in results}) == 1, "all watchers saw the same stream"
    kinds = [e.item.kind for e in results[0] if e.WhichOneof("event") == "item"]
    assert kinds.count(batch_pb2.ITEM_TRANSITION_KIND_PROCESSING) == 8
    assert kinds.count(batch_pb2.ITEM_TRANSITION_KIND_COMPLETED) == 8
    completed = [e.item for e in results[0] if e.item.kind == batch_pb2.ITEM_TRANSITION_KIND_COMPLETED]
    assert all(c.conversation_pk and c.conversation_pk != c.conversation_business_key for c in completed)


async def test_resuming_with_after_sequence_misses_nothing_and_repeats_nothing(
    services: Services, database_url: str
) -> None:
    stub = services.batch_stub
    job = await stub.CreateBatchJob(seed_job_request(auto_start=False, concurrency=2))
    first_part: list[batch_pb2.BatchJobEvent] = []
    call = stub.WatchBatchJob(batch_pb2.WatchBatchJobRequest(job_id=job.id))
    await stub.ResumeBatchJob(batch_pb2.ResumeBatchJobRequest(job_id=job.id))
    async for event in call:
        first_part.append(event)
        if len(first_part) == 6:
            call.cancel()
            break
    resume_from = first_part[-1].sequence
    second_part = await collect(stub, job.id, after_sequence=resume_from)

    assert second_part[0].WhichOneof("event") == "snapshot"
    assert second_part[0].sequence == resume_from
    seen = [e.sequence for e in first_part[1:]] + [e.sequence for e in second_part[1:]]
    stored = await stored_sequences(database_url, job.id)
    assert seen == stored[stored.index(first_part[0].sequence) + 1 :]
    assert len(seen) == len(set(seen))


async def test_watching_a_finished_job_sends_the_snapshot_and_ends(services: Services) -> None:
    stub = services.batch_stub
    job = await stub.CreateBatchJob(seed_job_request())
    replay = await collect(stub, job.id, after_sequence=0)
    assert replay[0].WhichOneof("event") == "snapshot"
    assert replay[-1].job_state == batch_pb2.BATCH_JOB_STATE_COMPLETED
    assert [e.sequence for e in replay[1:]] == list(range(1, replay[-1].sequence + 1))

    late = await collect(stub, job.id)
    assert len(late) == 1
    assert late[0].snapshot.state == batch_pb2.BATCH_JOB_STATE_COMPLETED


async def test_watchers_that_come_and_go_during_a_running_job_always_get_their_snapshot(
    services: Services, database_url: str
) -> None:
    """Regression: a cancelled watch stream used to leave its cleanup to the garbage collector, and a later
    watcher could wait for ever for its snapshot."""
    topics = [str(r["id"]) for r in await fetch(database_url, "SELECT id FROM training_topics")]
    request = seed_job_request(concurrency=2)
    del request.combination.training_topic_ids[:]
    request.combination.training_topic_ids.extend(topics)
    job = await services.batch_stub.CreateBatchJob(request)
    for _ in range(40):
        call = services.batch_stub.WatchBatchJob(batch_pb2.WatchBatchJobRequest(job_id=job.id))
        try:
            first = await asyncio.wait_for(call.read(), 10)
        finally:
            call.cancel()
        assert isinstance(first, batch_pb2.BatchJobEvent)
        assert first.WhichOneof("event") == "snapshot"
    # Every cancelled stream let go of the job's feed: nothing keeps reading for watchers that are gone.
    assert services.batch is not None
    feeds = services.batch.feeds
    for _ in range(100):
        if feeds.active == 0:
            break
        await asyncio.sleep(0.05)
    assert feeds.active == 0


async def test_notifications_carry_ids_only_and_announce_every_event(services: Services, database_url: str) -> None:
    """Event NOTIFYs are 'job_id:sequence' (ids only, no content), in sequence order up to the job's last one; work
    NOTIFYs carry at most a job id."""
    events: list[str] = []
    work: list[str] = []
    listener = await asyncpg.connect(database_url)
    try:
        await listener.add_listener(EVENTS_CHANNEL, lambda *args: events.append(args[3]))
        await listener.add_listener(WORK_CHANNEL, lambda *args: work.append(args[3]))
        job = await services.batch_stub.CreateBatchJob(seed_job_request())
        done = await wait_terminal(services.batch_stub, job.id)
        async with asyncio.timeout(10):
            while not events or int(events[-1].rpartition(":")[2]) < done.last_sequence:
                await asyncio.sleep(0.05)
    finally:
        await listener.close()

    sequences = []
    for payload in events:
        job_id, _, sequence = payload.partition(":")
        assert job_id == job.id, payload
        sequences.append(int(sequence))
    assert sequences == sorted(sequences)
    assert sequences[-1] >= done.last_sequence
    assert work, "claimable work was announced"
    assert all(payload in ("", job.id) for payload in work), work
