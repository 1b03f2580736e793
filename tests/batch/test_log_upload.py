"""Job logs on S3 (moto over HTTP): with S3 down at job end the job still ends, and the log arrives once S3 is back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from convgen.blobs import BlobNotFound
from convgen.blobs.s3 import S3BlobStore
from convgen.v1 import batch_pb2
from tests.support.demo_catalog import seed_job_request
from tests.support.jobs import wait_terminal
from tests.support.moto_s3 import MotoS3Server
from tests.support.s3 import open_s3_store, s3_settings
from tests.support.services import Services, running_services, test_settings
from tests.support.tcp_proxy import TcpProxy


@pytest.fixture
async def proxy(moto_s3: MotoS3Server) -> AsyncIterator[TcpProxy]:
    async with TcpProxy("127.0.0.1", moto_s3.port) as running:
        yield running


@pytest.fixture
async def services(
    database_url: str, tmp_path: Path, moto_s3: MotoS3Server, proxy: TcpProxy
) -> AsyncIterator[Services]:
    # The generation service talks to S3 directly; the batch service's log uploads go through the proxy.
    settings = test_settings(database_url, tmp_path, **s3_settings(moto_s3.endpoint_url))
    async with running_services(settings, batch_overrides=s3_settings(proxy.endpoint_url)) as running:
        yield running


@pytest.fixture
async def s3(moto_s3: MotoS3Server) -> AsyncIterator[S3BlobStore]:
    store = await open_s3_store(moto_s3.endpoint_url, create_buckets=False)
    yield store
    await store.close()


async def test_log_is_uploaded_to_s3_at_job_end(services: Services, s3: S3BlobStore) -> None:
    job = await services.batch_stub.CreateBatchJob(seed_job_request())
    await wait_terminal(services.batch_stub, job.id)
    async with asyncio.timeout(15):
        while not (await services.batch_stub.GetBatchJob(batch_pb2.GetBatchJobRequest(job_id=job.id))).log_uploaded:
            await asyncio.sleep(0.05)
    log = await services.batch_stub.GetBatchJobLog(batch_pb2.GetBatchJobLogRequest(job_id=job.id))
    assert log.blob.uri == f"s3://batch-logs/{job.id}/log.txt"
    assert (await s3.get("batch-logs", f"{job.id}/log.txt")).decode() == log.text


@pytest.mark.slow
async def test_with_s3_down_at_job_end_the_job_completes_and_the_log_arrives_later(
    services: Services, proxy: TcpProxy, s3: S3BlobStore
) -> None:
    job = await services.batch_stub.CreateBatchJob(seed_job_request(auto_start=False))
    proxy.set_available(False)
    await services.batch_stub.ResumeBatchJob(batch_pb2.ResumeBatchJobRequest(job_id=job.id))

    done = await wait_terminal(services.batch_stub, job.id)
    assert (done.state, done.completed_items) == (batch_pb2.BATCH_JOB_STATE_COMPLETED, 8)
    await asyncio.sleep(1.5)  # several upload attempts fail meanwhile
    assert proxy.refused > 0, "the uploader did try while S3 was down"
    log = await services.batch_stub.GetBatchJobLog(batch_pb2.GetBatchJobLogRequest(job_id=job.id))
    assert not log.uploaded
    assert "summary: 8 items: 8 completed, 0 failed, 0 cancelled" in log.text
    # created, started, 8 × processing, 8 × completed, the terminal line with the summary
    assert log.line_count == len(log.text.splitlines()) == 1 + 1 + 8 + 8 + 1
    with pytest.raises(BlobNotFound):
        await s3.get("batch-logs", f"{job.id}/log.txt")

    proxy.set_available(True)
    async with asyncio.timeout(30):
        while not (await services.batch_stub.GetBatchJob(batch_pb2.GetBatchJobRequest(job_id=job.id))).log_uploaded:
            await asyncio.sleep(0.1)
    assert (await s3.get("batch-logs", f"{job.id}/log.txt")).decode() == log.text
