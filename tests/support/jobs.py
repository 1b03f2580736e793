"""Batch jobs seen from a client: terminal states, counters, waiting for the end."""

from __future__ import annotations

import asyncio

from convgen.v1 import batch_pb2, batch_pb2_grpc

TERMINAL = frozenset(
    {
        batch_pb2.BATCH_JOB_STATE_COMPLETED,
        batch_pb2.BATCH_JOB_STATE_FAILED,
        batch_pb2.BATCH_JOB_STATE_CANCELLED,
    }
)


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


async def wait_terminal(
    stub: batch_pb2_grpc.BatchServiceStub, job_id: str, *, within: float = 60.0
) -> batch_pb2.BatchJob:
    """Watches the job until its terminal event and returns the job then."""
    async with asyncio.timeout(within):
        call = stub.WatchBatchJob(batch_pb2.WatchBatchJobRequest(job_id=job_id))
        async for _event in call:
            pass
        return await stub.GetBatchJob(batch_pb2.GetBatchJobRequest(job_id=job_id))
