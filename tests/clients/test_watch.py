"""watch_batch_job resumes after dropped streams: every event exactly once, in sequence, up to the terminal one."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from batch_service.app import BatchApp
from clients import BatchJobWatch, ConvgenClient, ConvgenRpcError
from convgen.v1 import batch_pb2, batch_pb2_grpc
from tests.clients.helpers import event_sequences
from tests.support.demo_catalog import seed_combination_fields
from tests.support.services import Services, running_services, test_settings
from tests.support.tcp_proxy import TcpProxy


def kind(event: batch_pb2.BatchJobEvent) -> str:
    """The batch_job_events.kind an event was stored with."""
    if event.HasField("job"):
        return "job"
    return batch_pb2.ItemTransitionKind.Name(event.item.kind).removeprefix("ITEM_TRANSITION_KIND_").lower()


def completed_count(events: list[batch_pb2.BatchJobEvent]) -> int:
    return sum(1 for e in events if e.HasField("item") and e.item.kind == batch_pb2.ITEM_TRANSITION_KIND_COMPLETED)


async def assert_matches_database(
    database_url: str, job_id: str, after: int, events: list[batch_pb2.BatchJobEvent]
) -> None:
    """The events are exactly the stored events after the resume point: consecutive, once each, terminal last."""
    sequences = [e.sequence for e in events]
    assert sequences == list(range(after + 1, after + 1 + len(events))), sequences
    stored = [(s, k) for s, k in await event_sequences(database_url, job_id) if s > after]
    assert [(e.sequence, kind(e)) for e in events] == stored
    last = events[-1]
    assert last.HasField("job")
    assert last.job.state == batch_pb2.BATCH_JOB_STATE_COMPLETED
    assert last.counters.completed_items == 8


async def test_watch_survives_a_dropped_connection(services: Services, database_url: str) -> None:
    generation, batch = services.targets
    assert services.batch is not None
    async with TcpProxy("127.0.0.1", services.batch.port) as proxy:
        direct = await ConvgenClient.connect(generation, batch)
        proxied = await ConvgenClient.connect(generation, f"127.0.0.1:{proxy.port}")
        async with direct, proxied:
            job = await direct.create_batch_job(combination=seed_combination_fields(), auto_start=False)
            events: list[batch_pb2.BatchJobEvent] = []
            async with proxied.watch_batch_job(job.id) as watch:
                snapshot = await anext(watch)
                assert snapshot.snapshot.id == job.id
                assert snapshot.sequence == job.last_sequence
                for _ in range(2):
                    await direct.process_next(job.id)
                while completed_count(events) < 2:
                    events.append(await anext(watch))

                proxy.set_available(False)  # cuts the stream mid-way
                for _ in range(2):  # events the watcher misses while cut off
                    await direct.process_next(job.id)
                proxy.set_available(True)
                await direct.resume_batch_job(job.id)

                events.extend([event async for event in watch])
                assert watch.reconnects >= 1
        assert proxy.accepted >= 2

    await assert_matches_database(database_url, job.id, snapshot.sequence, events)


class _EndsFirstStreamEarly(batch_pb2_grpc.BatchServiceServicer):
    """A BatchService front that ends the first watch stream cleanly after a few messages."""

    def __init__(self, upstream: grpc.aio.Channel, cut_after: int) -> None:
        self._upstream = batch_pb2_grpc.BatchServiceStub(upstream)
        self._cut_after = cut_after
        self.requests: list[int | None] = []

    async def WatchBatchJob(  # type: ignore[override]
        self, request: batch_pb2.WatchBatchJobRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[batch_pb2.BatchJobEvent]:
        self.requests.append(request.after_sequence if request.HasField("after_sequence") else None)
        call = self._upstream.WatchBatchJob(request)
        sent = 0
        async for event in call:
            yield event
            sent += 1
            if len(self.requests) == 1 and sent == self._cut_after:
                call.cancel()
                return


@pytest.mark.parametrize("cut_after", [1, 4])
async def test_watch_resumes_when_the_server_ends_the_stream_early(
    services: Services, database_url: str, cut_after: int
) -> None:
    assert services.batch_channel is not None
    front = _EndsFirstStreamEarly(services.batch_channel, cut_after)
    server = grpc.aio.server()
    batch_pb2_grpc.add_BatchServiceServicer_to_server(front, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        direct = ConvgenClient.from_channels(services.generation_channel, services.batch_channel)
        job = await direct.create_batch_job(combination=seed_combination_fields(), concurrency=4)
        watch = ConvgenClient.from_channels(batch_channel=channel).watch_batch_job(job.id, after_sequence=0)
        events = [event async for event in watch]
    finally:
        await channel.close()
        await server.stop(None)

    snapshot, rest = events[0], events[1:]
    assert snapshot.HasField("snapshot")
    assert snapshot.sequence == 0
    assert not any(e.HasField("snapshot") for e in rest)  # the resumed stream's snapshot is skipped
    await assert_matches_database(database_url, job.id, 0, rest)
    # The first stream delivered the snapshot and cut_after - 1 events; the watch resumed from the last one.
    assert front.requests == [0, cut_after - 1]
    assert watch.reconnects == 1


async def test_watch_resumes_across_a_batch_service_restart(database_url: str, tmp_path: Path) -> None:
    settings = test_settings(database_url, tmp_path)
    async with running_services(settings, batch=False) as services:
        assert services.generation is not None
        batch_settings = settings.model_copy(update={"generation_target": f"127.0.0.1:{services.generation.port}"})
        first = await BatchApp.start(batch_settings, log_sweep_seconds=0.5)
        port = first.port
        generation = f"127.0.0.1:{services.generation.port}"
        events: list[batch_pb2.BatchJobEvent] = []
        async with await ConvgenClient.connect(generation, f"127.0.0.1:{port}") as client:
            job = await client.create_batch_job(combination=seed_combination_fields(), auto_start=False)
            watch = client.watch_batch_job(job.id)
            snapshot = await anext(watch)
            await client.process_next(job.id)
            while completed_count(events) < 1:
                events.append(await anext(watch))

            await first.stop(0.5)  # the replica goes away mid-stream
            second = await BatchApp.start(batch_settings, port=port, log_sweep_seconds=0.5)
            try:
                async with await ConvgenClient.connect(generation, f"127.0.0.1:{port}") as steering:
                    await steering.resume_batch_job(job.id)
                events.extend([event async for event in watch])
            finally:
                await second.stop(0.5)
            assert watch.reconnects >= 1

    await assert_matches_database(database_url, job.id, snapshot.sequence, events)


async def test_watch_of_a_finished_job_yields_its_snapshot_and_ends(client: ConvgenClient) -> None:
    job = await client.create_batch_job(combination=seed_combination_fields())
    replay = [event async for event in client.watch_batch_job(job.id, after_sequence=0)]
    assert replay[-1].job.state == batch_pb2.BATCH_JOB_STATE_COMPLETED

    now = [event async for event in client.watch_batch_job(job.id)]
    assert len(now) == 1
    assert now[0].HasField("snapshot")
    assert now[0].job_state == batch_pb2.BATCH_JOB_STATE_COMPLETED
    assert now[0].sequence == replay[-1].sequence


async def test_watch_raises_at_once_for_an_unknown_job(client: ConvgenClient) -> None:
    watch = client.watch_batch_job(str(uuid.uuid4()))
    with pytest.raises(ConvgenRpcError) as caught:
        await anext(watch)
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert watch.reconnects == 0


async def test_watch_gives_up_after_its_reconnect_budget(services: Services) -> None:
    assert services.batch is not None
    async with TcpProxy("127.0.0.1", services.batch.port) as proxy:
        proxy.set_available(False)
        async with await ConvgenClient.connect(batch_target=f"127.0.0.1:{proxy.port}") as client:
            watch: BatchJobWatch = client.watch_batch_job(
                str(uuid.uuid4()), max_reconnects=2, backoff_initial=0.01, backoff_max=0.02
            )
            with pytest.raises(ConvgenRpcError) as caught:
                await anext(watch)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert "gave up after 2 reconnects" in caught.value.message
    assert watch.reconnects == 2
