"""The seed's 8-item job completes; every batch_items.conversation_id is the conversation's PRIMARY key."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from convgen.v1 import batch_pb2
from tests.support.demo_catalog import seed_job_request
from tests.support.jobs import wait_terminal
from tests.support.postgres import fetch
from tests.support.services import Services, running_services, test_settings


@pytest.fixture
async def services(database_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    async with running_services(test_settings(database_url, tmp_path)) as running:
        yield running


async def test_seed_job_completes_with_primary_keys_in_the_foreign_key(
    services: Services, database_url: str, tmp_path: Path
) -> None:
    job = await services.batch_stub.CreateBatchJob(seed_job_request(concurrency=4))
    assert job.total_items == 8

    done = await wait_terminal(services.batch_stub, job.id)

    assert done.state == batch_pb2.BATCH_JOB_STATE_COMPLETED
    assert (done.completed_items, done.failed_items, done.queued_items, done.processing_items) == (8, 0, 0, 0)
    rows = await fetch(
        database_url,
        """
        SELECT i.status, i.conversation_id AS fk, c.id AS pk, c.conversation_id AS business_key
        FROM batch_items i JOIN conversations c ON c.id = i.conversation_id
        WHERE i.batch_job_id = $1
        """,
        uuid.UUID(job.id),
    )
    assert len(rows) == 8
    for row in rows:
        assert row["status"] == "completed"
        assert row["fk"] == row["pk"]
        assert row["fk"] != row["business_key"]

    items = await services.batch_stub.ListBatchItems(batch_pb2.ListBatchItemsRequest(job_id=job.id))
    assert all(i.conversation_pk != i.conversation_business_key for i in items.items)

    log = await services.batch_stub.GetBatchJobLog(batch_pb2.GetBatchJobLogRequest(job_id=job.id))
    assert "summary: 8 items: 8 completed, 0 failed, 0 cancelled" in log.text
    assert log.text.count(" processing (attempt 1) on worker ") == 8
    assert log.text.count(" completed (attempt 1)") == 8
    # The upload runs right after the terminal transaction commits.
    async with asyncio.timeout(10):
        while not (await services.batch_stub.GetBatchJob(batch_pb2.GetBatchJobRequest(job_id=job.id))).log_uploaded:
            await asyncio.sleep(0.05)
    log_file = tmp_path / "blobs" / "batch-logs" / job.id / "log.txt"
    assert log_file.read_text() == log.text
