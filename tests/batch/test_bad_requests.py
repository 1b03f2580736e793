"""Bad batch requests get the documented codes with messages naming what is wrong, and write nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from convgen.v1 import batch_pb2, common_pb2
from tests.batch.helpers import seed_combination, seed_job_request, wait_terminal
from tests.support.postgres import fetch
from tests.support.services import Services, running_services, test_settings

UNKNOWN_A = "11111111-2222-3333-4444-555555555555"
UNKNOWN_B = "66666666-7777-8888-9999-000000000000"


@pytest.fixture
async def services(database_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    settings = test_settings(database_url, tmp_path, batch_max_items=50)
    async with running_services(settings) as running:
        yield running


async def rejected(services: Services, request: batch_pb2.CreateBatchJobRequest) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await services.batch_stub.CreateBatchJob(request)
    return caught.value.code(), caught.value.details() or ""


async def assert_no_job_written(dsn: str) -> None:
    assert await fetch(dsn, "SELECT id FROM batch_jobs") == []
    assert await fetch(dsn, "SELECT id FROM batch_items") == []


async def test_unknown_ids_are_all_listed(services: Services, database_url: str) -> None:
    combination = seed_combination()
    combination.persona_ids.append(UNKNOWN_A)
    combination.training_topic_ids.extend([UNKNOWN_A, UNKNOWN_B])
    code, message = await rejected(services, batch_pb2.CreateBatchJobRequest(combination=combination))
    assert code == grpc.StatusCode.NOT_FOUND
    assert message == f"unknown ids: personas {UNKNOWN_A}; training_topics {UNKNOWN_A}, {UNKNOWN_B}"
    await assert_no_job_written(database_url)


async def test_empty_selection_is_invalid(services: Services, database_url: str) -> None:
    code, message = await rejected(services, batch_pb2.CreateBatchJobRequest(name="nothing"))
    assert (code, message) == (grpc.StatusCode.INVALID_ARGUMENT, "selection: set combination or parameter_list")
    empty = batch_pb2.Combination(persona_ids=[], emotional_arc_ids=[], tier=common_pb2.TIER_TEMPLATE)
    code, message = await rejected(services, batch_pb2.CreateBatchJobRequest(combination=empty))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "combination.persona_ids: is empty" in message
    assert "combination.training_topic_ids: is empty" in message
    code, message = await rejected(services, batch_pb2.CreateBatchJobRequest(parameter_list=batch_pb2.ParameterList()))
    assert (code, message) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "parameter_list.items: is empty: list at least one parameter set",
    )
    await assert_no_job_written(database_url)


async def test_too_many_items_is_invalid(services: Services, database_url: str) -> None:
    topics = [r["id"] for r in await fetch(database_url, "SELECT id FROM training_topics")]
    combination = seed_combination()
    del combination.training_topic_ids[:]
    combination.training_topic_ids.extend(str(t) for t in topics)  # 1 x 2 x 20 = 40 items: fine
    combination.persona_ids.append("5a4a6042-5bb7-4da6-b2e2-119b6f97be6f")  # 2 x 2 x 20 = 80 > 50
    code, message = await rejected(services, batch_pb2.CreateBatchJobRequest(combination=combination))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message == "combination: selects 80 items; the limit is 50 (BATCH_MAX_ITEMS)"
    await assert_no_job_written(database_url)


async def test_auto_selection_must_find_a_template_for_every_arc(services: Services, database_url: str) -> None:
    """The batch service checks auto-selection with the generation service's rule: an arc's template of another
    tier serves it; an arc with no active template is refused before anything is written."""
    (crisis,) = await fetch(database_url, "SELECT id FROM emotional_arcs WHERE arc_key = 'crisis_to_referral'")
    combination = seed_combination()
    del combination.emotional_arc_ids[:]
    combination.emotional_arc_ids.append(str(crisis["id"]))  # its only template is edge_case; the job asks template
    combination.template_id = ""
    accepted = await services.batch_stub.CreateBatchJob(
        batch_pb2.CreateBatchJobRequest(combination=combination, auto_start=False)
    )
    assert accepted.total_items == 4
    for table in ("batch_job_events", "batch_items", "batch_jobs"):
        await fetch(database_url, f"DELETE FROM {table}")
    await fetch(database_url, "UPDATE prompt_templates SET active = false WHERE arc_key = 'crisis_to_referral'")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await services.batch_stub.CreateBatchJob(batch_pb2.CreateBatchJobRequest(combination=combination))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (caught.value.details() or "").startswith("no active prompt template serves arc(s) crisis_to_referral:")
    await assert_no_job_written(database_url)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"concurrency": -1}, "concurrency: must be between 1 and 256 (got -1); 0 means the default 8"),
        ({"concurrency": 1000}, "concurrency: must be between 1 and 256 (got 1000); 0 means the default 8"),
        ({"max_attempts": 21}, "max_attempts: must be between 1 and 20 (got 21); 0 means the default 3"),
        ({"error_policy": 9}, "error_policy: 9 is not a known ErrorPolicy"),
        ({"name": "x" * 201}, "name: is 201 characters long; the limit is 200"),
        ({"name": "nul\x00byte"}, "name: contains a NUL character, which cannot be stored"),
        ({"created_by": "me"}, "created_by: 'me' is not a UUID (expected 36 characters like"),
    ],
)
async def test_invalid_fields_are_named(
    services: Services, database_url: str, fields: dict[str, object], expected: str
) -> None:
    code, message = await rejected(services, seed_job_request(**fields))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith(expected)
    await assert_no_job_written(database_url)


async def stored_state(dsn: str) -> list[list[object]]:
    """Every row of the batch tables, in a stable order."""
    return [
        [tuple(r) for r in await fetch(dsn, f"SELECT * FROM {table} ORDER BY {order}")]
        for table, order in (
            ("batch_jobs", "id"),
            ("batch_items", "batch_job_id, position"),
            ("batch_job_events", "batch_job_id, sequence"),
        )
    ]


async def test_wrong_state_calls_fail_the_precondition_with_the_state(services: Services, database_url: str) -> None:
    """Pause, resume, cancel and retry of a completed job are refused naming its state, and change no row."""
    job = await services.batch_stub.CreateBatchJob(seed_job_request())
    await wait_terminal(services.batch_stub, job.id)
    async with asyncio.timeout(10):
        while not (await services.batch_stub.GetBatchJob(batch_pb2.GetBatchJobRequest(job_id=job.id))).log_uploaded:
            await asyncio.sleep(0.05)
    before = await stored_state(database_url)
    calls = {
        "pause": services.batch_stub.PauseBatchJob(batch_pb2.PauseBatchJobRequest(job_id=job.id)),
        "resume": services.batch_stub.ResumeBatchJob(batch_pb2.ResumeBatchJobRequest(job_id=job.id)),
        "cancel": services.batch_stub.CancelBatchJob(batch_pb2.CancelBatchJobRequest(job_id=job.id)),
        "retry failed items of": services.batch_stub.RetryFailedItems(batch_pb2.RetryFailedItemsRequest(job_id=job.id)),
    }
    for action, call in calls.items():
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        details = caught.value.details() or ""
        if action == "retry failed items of":
            assert details == f"batch job {job.id} has no failed items to retry"
        else:
            assert details.startswith(f"cannot {action} batch job {job.id}: it is completed")
    assert await stored_state(database_url) == before, "a refused call changed the job, its items or its events"


async def test_unknown_and_malformed_job_ids(services: Services) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await services.batch_stub.GetBatchJob(batch_pb2.GetBatchJobRequest(job_id=UNKNOWN_A))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert missing.value.details() == f"batch job {UNKNOWN_A} does not exist"
    with pytest.raises(grpc.aio.AioRpcError) as malformed:
        await services.batch_stub.ListBatchItems(batch_pb2.ListBatchItemsRequest(job_id="../../etc/passwd"))
    assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (malformed.value.details() or "").startswith("job_id: '../../etc/passwd' is not a UUID")


async def test_a_repeated_request_id_returns_the_same_job(services: Services, database_url: str) -> None:
    first = await services.batch_stub.CreateBatchJob(seed_job_request(request_id="once", auto_start=False))
    second = await services.batch_stub.CreateBatchJob(seed_job_request(request_id="once", auto_start=False))
    assert first.id == second.id
    assert len(await fetch(database_url, "SELECT id FROM batch_jobs")) == 1
    assert len(await fetch(database_url, "SELECT id FROM batch_items")) == 8
