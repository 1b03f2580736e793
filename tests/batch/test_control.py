"""Pause, resume, cancel, retry of failed items and ProcessNext, with exact counters throughout."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from convgen.v1 import batch_pb2
from tests.support.demo_catalog import seed_job_request
from tests.support.jobs import wait_terminal
from tests.support.messages_api import FakeMessagesApi, Fault
from tests.support.postgres import fetch
from tests.support.services import Services, claude_settings, running_services, test_settings


@pytest.fixture
async def services(database_url: str, tmp_path: Path, fake_api: FakeMessagesApi) -> AsyncIterator[Services]:
    fake_api.update_config({"latency_seconds": 0.3})
    settings = test_settings(database_url, tmp_path, **claude_settings(fake_api.base_url), model_max_attempts=1)
    async with running_services(settings) as running:
        yield running


async def get_job(services: Services, job_id: str) -> batch_pb2.BatchJob:
    return await services.batch_stub.GetBatchJob(batch_pb2.GetBatchJobRequest(job_id=job_id))


async def wait_until(services: Services, job_id: str, predicate: object, within: float = 30) -> batch_pb2.BatchJob:
    async with asyncio.timeout(within):
        while True:
            job = await get_job(services, job_id)
            if predicate(job):  # type: ignore[operator]
                return job
            await asyncio.sleep(0.05)


def assert_counts_add_up(job: batch_pb2.BatchJob) -> None:
    assert job.total_items == (
        job.queued_items + job.processing_items + job.completed_items + job.failed_items + job.cancelled_items
    )


async def test_pause_stops_new_claims_and_resume_continues(services: Services, database_url: str) -> None:
    job = await services.batch_stub.CreateBatchJob(seed_job_request(concurrency=2))
    await wait_until(services, job.id, lambda j: j.completed_items >= 2)

    paused = await services.batch_stub.PauseBatchJob(batch_pb2.PauseBatchJobRequest(job_id=job.id))
    assert paused.state == batch_pb2.BATCH_JOB_STATE_PAUSED
    settled = await wait_until(services, job.id, lambda j: j.processing_items == 0)
    pause_sequence = (
        await fetch(
            database_url,
            "SELECT sequence FROM batch_job_events WHERE batch_job_id = $1 AND kind = 'job' AND job_state = 'paused'",
            uuid.UUID(job.id),
        )
    )[0]["sequence"]
    await asyncio.sleep(1.0)  # longer than a claim round: nothing new may start while paused
    claims_after_pause = await fetch(
        database_url,
        "SELECT count(*) AS n FROM batch_job_events WHERE batch_job_id = $1 AND kind = 'processing' AND sequence > $2",
        uuid.UUID(job.id),
        pause_sequence,
    )
    assert claims_after_pause[0]["n"] == 0
    still = await get_job(services, job.id)
    assert still.completed_items == settled.completed_items < 8
    assert still.queued_items > 0

    with pytest.raises(grpc.aio.AioRpcError) as wrong:
        await services.batch_stub.PauseBatchJob(batch_pb2.PauseBatchJobRequest(job_id=job.id))
    assert wrong.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "it is paused" in (wrong.value.details() or "")

    resumed = await services.batch_stub.ResumeBatchJob(batch_pb2.ResumeBatchJobRequest(job_id=job.id))
    assert resumed.state == batch_pb2.BATCH_JOB_STATE_RUNNING
    done = await wait_terminal(services.batch_stub, job.id)
    assert (done.state, done.completed_items) == (batch_pb2.BATCH_JOB_STATE_COMPLETED, 8)


async def test_cancel_cancels_queued_items_lets_in_flight_finish_and_keeps_counts_exact(services: Services) -> None:
    job = await services.batch_stub.CreateBatchJob(seed_job_request(concurrency=2))
    await wait_until(services, job.id, lambda j: j.processing_items == 2)

    cancelled = await services.batch_stub.CancelBatchJob(batch_pb2.CancelBatchJobRequest(job_id=job.id))
    assert cancelled.state in (batch_pb2.BATCH_JOB_STATE_STOPPING, batch_pb2.BATCH_JOB_STATE_CANCELLED)
    assert cancelled.queued_items == 0
    assert_counts_add_up(cancelled)

    done = await wait_terminal(services.batch_stub, job.id)
    assert done.state == batch_pb2.BATCH_JOB_STATE_CANCELLED
    assert done.processing_items == 0
    assert done.failed_items == 0
    assert done.completed_items + done.cancelled_items == 8
    assert done.cancelled_items >= 1
    assert_counts_add_up(done)
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await services.batch_stub.CancelBatchJob(batch_pb2.CancelBatchJobRequest(job_id=job.id))
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "it is cancelled" in (again.value.details() or "")


async def test_retry_failed_items_reruns_only_them_and_reuploads_the_log(
    services: Services, fake_api: FakeMessagesApi, database_url: str
) -> None:
    fake_api.update_config({"latency_seconds": 0.0})
    fake_api.inject(Fault.BAD_REQUEST, times=2, match="Essential Estate Planning")
    job = await services.batch_stub.CreateBatchJob(seed_job_request(concurrency=4))
    first = await wait_terminal(services.batch_stub, job.id)
    assert (first.completed_items, first.failed_items) == (6, 2)
    first_uploaded = await wait_until(services, job.id, lambda j: j.log_uploaded)
    calls_before = fake_api.stats()["total"]

    response = await services.batch_stub.RetryFailedItems(batch_pb2.RetryFailedItemsRequest(job_id=job.id))
    assert response.requeued_items == 2
    assert response.job.state == batch_pb2.BATCH_JOB_STATE_RUNNING
    assert not response.job.log_uploaded
    second = await wait_terminal(services.batch_stub, job.id)

    assert (second.state, second.completed_items, second.failed_items) == (batch_pb2.BATCH_JOB_STATE_COMPLETED, 8, 0)
    assert fake_api.stats()["total"] - calls_before == 2, "only the two failed items ran again"
    uploaded = await wait_until(services, job.id, lambda j: j.log_uploaded)
    assert uploaded.last_sequence > first_uploaded.last_sequence
    log = await services.batch_stub.GetBatchJobLog(batch_pb2.GetBatchJobLogRequest(job_id=job.id))
    assert log.text.count("summary:") == 2
    assert "summary: 8 items: 8 completed, 0 failed, 0 cancelled" in log.text.splitlines()[-1]
    blob_path = Path(log.blob.uri.removeprefix("file://"))
    assert blob_path.read_text() == log.text
    # A replay from the start runs through the first ending to the job's latest one.
    replay = [
        e
        async for e in services.batch_stub.WatchBatchJob(
            batch_pb2.WatchBatchJobRequest(job_id=job.id, after_sequence=0)
        )
    ]
    endings = [
        e for e in replay if e.WhichOneof("event") == "job" and e.job_state == batch_pb2.BATCH_JOB_STATE_COMPLETED
    ]
    assert len(endings) == 2
    assert replay[-1] == endings[-1]


@pytest.mark.slow
async def test_process_next_reports_the_terminal_state_on_the_last_item(services: Services) -> None:
    job = await services.batch_stub.CreateBatchJob(seed_job_request(auto_start=False))
    assert job.state == batch_pb2.BATCH_JOB_STATE_QUEUED
    responses = []
    for _ in range(8):
        responses.append(await services.batch_stub.ProcessNext(batch_pb2.ProcessNextRequest(job_id=job.id)))

    assert [r.remaining_items for r in responses] == [7, 6, 5, 4, 3, 2, 1, 0]
    assert all(r.item.state == batch_pb2.BATCH_ITEM_STATE_COMPLETED for r in responses)
    assert not any(r.job_finished for r in responses[:-1])
    last = responses[-1]
    assert last.job_finished
    assert last.job.state == batch_pb2.BATCH_JOB_STATE_COMPLETED
    assert last.job.completed_items == 8

    with pytest.raises(grpc.aio.AioRpcError) as after_end:
        await services.batch_stub.ProcessNext(batch_pb2.ProcessNextRequest(job_id=job.id))
    assert after_end.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "it is completed" in (after_end.value.details() or "")
