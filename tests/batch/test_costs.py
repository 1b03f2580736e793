"""Issue 12 on the reference job (1,000 items, concurrency 32), through the real SDK against a stand-in that caches
like the API, on real PostgreSQL: the cache hit ratio, validate_only estimates, budgets with BUDGET_EXHAUSTED and
UpdateBatchJob."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2

from convgen.db.database import Database
from convgen.v1 import batch_pb2, batch_pb2_grpc
from tests.batch.reference_job import extend_catalog, reference_request, warm_up_request
from tests.batch.test_engine_guarantees import claude_services
from tests.support.messages_api import FakeMessagesApi
from tests.support.postgres import fetch

ROW_COUNTS = """
    SELECT (SELECT count(*) FROM batch_jobs) AS jobs, (SELECT count(*) FROM batch_items) AS items,
           (SELECT count(*) FROM batch_job_events) AS events, (SELECT count(*) FROM conversations) AS conversations,
           (SELECT count(*) FROM generation_claims) AS claims
"""
JOB_COST = """
    SELECT sum(c.cost_usd) AS cost, sum(c.cache_read_input_tokens) AS reads,
           sum(c.cache_read_input_tokens + c.cache_creation_input_tokens + c.input_tokens) AS prompt
    FROM batch_items i JOIN conversations c ON c.id = i.conversation_id WHERE i.batch_job_id = $1
"""


async def wait_state(
    stub: batch_pb2_grpc.BatchServiceStub, job_id: str, states: set[int], *, within: float = 180.0
) -> batch_pb2.BatchJob:
    """Polls the job until it is in one of the states and has no item in flight."""
    async with asyncio.timeout(within):
        while True:
            job = await stub.GetBatchJob(batch_pb2.GetBatchJobRequest(job_id=job_id))
            if job.state in states and job.processing_items == 0:
                return job
            await asyncio.sleep(0.2)


DONE = {batch_pb2.BATCH_JOB_STATE_COMPLETED, batch_pb2.BATCH_JOB_STATE_FAILED}


async def events_until(stub: batch_pb2_grpc.BatchServiceStub, job_id: str, last: int) -> list[batch_pb2.BatchJobEvent]:
    """The watch stream of a job that has not ended: its snapshot, then its events up to sequence `last`."""
    call = stub.WatchBatchJob(batch_pb2.WatchBatchJobRequest(job_id=job_id, after_sequence=max(0, last - 3)))
    watched = []
    async with asyncio.timeout(30):
        async for event in call:
            watched.append(event)
            if event.WhichOneof("event") != "snapshot" and event.sequence >= last:
                break
    call.cancel()
    return watched


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_the_reference_job_hits_the_cache_and_costs_what_validate_only_estimated(
    database_url: str, tmp_path: Path, fake_api: FakeMessagesApi, db: Database
) -> None:
    ids = await extend_catalog(db)
    fake_api.update_config({"latency_seconds": 0.2, "latency_jitter": 0.3})
    async with claude_services(database_url, tmp_path, fake_api) as services:
        stub = services.batch_stub
        warm = await stub.CreateBatchJob(warm_up_request(ids))
        await wait_state(stub, warm.id, DONE)

        before = await fetch(database_url, ROW_COUNTS)
        preview = await stub.CreateBatchJob(reference_request(ids, validate_only=True, request_id="reference"))
        assert await fetch(database_url, ROW_COUNTS) == before, "validate_only writes nothing"
        assert preview.id == ""
        assert preview.state == batch_pb2.BATCH_JOB_STATE_UNSPECIFIED
        assert (preview.total_items, preview.concurrency) == (1000, 32)
        estimate = preview.estimate
        assert estimate.items == 1000
        assert {b.observed_conversations for b in estimate.output_basis} == {1}, "sizes of the earlier conversations"
        assert estimate.batch_cost_usd == pytest.approx(estimate.cost_usd / 2, abs=1e-5)

        job = await stub.CreateBatchJob(reference_request(ids, request_id="reference"))
        done = await wait_state(stub, job.id, DONE)

    assert (done.state, done.completed_items) == (batch_pb2.BATCH_JOB_STATE_COMPLETED, 1000)
    (actual,) = await fetch(database_url, JOB_COST, uuid.UUID(job.id))
    assert done.cache_hit_ratio == pytest.approx(float(actual["reads"] / actual["prompt"]))
    assert done.cache_hit_ratio >= 0.7
    assert Decimal(repr(done.cost_usd)) == actual["cost"]
    error = abs(estimate.cost_usd - done.cost_usd) / done.cost_usd
    assert error <= 0.25, f"estimate ${estimate.cost_usd:.4f} vs actual ${done.cost_usd:.4f}"


@pytest.mark.parametrize(
    "topics",
    [pytest.param(2, id="50-items"), pytest.param(40, marks=pytest.mark.slow, id="reference-job")],
)
@pytest.mark.timeout(300)
async def test_a_budget_pauses_the_job_before_its_spend_passes_it_and_raising_it_completes_the_job(
    database_url: str, tmp_path: Path, fake_api: FakeMessagesApi, db: Database, topics: int
) -> None:
    ids = await extend_catalog(db)
    fake_api.update_config({"latency_seconds": 0.1, "latency_jitter": 0.3})
    async with claude_services(database_url, tmp_path, fake_api) as services:
        stub = services.batch_stub
        warm = await stub.CreateBatchJob(warm_up_request(ids))
        await wait_state(stub, warm.id, DONE)
        request = reference_request(ids)
        del request.combination.training_topic_ids[topics:]
        items = 25 * topics
        request.validate_only = True
        estimate = (await stub.CreateBatchJob(request)).estimate
        budget = round(estimate.cost_usd / 2, 6)

        request.validate_only = False
        request.max_cost_usd = budget
        job = await stub.CreateBatchJob(request)
        paused = await wait_state(stub, job.id, {batch_pb2.BATCH_JOB_STATE_PAUSED})

        assert paused.state_reason.reason == "BUDGET_EXHAUSTED"
        assert f"${budget:.6f} budget" in paused.state_reason.message
        assert paused.max_cost_usd == budget
        assert paused.reserved_cost_usd == 0
        (spent,) = await fetch(database_url, JOB_COST, uuid.UUID(job.id))
        assert spent["cost"] <= Decimal(repr(budget)), "the stored costs never pass the budget"
        assert spent["cost"] >= Decimal(repr(budget)) * Decimal("0.8"), "the budget is used, not left idle"
        assert 0.3 * items < paused.completed_items < 0.7 * items
        log = await stub.GetBatchJobLog(batch_pb2.GetBatchJobLogRequest(job_id=job.id))
        assert "running → paused: the budget is exhausted [BUDGET_EXHAUSTED: spent $" in log.text
        watched = await events_until(stub, job.id, paused.last_sequence)
        assert watched[0].snapshot.state_reason.reason == "BUDGET_EXHAUSTED"
        change = watched[-1].job
        assert (change.state, change.state_reason.reason) == (batch_pb2.BATCH_JOB_STATE_PAUSED, "BUDGET_EXHAUSTED")

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ResumeBatchJob(batch_pb2.ResumeBatchJobRequest(job_id=job.id))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "raise max_cost_usd" in (refused.value.details() or "")

        raised = await stub.UpdateBatchJob(
            batch_pb2.UpdateBatchJobRequest(
                batch_job=batch_pb2.BatchJob(id=job.id, max_cost_usd=budget * 4),
                update_mask=field_mask_pb2.FieldMask(paths=["max_cost_usd"]),
            )
        )
        assert raised.max_cost_usd == budget * 4
        assert raised.state == batch_pb2.BATCH_JOB_STATE_PAUSED, "raising the budget does not resume by itself"
        resumed = await stub.ResumeBatchJob(batch_pb2.ResumeBatchJobRequest(job_id=job.id))
        assert not resumed.HasField("state_reason")
        done = await wait_state(stub, job.id, DONE)
        log = await stub.GetBatchJobLog(batch_pb2.GetBatchJobLogRequest(job_id=job.id))

    assert (done.state, done.completed_items) == (batch_pb2.BATCH_JOB_STATE_COMPLETED, items)
    (spent,) = await fetch(database_url, JOB_COST, uuid.UUID(job.id))
    assert spent["cost"] <= Decimal(repr(budget * 4))
    assert "job updated: max_cost_usd $" in log.text
