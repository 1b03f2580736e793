"""The breaker, through the real SDK against the stand-in: a job whose attempts all fail for one provider-side reason
pauses itself with the provider's message after at most BATCH_BREAKER_FAILURES failed items; transient storms never
trip it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from convgen.db.database import Database
from convgen.v1 import batch_pb2, batch_pb2_grpc
from tests.batch.reference_job import extend_catalog, reference_request
from tests.batch.test_engine_guarantees import claude_services, replay
from tests.support.messages_api import FakeMessagesApi

BREAKER = 10
PAUSED = batch_pb2.BATCH_JOB_STATE_PAUSED
DONE = {batch_pb2.BATCH_JOB_STATE_COMPLETED, batch_pb2.BATCH_JOB_STATE_FAILED}


async def settled(
    stub: batch_pb2_grpc.BatchServiceStub, job_id: str, states: set[int], *, within: float = 120.0
) -> batch_pb2.BatchJob:
    """The job once it is in one of the states with nothing in flight."""
    async with asyncio.timeout(within):
        while True:
            job = await stub.GetBatchJob(batch_pb2.GetBatchJobRequest(job_id=job_id))
            if job.state in states and job.processing_items == 0:
                return job
            await asyncio.sleep(0.1)


@pytest.mark.parametrize(
    ("config", "reason", "provider_says", "then_resume"),
    [
        pytest.param(
            {"fault_mix": {"unauthorized": 1.0}},
            "MODEL_AUTHENTICATION_FAILED",
            "invalid x-api-key",
            False,
            id="bad-api-key",
        ),
        pytest.param(
            {"fault_mix": {"unauthorized": 1.0}},
            "MODEL_AUTHENTICATION_FAILED",
            "invalid x-api-key",
            True,
            marks=pytest.mark.slow,  # the resumed job runs its 1,000 items
            id="bad-api-key-then-fixed",
        ),
        pytest.param(
            {"fault_mix": {"credit_exhausted": 1.0}},
            "MODEL_CREDIT_EXHAUSTED",
            "credit balance is too low",
            False,
            id="no-credit",
        ),
        pytest.param(
            {"known_models": ["claude-opus-5-5"]},
            "MODEL_NOT_FOUND",
            "model: claude-sonnet-5-5",
            False,
            id="unknown-model",
        ),
    ],
)
@pytest.mark.timeout(180)
async def test_a_1000_item_job_pauses_after_at_most_n_failed_items_with_the_providers_message(
    database_url: str,
    tmp_path: Path,
    fake_api: FakeMessagesApi,
    db: Database,
    config: dict[str, object],
    reason: str,
    provider_says: str,
    then_resume: bool,
) -> None:
    ids = await extend_catalog(db)
    fake_api.update_config({"latency_seconds": 0.05, **config})
    async with claude_services(
        database_url, tmp_path, fake_api, batch_overrides={"batch_breaker_failures": BREAKER}
    ) as services:
        stub = services.batch_stub
        job = await stub.CreateBatchJob(reference_request(ids))
        paused = await settled(stub, job.id, {PAUSED})
        log = await stub.GetBatchJobLog(batch_pb2.GetBatchJobLogRequest(job_id=job.id))

        assert paused.state_reason.reason == reason
        assert provider_says in paused.state_reason.message
        assert f"the last {BREAKER} finished attempts all failed" in paused.state_reason.message
        assert 1 <= paused.failed_items <= BREAKER
        assert paused.completed_items == 0
        assert paused.queued_items == 1000 - paused.failed_items, "items in flight went back to the queue"
        assert f"paused by the breaker ({BREAKER} permanent failures in a row) [{reason}: " in log.text
        assert fake_api.stats()["total"] < BREAKER + 32 + 5, "the job stopped calling the model"

        if not then_resume:
            return
        # The account is fixed: resuming runs the rest; the items that failed are retried by request.
        fake_api.update_config({"fault_mix": {}, "known_models": None})
        await stub.ResumeBatchJob(batch_pb2.ResumeBatchJobRequest(job_id=job.id))
        done = await settled(stub, job.id, DONE, within=150)
        assert (done.completed_items, done.failed_items) == (1000 - paused.failed_items, paused.failed_items)


@pytest.mark.timeout(180)
async def test_a_storm_of_transient_529s_never_trips_the_breaker(
    database_url: str, tmp_path: Path, fake_api: FakeMessagesApi, db: Database
) -> None:
    ids = await extend_catalog(db)
    fake_api.update_config({"latency_seconds": 0.02, "fault_mix": {"overloaded": 0.3}, "seed": 11})
    request = reference_request(ids, max_attempts=10)
    del request.combination.training_topic_ids[5:]  # 125 items
    async with claude_services(
        database_url,
        tmp_path,
        fake_api,
        batch_overrides={
            "batch_breaker_failures": 2,
            "batch_retry_base_seconds": 0.01,
            "batch_retry_max_seconds": 0.05,
        },
    ) as services:
        stub = services.batch_stub
        job = await stub.CreateBatchJob(request)
        done = await settled(stub, job.id, DONE)
        states = [e.job.state for e in await replay(stub, job.id) if e.WhichOneof("event") == "job"]

    assert fake_api.stats()["faults"].get("overloaded", 0) > 25, "the storm happened"
    assert PAUSED not in states, "even a breaker of 2 does not trip on transient failures"
    assert (done.state, done.completed_items) == (batch_pb2.BATCH_JOB_STATE_COMPLETED, 125)
