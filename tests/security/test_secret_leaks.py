"""Secrets never appear in logs, error messages, job logs or blobs (services run as processes at DEBUG level)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import grpc
import pytest

from convgen.v1 import batch_pb2, batch_pb2_grpc
from tests.support.cluster import ProcessCluster
from tests.support.demo_catalog import seed_job_request
from tests.support.jobs import wait_terminal
from tests.support.moto_s3 import FAKE_REGION, MotoS3Server
from tests.support.postgres import fetch
from tests.support.s3 import open_s3_store

pytestmark = pytest.mark.slow  # both services as processes at DEBUG, a job with failures, about 5 s

API_KEY = "sk-ant-api03-SECRET-do-not-log-4f1e"
CLIENT_TOKEN = "client-SECRET-token-88aa"
SERVICE_TOKEN = "service-SECRET-token-21bb"
AWS_KEY_ID = "AKIASECRETKEYID9Z"
AWS_SECRET = "aws-SECRET-access-key-77cc"
SECRETS = [API_KEY, CLIENT_TOKEN, SERVICE_TOKEN, AWS_KEY_ID, AWS_SECRET]


@pytest.mark.timeout(180)
async def test_no_secret_is_logged_returned_or_stored(database_url: str, tmp_path: Path, moto_s3: MotoS3Server) -> None:
    common = {
        "DATABASE_URL": database_url,
        "LISTEN_HOST": "127.0.0.1",
        "LOG_LEVEL": "DEBUG",
        "LOG_FORMAT": "json",
        "BLOB_STORE": "s3",
        "S3_ENDPOINT_URL": moto_s3.endpoint_url,
        "AWS_REGION": FAKE_REGION,
        "AWS_ACCESS_KEY_ID": AWS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "MODEL_MAX_ATTEMPTS": "2",
        "MODEL_RETRY_BASE_SECONDS": "0.05",
        "BATCH_RETRY_BASE_SECONDS": "0.05",
    }
    cluster = ProcessCluster(
        tmp_path,
        common,
        api_args=[],
        generation_env={"ANTHROPIC_API_KEY": API_KEY, "AUTH_TOKENS": f"{CLIENT_TOKEN},{SERVICE_TOKEN}"},
        batch_env={"AUTH_TOKENS": CLIENT_TOKEN, "GENERATION_AUTH_TOKEN": SERVICE_TOKEN},
    )
    try:
        await cluster.start()
        assert cluster.api is not None
        # Failures exercise the error paths: provider 4xx (with its body), 529s, unusable output.
        for fault, match in (
            ("unauthorized", "Essential Estate Planning"),
            ("overloaded", "Roth IRA"),
            ("truncated", "Mortgage Payoff"),
        ):
            await cluster.api.inject(fault, times=10, match=match)
        metadata = (("authorization", f"Bearer {CLIENT_TOKEN}"),)
        async with grpc.aio.insecure_channel(cluster.batches[0].address) as channel:
            stub = batch_pb2_grpc.BatchServiceStub(channel)
            job = await stub.CreateBatchJob(seed_job_request(max_attempts=2), metadata=metadata)
            done = await wait_terminal(_Authed(stub, metadata), job.id)  # type: ignore[arg-type]
            assert done.failed_items > 0
            async with asyncio.timeout(30):
                while not (
                    await stub.GetBatchJob(batch_pb2.GetBatchJobRequest(job_id=job.id), metadata=metadata)
                ).log_uploaded:
                    await asyncio.sleep(0.1)
            log = await stub.GetBatchJobLog(batch_pb2.GetBatchJobLogRequest(job_id=job.id), metadata=metadata)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.GetBatchJob(
                    batch_pb2.GetBatchJobRequest(job_id=job.id), metadata=(("authorization", "Bearer " + API_KEY),)
                )
            errors = [refused.value.details() or ""]
    finally:
        for process in reversed(cluster.processes):  # SIGTERM: each process ends its log as it exits
            await process.terminate()
        await cluster.stop()

    texts = {
        "generation log": cluster.processes[0].log_text(),
        "batch log": cluster.batches[0].log_text(),
        "job log": log.text,
        "rpc errors": "\n".join(errors),
    }
    rows = await fetch(database_url, "SELECT error_message FROM batch_items WHERE error_message IS NOT NULL")
    rows += await fetch(database_url, "SELECT error_message FROM generation_failures")
    texts["stored error messages"] = "\n".join(r["error_message"] for r in rows)
    assert texts["stored error messages"], "the run produced failures to inspect"
    store = await open_s3_store(
        moto_s3.endpoint_url, access_key_id=AWS_KEY_ID, secret_access_key=AWS_SECRET, create_buckets=False
    )
    try:
        keys = [r["raw_key"] for r in await fetch(database_url, "SELECT raw_key FROM conversations")]
        keys += [r["final_key"] for r in await fetch(database_url, "SELECT final_key FROM conversations")]
        blobs = [await store.get("conversation-files", key) for key in keys]
        blobs.append(await store.get("batch-logs", f"{uuid.UUID(job.id)}/log.txt"))
    finally:
        await store.close()
    texts["blobs"] = "\n".join(b.decode(errors="replace") for b in blobs)

    assert '"level": "DEBUG"' in texts["generation log"] + texts["batch log"], "the services logged at DEBUG"
    for where, text in texts.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret[:12]}... leaked into the {where}"


class _Authed:
    """A BatchService stub that adds the bearer token to the calls wait_terminal makes."""

    def __init__(self, stub: batch_pb2_grpc.BatchServiceStub, metadata: tuple[tuple[str, str], ...]) -> None:
        self._stub = stub
        self._metadata = metadata

    def WatchBatchJob(self, request: batch_pb2.WatchBatchJobRequest) -> object:
        return self._stub.WatchBatchJob(request, metadata=self._metadata)

    def GetBatchJob(self, request: batch_pb2.GetBatchJobRequest) -> object:
        return self._stub.GetBatchJob(request, metadata=self._metadata)
