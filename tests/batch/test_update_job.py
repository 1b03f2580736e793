"""UpdateBatchJob (AIP-134) and CreateBatchJob's budget fields on real services (offline model): what a field mask
changes, what it refuses, and that a refused update writes nothing."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2

from convgen.v1 import batch_pb2
from tests.support.demo_catalog import seed_job_request
from tests.support.postgres import fetch
from tests.support.services import Services, running_services, test_settings


@pytest.fixture
async def services(database_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    async with running_services(test_settings(database_url, tmp_path)) as running:
        yield running


def update(job: batch_pb2.BatchJob, *paths: str) -> batch_pb2.UpdateBatchJobRequest:
    return batch_pb2.UpdateBatchJobRequest(batch_job=job, update_mask=field_mask_pb2.FieldMask(paths=list(paths)))


async def test_a_mask_changes_exactly_its_fields(services: Services) -> None:
    stub = services.batch_stub
    job = await stub.CreateBatchJob(seed_job_request(auto_start=False, max_cost_usd=1.25))
    assert (job.max_cost_usd, job.HasField("max_cost_usd")) == (1.25, True)

    renamed = await stub.UpdateBatchJob(update(batch_pb2.BatchJob(id=job.id, name="renamed", concurrency=99), "name"))
    assert (renamed.name, renamed.concurrency, renamed.max_cost_usd) == ("renamed", job.concurrency, 1.25)
    both = await stub.UpdateBatchJob(
        update(batch_pb2.BatchJob(id=job.id, concurrency=3, max_cost_usd=2.5), "concurrency", "max_cost_usd")
    )
    assert (both.name, both.concurrency, both.max_cost_usd) == ("renamed", 3, 2.5)
    cleared = await stub.UpdateBatchJob(update(batch_pb2.BatchJob(id=job.id), "max_cost_usd"))
    assert not cleared.HasField("max_cost_usd"), "the path with the field unset removes the budget"


@pytest.mark.parametrize(
    ("job", "paths", "field"),
    [
        (batch_pb2.BatchJob(name="x"), (), "update_mask.paths"),
        (batch_pb2.BatchJob(state=batch_pb2.BATCH_JOB_STATE_COMPLETED), ("state",), "update_mask.paths"),
        (batch_pb2.BatchJob(concurrency=0), ("concurrency",), "batch_job.concurrency"),
        (batch_pb2.BatchJob(concurrency=257), ("concurrency",), "batch_job.concurrency"),
        (batch_pb2.BatchJob(name=""), ("name",), "batch_job.name"),
        (batch_pb2.BatchJob(max_cost_usd=-1), ("max_cost_usd",), "batch_job.max_cost_usd"),
        (batch_pb2.BatchJob(max_cost_usd=math.nan), ("max_cost_usd",), "batch_job.max_cost_usd"),
        (batch_pb2.BatchJob(max_cost_usd=1e12), ("max_cost_usd",), "batch_job.max_cost_usd"),
    ],
    ids=["no-paths", "unknown-path", "zero-concurrency", "big-concurrency", "empty-name", "negative", "nan", "huge"],
)
async def test_bad_updates_name_the_field_and_write_nothing(
    services: Services, database_url: str, job: batch_pb2.BatchJob, paths: tuple[str, ...], field: str
) -> None:
    stub = services.batch_stub
    created = await stub.CreateBatchJob(seed_job_request(auto_start=False, max_cost_usd=1))
    job.id = created.id
    before = await fetch(database_url, "SELECT * FROM batch_jobs")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UpdateBatchJob(update(job, *paths))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith(f"{field}: ")
    assert await fetch(database_url, "SELECT * FROM batch_jobs") == before


async def test_updates_that_do_not_apply_are_refused_with_the_reason(services: Services) -> None:
    stub = services.batch_stub
    unknown = batch_pb2.BatchJob(id="00000000-0000-4000-8000-000000000001", name="x")
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.UpdateBatchJob(update(unknown, "name"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND

    without_budget = await stub.CreateBatchJob(seed_job_request(auto_start=False))
    with pytest.raises(grpc.aio.AioRpcError) as no_reservations:
        await stub.UpdateBatchJob(update(batch_pb2.BatchJob(id=without_budget.id, max_cost_usd=5), "max_cost_usd"))
    assert no_reservations.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "created without max_cost_usd" in (no_reservations.value.details() or "")

    cancelled = await stub.CancelBatchJob(batch_pb2.CancelBatchJobRequest(job_id=without_budget.id))
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await stub.UpdateBatchJob(update(batch_pb2.BatchJob(id=cancelled.id, name="late"), "name"))
    assert ended.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "it is cancelled" in (ended.value.details() or "")


async def test_a_budget_is_zero_or_more_and_free_items_fit_a_zero_budget(services: Services) -> None:
    stub = services.batch_stub
    # The offline model costs nothing (its items reserve $0), so a budget of exactly 0 still lets them run.
    free = await stub.CreateBatchJob(seed_job_request(max_cost_usd=0))
    assert free.max_cost_usd == 0
    async with asyncio.timeout(30):
        while (job := await stub.GetBatchJob(batch_pb2.GetBatchJobRequest(job_id=free.id))).completed_items < 8:
            await asyncio.sleep(0.1)
    assert job.state == batch_pb2.BATCH_JOB_STATE_COMPLETED
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.CreateBatchJob(seed_job_request(max_cost_usd=-0.5))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (bad.value.details() or "").startswith("max_cost_usd: must be between 0 and")
