"""Helpers for batch tests: the seed's job, waiting for a job to end, and database checks."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc

from convgen.catalog.loader import packaged_catalog_path
from convgen.v1 import batch_pb2, batch_pb2_grpc, common_pb2

TERMINAL = {
    batch_pb2.BATCH_JOB_STATE_COMPLETED,
    batch_pb2.BATCH_JOB_STATE_FAILED,
    batch_pb2.BATCH_JOB_STATE_CANCELLED,
}


def job_counters(job: batch_pb2.BatchJob) -> tuple[int, int, int, int, int, int]:
    """(total, queued, processing, completed, failed, cancelled) items of a job."""
    return (
        job.total_items,
        job.queued_items,
        job.processing_items,
        job.completed_items,
        job.failed_items,
        job.cancelled_items,
    )


def seed_combination() -> batch_pb2.Combination:
    """The seed's failing 8-item job: one persona x two arcs x four topics, tier template, auto template."""
    seed = json.loads(packaged_catalog_path().read_text())["seed_failing_job"]
    return batch_pb2.Combination(
        persona_ids=seed["persona_ids"],
        emotional_arc_ids=seed["emotional_arc_ids"],
        training_topic_ids=seed["training_topic_ids"],
        tier=common_pb2.TIER_TEMPLATE,
        template_id=seed["template_id"],
    )


def seed_job_request(**fields: Any) -> batch_pb2.CreateBatchJobRequest:
    """CreateBatchJobRequest for the seed job, with field overrides."""
    fields.setdefault("name", "seed failing job")
    return batch_pb2.CreateBatchJobRequest(combination=seed_combination(), **fields)


async def wait_terminal(
    stub: batch_pb2_grpc.BatchServiceStub, job_id: str, *, within: float = 60.0
) -> batch_pb2.BatchJob:
    """Watches the job until its terminal event and returns the job then."""
    async with asyncio.timeout(within):
        call = stub.WatchBatchJob(batch_pb2.WatchBatchJobRequest(job_id=job_id))
        async for _event in call:
            pass
        return await stub.GetBatchJob(batch_pb2.GetBatchJobRequest(job_id=job_id))


def status_of(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
    """(code, message) of a failed call."""
    return error.code(), error.details() or ""
