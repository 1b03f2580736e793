"""Bad input to DatasetService: specific codes with clear messages, and nothing written.

Explicit cases for each rule of the issue (unknown job ids all listed, running jobs, eval fraction, threshold, an
empty selection) and a property test over generated requests to every RPC (judged like tests/bad_input: OK or a
specific status naming the bad field or value, never UNKNOWN or INTERNAL).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convgen.v1 import batch_pb2, common_pb2, dataset_pb2, dataset_pb2_grpc
from tests.bad_input import strategies as s
from tests.datasets.helpers import completed_seed_job, dataset_stub, export_request, run_export, wait_export
from tests.support.postgres import PostgresServer, fetch
from tests.support.services import Services, running_services, test_settings

IA = grpc.StatusCode.INVALID_ARGUMENT
NF = grpc.StatusCode.NOT_FOUND
FP = grpc.StatusCode.FAILED_PRECONDITION
OOR = grpc.StatusCode.OUT_OF_RANGE
RE = grpc.StatusCode.RESOURCE_EXHAUSTED


@dataclass
class World:
    """Services on their own database with a completed job, a queued job and a succeeded export."""

    services: Services
    dsn: str
    data_dir: Path
    completed_job: str
    queued_job: str
    export_id: str
    report_only_export: str

    @property
    def stub(self) -> dataset_pb2_grpc.DatasetServiceStub:
        """DatasetService stub."""
        return dataset_stub(self.services)


@pytest.fixture(scope="module")
async def world(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    """The world, for the whole module."""
    dsn = await postgres.create_database()
    data_dir = tmp_path_factory.mktemp("dataset-bad-input")
    try:
        async with running_services(test_settings(dsn, data_dir)) as services:
            completed = await completed_seed_job(services)
            queued = await services.batch_stub.CreateBatchJob(
                batch_pb2.CreateBatchJobRequest(
                    name="queued",
                    auto_start=False,
                    combination=batch_pb2.Combination(
                        persona_ids=[s.SEED_PERSONA],
                        emotional_arc_ids=[s.SEED_ARC],
                        training_topic_ids=[s.SEED_TOPIC],
                        tier=common_pb2.TIER_TEMPLATE,
                    ),
                )
            )
            stub = dataset_stub(services)
            export = await run_export(stub, export_request([completed], "chat"))
            report_only = await run_export(stub, export_request([completed], "chat", report_only=True))
            yield World(services, dsn, data_dir, completed, queued.id, export.id, report_only.id)
    finally:
        await postgres.drop_database(dsn)


async def _rows(world: World) -> int:
    return len(await fetch(world.dsn, "SELECT id FROM dataset_exports"))


async def _call(world: World, method: str, request: Message) -> s.Answer:
    try:
        if method == "ReadExportFile":
            call = world.stub.ReadExportFile(request, timeout=30)
            data = b"".join([chunk.data async for chunk in call])
            return s.Answer(grpc.StatusCode.OK, response=data)
        return s.Answer(grpc.StatusCode.OK, response=await getattr(world.stub, method)(request, timeout=30))
    except grpc.aio.AioRpcError as error:
        return s.Answer.of_error(error)


async def _refused(world: World, request: dataset_pb2.CreateExportRequest, code: grpc.StatusCode) -> str:
    """Sends a CreateExport that must fail with code, writing no export; returns the message."""
    before = await _rows(world)
    answer = await _call(world, "CreateExport", request)
    assert answer.code == code, (answer.code, answer.message)
    assert not s.problems_with(answer, request, frozenset({code})), s.problems_with(answer, request, frozenset({code}))
    assert await _rows(world) == before, "a refused request wrote an export"
    return answer.message


async def test_unknown_job_ids_are_all_listed(world: World) -> None:
    unknown = [str(uuid.uuid4()) for _ in range(3)]
    message = await _refused(world, export_request([world.completed_job, *unknown]), NF)
    assert all(u in message for u in unknown)
    assert world.completed_job not in message


async def test_running_jobs_need_include_running(world: World) -> None:
    message = await _refused(world, export_request([world.completed_job, world.queued_job]), FP)
    assert world.queued_job in message
    assert "include_running" in message
    # With include_running the queued job is accepted; its items have no conversation yet.
    selection = dataset_pb2.ExportSelection(job_ids=[world.completed_job, world.queued_job], include_running=True)
    done = await run_export(world.stub, export_request([], selection=selection))
    assert done.counts.selected == 8
    coverage = {c.job_id: c for c in done.report.coverage}
    assert coverage[world.queued_job].items_pending == 1
    assert coverage[world.queued_job].holes_total == 1


@pytest.mark.parametrize("fraction", [-0.01, 0.51, 1.0, float("nan"), float("inf")])
async def test_eval_fraction_outside_0_to_half(world: World, fraction: float) -> None:
    request = export_request([world.completed_job], split=dataset_pb2.ExportSplit(eval_fraction=fraction))
    message = await _refused(world, request, IA)
    assert message.startswith("split.eval_fraction: must be within [0, 0.5]")


@pytest.mark.parametrize("threshold", [0.0, -0.5, 1.0001, float("nan")])
async def test_threshold_outside_0_exclusive_to_1(world: World, threshold: float) -> None:
    gate = dataset_pb2.QualityGate(near_duplicate_threshold=threshold)
    message = await _refused(world, export_request([world.completed_job], quality_gate=gate), IA)
    assert message.startswith("quality_gate.near_duplicate_threshold: must be within (0, 1]")


async def test_a_selection_that_matches_nothing(world: World) -> None:
    after = timestamp_pb2.Timestamp()
    after.FromDatetime(datetime(2999, 1, 1, tzinfo=UTC))
    selection = dataset_pb2.ExportSelection(job_ids=[world.completed_job], created_after=after)
    message = await _refused(world, export_request([], selection=selection), FP)
    assert "matches no conversation" in message
    assert "filters" in message
    cancelled = await world.services.batch_stub.CancelBatchJob(batch_pb2.CancelBatchJobRequest(job_id=world.queued_job))
    assert cancelled.state == batch_pb2.BATCH_JOB_STATE_CANCELLED
    message = await _refused(world, export_request([world.queued_job]), FP)
    assert "the jobs have no completed item" in message


async def test_field_errors_are_reported_together(world: World) -> None:
    request = dataset_pb2.CreateExportRequest(
        selection=dataset_pb2.ExportSelection(job_ids=["nope", world.completed_job, world.completed_job]),
        format=dataset_pb2.EXPORT_FORMAT_UNSPECIFIED,
        split=dataset_pb2.ExportSplit(eval_fraction=0.9, group_by=99),
        system_prompt="a\x00b",
    )
    before = await _rows(world)
    answer = await _call(world, "CreateExport", request)
    assert answer.code == IA
    fields = {v.field for v in answer.violations()}
    assert fields == {
        "selection.job_ids[0]",
        "selection.job_ids",
        "format",
        "split.eval_fraction",
        "split.group_by",
        "system_prompt",
    }
    assert await _rows(world) == before


async def test_request_id_returns_the_same_export(world: World) -> None:
    request = export_request([world.completed_job], "sharegpt", request_id="same-export")
    first = await world.stub.CreateExport(request)
    second = await world.stub.CreateExport(request)
    assert first.id == second.id
    await wait_export(world.stub, first.id)


async def test_read_export_file_rules(world: World) -> None:
    for request, code in [
        (dataset_pb2.ReadExportFileRequest(export_id=world.export_id, name="../etc/passwd"), IA),
        (dataset_pb2.ReadExportFileRequest(export_id=world.export_id, name="train.jsonl", offset=-1), IA),
        (dataset_pb2.ReadExportFileRequest(export_id=world.export_id, name="train.jsonl", offset=10**12), OOR),
        (dataset_pb2.ReadExportFileRequest(export_id=str(uuid.uuid4()), name="train.jsonl"), NF),
        (dataset_pb2.ReadExportFileRequest(export_id=world.report_only_export, name="train.jsonl"), NF),
    ]:
        answer = await _call(world, "ReadExportFile", request)
        assert answer.code == code, (request, answer.code, answer.message)
        assert not s.problems_with(answer, request, frozenset({code}))


def _export_ids(world_ids: list[str]) -> st.SearchStrategy[str]:
    return s.uuid_fields(world_ids)


def create_requests(jobs: list[str]) -> st.SearchStrategy[dataset_pb2.CreateExportRequest]:
    """CreateExport requests: valid and broken selections, formats, splits and gates."""
    selection = st.builds(
        dataset_pb2.ExportSelection,
        job_ids=st.lists(s.uuid_fields(jobs), max_size=4),
        tiers=st.lists(s.enum_numbers(s.TIERS), max_size=3),
        persona_ids=st.lists(s.uuid_fields([s.SEED_PERSONA]), max_size=2),
        include_running=st.booleans(),
    )
    return st.builds(
        dataset_pb2.CreateExportRequest,
        request_id=st.one_of(st.just(""), s.request_ids()),
        selection=selection,
        format=s.enum_numbers(dataset_pb2.ExportFormat.values()),
        system_prompt=st.one_of(st.just(""), st.text(max_size=30), st.sampled_from(s.NASTY_STRINGS)),
        split=st.builds(
            dataset_pb2.ExportSplit,
            eval_fraction=st.one_of(st.floats(-1, 2), st.sampled_from([0.0, 0.1, 0.5])),
            group_by=s.enum_numbers(dataset_pb2.SplitGroupBy.values()),
            seed=st.integers(-(2**63), 2**63 - 1),
        ),
        quality_gate=st.builds(
            dataset_pb2.QualityGate,
            drop_near_duplicates=st.booleans(),
            near_duplicate_threshold=st.one_of(st.floats(allow_nan=True), st.sampled_from([0.8, 1.0, 0.0])),
        ),
        report_only=st.booleans(),
    )


RPC_CODES: dict[str, frozenset[grpc.StatusCode]] = {
    "CreateExport": frozenset({IA, NF, FP, RE}),
    "GetExport": frozenset({IA, NF, RE}),
    "ListExports": frozenset({IA, RE}),
    "ReadExportFile": frozenset({IA, NF, FP, OOR, RE}),
}


@settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_every_dataset_rpc_answers_ok_or_a_specific_status(world: World, data: st.DataObject) -> None:
    jobs = [world.completed_job, world.queued_job]
    exports = [world.export_id, world.report_only_export]
    method = data.draw(st.sampled_from(sorted(RPC_CODES)))
    request: Any
    if method == "CreateExport":
        request = data.draw(create_requests(jobs))
    elif method == "GetExport":
        request = dataset_pb2.GetExportRequest(
            export_id=data.draw(_export_ids(exports)),
            view=data.draw(s.enum_numbers(dataset_pb2.ExportView.values())),
        )
    elif method == "ListExports":
        request = dataset_pb2.ListExportsRequest(
            page_size=data.draw(s.page_sizes()),
            page_token=data.draw(st.one_of(st.just(""), s.garbage_text())),
            view=data.draw(s.enum_numbers(dataset_pb2.ExportView.values())),
        )
    else:
        request = dataset_pb2.ReadExportFileRequest(
            export_id=data.draw(_export_ids(exports)),
            name=data.draw(st.one_of(st.sampled_from(["train.jsonl", "eval.jsonl", "report.md"]), s.garbage_text())),
            offset=data.draw(st.one_of(st.integers(-5, 100), st.integers(-(2**63), 2**63 - 1))),
        )
    answer = await _call(world, method, request)
    problems = s.problems_with(answer, request, RPC_CODES[method])
    assert not problems, (method, str(request)[:400], answer.code, answer.message[:300], problems)
    if method == "CreateExport" and answer.code == grpc.StatusCode.OK:
        await asyncio.wait_for(wait_export(world.stub, answer.response.id), 60)
