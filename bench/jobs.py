"""Jobs as the benchmarks run them: a warm-up, waiting by polling (no watcher unless a benchmark adds one), timings."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

from convgen.v1 import batch_pb2, batch_pb2_grpc
from tests.support.demo_catalog import CatalogIds
from tests.support.jobs import TERMINAL


async def get_job(stub: batch_pb2_grpc.BatchServiceAsyncStub, job_id: str) -> batch_pb2.BatchJob:
    """GetBatchJob."""
    return await stub.GetBatchJob(batch_pb2.GetBatchJobRequest(job_id=job_id))


async def wait_job(
    stub: batch_pb2_grpc.BatchServiceAsyncStub,
    job_id: str,
    *,
    within: float,
    poll: float = 0.05,
    log_uploaded: bool = False,
) -> batch_pb2.BatchJob:
    """Polls GetBatchJob until the job is terminal (and, optionally, its log uploaded); raises on timeout.

    Polling (20 small calls a second) instead of watching, so that the measured job has no watcher unless a
    benchmark adds one on purpose.
    """
    deadline = time.monotonic() + within
    while True:
        job = await get_job(stub, job_id)
        if job.state in TERMINAL and (job.log_uploaded or not log_uploaded):
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"job {job_id} not done within {within:.0f}s: state {batch_pb2.BatchJobState.Name(job.state)}, "
                f"{job.completed_items}/{job.total_items} completed, {job.failed_items} failed"
            )
        await asyncio.sleep(poll)


async def warm_up(
    stub: batch_pb2_grpc.BatchServiceAsyncStub,
    catalog: CatalogIds,
    items: int,
    concurrency: int,
    *,
    log_uploaded: bool = True,
) -> batch_pb2.BatchJob:
    """Runs a small job that is not measured (connections, lazy imports, the SDK pacer's probe); returns it ended."""
    warm = await stub.CreateBatchJob(
        batch_pb2.CreateBatchJobRequest(name="warm-up", combination=catalog.combination(items), concurrency=concurrency)
    )
    return await wait_job(stub, warm.id, within=120, log_uploaded=log_uploaded)


async def failure_samples(stub: batch_pb2_grpc.BatchServiceAsyncStub, job_id: str, limit: int = 3) -> list[str]:
    """The errors of the job's first few failed items (so a result with failures says why)."""
    page = await stub.ListBatchItems(
        batch_pb2.ListBatchItemsRequest(job_id=job_id, page_size=limit, state=batch_pb2.BATCH_ITEM_STATE_FAILED)
    )
    return [f"{item.error_code}: {item.error_message}"[:400] for item in page.items]


def timestamp_seconds(value: Any) -> float:
    """A protobuf Timestamp as Unix seconds."""
    return float(value.seconds) + float(value.nanos) / 1e9


def job_elapsed(job: batch_pb2.BatchJob, *, since: Literal["created", "started"] = "created") -> float:
    """Seconds from the job's creation (or first start) to its terminal state, from the server's timestamps."""
    begin = job.created_at if since == "created" else job.started_at
    return timestamp_seconds(job.finished_at) - timestamp_seconds(begin)
