"""Model faults seen by batch items: transient ones are retried to success, permanent ones explain themselves."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from convgen.v1 import batch_pb2
from tests.support.demo_catalog import seed_job_request
from tests.support.jobs import wait_terminal
from tests.support.messages_api import FakeMessagesApi, Fault
from tests.support.postgres import fetch
from tests.support.services import Services, claude_settings, running_services, test_settings

ESTATE_PLANNING = "Essential Estate Planning"


@pytest.fixture
async def services(database_url: str, tmp_path: Path, fake_api: FakeMessagesApi) -> AsyncIterator[Services]:
    # One model try per call, so the generation service reports the fault and the batch engine retries it.
    settings = test_settings(database_url, tmp_path, **claude_settings(fake_api.base_url), model_max_attempts=1)
    async with running_services(settings) as running:
        yield running


async def item_events(dsn: str, job_id: str) -> list[dict[str, object]]:
    rows = await fetch(
        dsn,
        "SELECT kind, error_code, error_message FROM batch_job_events WHERE batch_job_id = $1 AND kind <> 'job' "
        "ORDER BY sequence",
        uuid.UUID(job_id),
    )
    return [dict(r) for r in rows]


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault.OVERLOADED, "RESOURCE_EXHAUSTED (step model_call): anthropic 529 overloaded_error: Overloaded"),
        (Fault.BAD_GATEWAY_HTML, "UNAVAILABLE (step model_call): anthropic 502 non_json_body: non-JSON text/html"),
    ],
)
async def test_a_transient_fault_on_one_item_is_retried_and_the_job_completes(
    services: Services, fake_api: FakeMessagesApi, database_url: str, fault: Fault, expected: str
) -> None:
    fake_api.inject(fault, times=1, match=ESTATE_PLANNING)
    job = await services.batch_stub.CreateBatchJob(seed_job_request(concurrency=4))

    done = await wait_terminal(services.batch_stub, job.id)

    assert done.state == batch_pb2.BATCH_JOB_STATE_COMPLETED
    assert (done.completed_items, done.failed_items) == (8, 0)
    retries = [e for e in await item_events(database_url, job.id) if e["kind"] == "retrying"]
    assert len(retries) == 1
    assert expected in str(retries[0]["error_message"])
    assert fake_api.stats()["faults"][fault.value] == 1


async def test_a_permanent_fault_fails_the_item_with_step_code_and_provider_message(
    services: Services, fake_api: FakeMessagesApi, database_url: str
) -> None:
    fake_api.inject(Fault.BAD_REQUEST, times=100, match=ESTATE_PLANNING)
    job = await services.batch_stub.CreateBatchJob(seed_job_request(concurrency=4))

    done = await wait_terminal(services.batch_stub, job.id)

    assert done.state == batch_pb2.BATCH_JOB_STATE_COMPLETED
    assert (done.completed_items, done.failed_items) == (6, 2)  # two items use the estate planning topic
    failed = await services.batch_stub.ListBatchItems(
        batch_pb2.ListBatchItemsRequest(job_id=job.id, state=batch_pb2.BATCH_ITEM_STATE_FAILED)
    )
    assert len(failed.items) == 2
    for item in failed.items:
        assert item.error_code == "INVALID_ARGUMENT"
        assert item.error_message == (
            "generation failed: INVALID_ARGUMENT (step model_call): anthropic 400 invalid_request_error: "
            "messages: text content blocks must be non-empty"
        )
        assert item.attempts == 1, "permanent errors are not retried"
    log = await services.batch_stub.GetBatchJobLog(batch_pb2.GetBatchJobLogRequest(job_id=job.id))
    assert "Unknown error" not in log.text
    assert log.text.count("anthropic 400 invalid_request_error") == 2
    assert "summary: 8 items: 6 completed, 2 failed, 0 cancelled" in log.text


async def test_persistent_overload_fails_after_max_attempts_with_a_message_that_says_so(
    services: Services, fake_api: FakeMessagesApi
) -> None:
    fake_api.inject(Fault.OVERLOADED, times=100, match=ESTATE_PLANNING)
    job = await services.batch_stub.CreateBatchJob(seed_job_request(concurrency=4, max_attempts=3))

    done = await wait_terminal(services.batch_stub, job.id)

    assert (done.completed_items, done.failed_items) == (6, 2)
    failed = await services.batch_stub.ListBatchItems(
        batch_pb2.ListBatchItemsRequest(job_id=job.id, state=batch_pb2.BATCH_ITEM_STATE_FAILED)
    )
    for item in failed.items:
        assert item.attempts == 3
        assert item.error_message.startswith(
            "generation failed after 3 attempts: RESOURCE_EXHAUSTED (step model_call): "
            "anthropic 529 overloaded_error: Overloaded"
        )
