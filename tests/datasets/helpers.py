"""Helpers for dataset export tests: services on either blob store, jobs, waiting for exports, reading files."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc

from convgen.catalog.loader import packaged_catalog_path
from convgen.v1 import batch_pb2, common_pb2, dataset_pb2, dataset_pb2_grpc
from tests.support.demo_catalog import seed_job_request
from tests.support.jobs import wait_terminal
from tests.support.services import Services

TERMINAL = {dataset_pb2.EXPORT_STATE_SUCCEEDED, dataset_pb2.EXPORT_STATE_FAILED}
FORMATS = {
    "chat": dataset_pb2.EXPORT_FORMAT_CHAT_MESSAGES,
    "sharegpt": dataset_pb2.EXPORT_FORMAT_SHAREGPT,
    "bedrock": dataset_pb2.EXPORT_FORMAT_BEDROCK_CLAUDE,
    "convgen": dataset_pb2.EXPORT_FORMAT_CONVGEN,
}


def dataset_stub(services: Services) -> dataset_pb2_grpc.DatasetServiceStub:
    """A DatasetService stub on the batch service's channel."""
    assert services.batch_channel is not None
    return dataset_pb2_grpc.DatasetServiceStub(services.batch_channel)


async def completed_seed_job(services: Services, *, name: str = "seed failing job") -> str:
    """Runs the seed's 8-item job to its end and returns its id."""
    job = await services.batch_stub.CreateBatchJob(seed_job_request(concurrency=8, name=name))
    done = await wait_terminal(services.batch_stub, job.id)
    assert done.state == batch_pb2.BATCH_JOB_STATE_COMPLETED, done
    return job.id


async def completed_job(
    services: Services, combination: batch_pb2.Combination, *, concurrency: int = 16, within: float = 120.0
) -> batch_pb2.BatchJob:
    """Runs a job of a combination to its end."""
    job = await services.batch_stub.CreateBatchJob(
        batch_pb2.CreateBatchJobRequest(name="export test", combination=combination, concurrency=concurrency)
    )
    return await wait_terminal(services.batch_stub, job.id, within=within)


def export_request(job_ids: list[str], export_format: str = "chat", **fields: Any) -> dataset_pb2.CreateExportRequest:
    """A CreateExportRequest of the jobs, in a format named like the CLI's (chat, sharegpt, bedrock, convgen)."""
    selection = fields.pop("selection", None) or dataset_pb2.ExportSelection(job_ids=job_ids)
    return dataset_pb2.CreateExportRequest(selection=selection, format=FORMATS[export_format], **fields)


async def wait_export(
    stub: dataset_pb2_grpc.DatasetServiceStub, export_id: str, *, within: float = 120.0
) -> dataset_pb2.Export:
    """Polls GetExport until the export is terminal."""
    async with asyncio.timeout(within):
        while True:
            export = await stub.GetExport(dataset_pb2.GetExportRequest(export_id=export_id))
            if export.state in TERMINAL:
                return export
            await asyncio.sleep(0.1)


async def run_export(
    stub: dataset_pb2_grpc.DatasetServiceStub, request: dataset_pb2.CreateExportRequest, *, within: float = 120.0
) -> dataset_pb2.Export:
    """Creates an export and waits for it to succeed."""
    created = await stub.CreateExport(request)
    done = await wait_export(stub, created.id, within=within)
    assert done.state == dataset_pb2.EXPORT_STATE_SUCCEEDED, (done.error_code, done.error_message)
    return done


async def read_file(stub: dataset_pb2_grpc.DatasetServiceStub, export_id: str, name: str, offset: int = 0) -> bytes:
    """A whole export file through ReadExportFile."""
    chunks = []
    call = stub.ReadExportFile(dataset_pb2.ReadExportFileRequest(export_id=export_id, name=name, offset=offset))
    async for chunk in call:
        assert len(chunk.data) <= 1024 * 1024
        chunks.append(chunk.data)
    return b"".join(chunks)


def lines(data: bytes) -> list[dict[str, Any]]:
    """Every JSON line of a JSON Lines file."""
    return [json.loads(line) for line in data.decode().splitlines()]


def status_of(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
    """(code, message) of a failed call."""
    return error.code(), error.details() or ""


def tier(name: str) -> common_pb2.Tier.ValueType:
    """A Tier by its short name."""
    return common_pb2.Tier.Value(f"TIER_{name.upper()}")


def demo_combination(*, personas: int = 3, arcs: int = 5, topics: int = 20) -> batch_pb2.Combination:
    """A product of the demo catalog: the first personas × core (tier template) arcs × topics."""
    catalog = json.loads(packaged_catalog_path().read_text())
    core = [a for a in catalog["emotional_arcs"] if a["tier"] == "template"]
    return batch_pb2.Combination(
        persona_ids=[p["id"] for p in catalog["personas"][:personas]],
        emotional_arc_ids=[a["id"] for a in core[:arcs]],
        training_topic_ids=[t["id"] for t in catalog["training_topics"][:topics]],
        tier=common_pb2.TIER_TEMPLATE,
    )
