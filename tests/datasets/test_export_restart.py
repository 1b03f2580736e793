"""Acceptance 5: an export survives a SIGKILL of the batch service mid-way: restarted, the service finishes it with
the same files as an uninterrupted run. Also: with two replicas, each export is run once (its lease)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import grpc
import pytest

from convgen.blobs.filesystem import FileBlobStore
from convgen.v1 import dataset_pb2, dataset_pb2_grpc
from tests.datasets.helpers import export_request, read_file, wait_export
from tests.support.processes import ServiceProcess, clean_environment
from tests.support.synthetic_dataset import write_job

CONVERSATIONS = 6000


async def _synthetic_job(database_url: str, tmp_path: Path, count: int) -> str:
    store = FileBlobStore(tmp_path / "data" / "blobs")
    await store.ensure_buckets(["conversation-files"])
    job = await write_job(database_url, store, count, seed=5)
    await store.close()
    return str(job.job_id)


@pytest.fixture
async def synthetic_job(database_url: str, tmp_path: Path) -> str:
    """A completed job of 6,000 conversations written straight into the database and the file store."""
    return await _synthetic_job(database_url, tmp_path, CONVERSATIONS)


@pytest.fixture
async def small_synthetic_job(database_url: str, tmp_path: Path) -> str:
    """A completed job of 1,000 conversations."""
    return await _synthetic_job(database_url, tmp_path, 1000)


def batch_process(database_url: str, workdir: Path, name: str) -> ServiceProcess:
    """A `convgen serve batch` process on the file store, with a 2-second export lease."""
    env = clean_environment(
        {
            "DATABASE_URL": database_url,
            "CONVGEN_DATA_DIR": str(workdir / "data"),
            "BLOB_STORE": "file",
            "LISTEN_HOST": "127.0.0.1",
            "LOG_FORMAT": "json",
            # Nothing here generates: the generation service is never called.
            "GENERATION_TARGET": "127.0.0.1:9",
            "DATASET_LEASE_SECONDS": "2",
            "DATASET_POLL_SECONDS": "0.2",
            "DATABASE_POOL_MIN_SIZE": "1",
            "SHUTDOWN_GRACE_SECONDS": "2",
        }
    )
    return ServiceProcess("batch", env, workdir, name=name)


@pytest.mark.timeout(300)
async def test_an_export_survives_a_sigkill_and_ends_with_the_same_files(
    database_url: str, tmp_path: Path, synthetic_job: str
) -> None:
    service = batch_process(database_url, tmp_path, "batch")
    await service.start()
    try:
        request = export_request(
            [synthetic_job],
            "chat",
            split=dataset_pb2.ExportSplit(eval_fraction=0.1, seed=42),
            quality_gate=dataset_pb2.QualityGate(drop_near_duplicates=True),
        )
        async with grpc.aio.insecure_channel(service.address) as channel:
            stub = dataset_pb2_grpc.DatasetServiceStub(channel)
            interrupted = await stub.CreateExport(request)
            progress = await _wait_for_progress(stub, interrupted.id)
        assert 0 < progress.counts.processed < CONVERSATIONS, "killed mid-way"
        service.kill()
        killed_at = time.monotonic()
        await service.start()
        async with grpc.aio.insecure_channel(service.address) as channel:
            stub = dataset_pb2_grpc.DatasetServiceStub(channel)
            resumed = await wait_export(stub, interrupted.id, within=180)
            assert resumed.state == dataset_pb2.EXPORT_STATE_SUCCEEDED, resumed.error_message
            assert resumed.runs == 2, "the restarted service ran it again once the dead one's lease expired"
            assert time.monotonic() - killed_at >= 2.0
            uninterrupted = await wait_export(stub, (await stub.CreateExport(request)).id, within=180)
            assert uninterrupted.runs == 1
            for name in ("train.jsonl", "eval.jsonl"):
                first = await read_file(stub, resumed.id, name)
                assert first == await read_file(stub, uninterrupted.id, name)
            assert [(f.name, f.sha256, f.rows) for f in resumed.files[:2]] == [
                (f.name, f.sha256, f.rows) for f in uninterrupted.files[:2]
            ]
            assert resumed.counts.selected == CONVERSATIONS
            assert resumed.counts.dropped_by_reason == uninterrupted.counts.dropped_by_reason
        # The killed run left no half-written file under an export key.
        folder = tmp_path / "data" / "blobs" / "datasets" / resumed.id
        assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
            "eval.jsonl",
            "manifest.json",
            "report.md",
            "train.jsonl",
        ]
    finally:
        await service.terminate()


async def _wait_for_progress(
    stub: dataset_pb2_grpc.DatasetServiceStub, export_id: str, within: float = 60.0
) -> dataset_pb2.Export:
    """The export as soon as its runner has reported some progress."""
    async with asyncio.timeout(within):
        while True:
            export = await stub.GetExport(dataset_pb2.GetExportRequest(export_id=export_id))
            if export.counts.processed > 0 or export.state != dataset_pb2.EXPORT_STATE_RUNNING:
                return export
            await asyncio.sleep(0.02)


@pytest.mark.timeout(300)
async def test_two_replicas_run_each_export_once(database_url: str, tmp_path: Path, small_synthetic_job: str) -> None:
    synthetic_job = small_synthetic_job
    replicas = [batch_process(database_url, tmp_path, f"batch-{n}") for n in range(2)]
    for replica in replicas:
        await replica.start()
    try:
        channels = [grpc.aio.insecure_channel(r.address) for r in replicas]
        stubs = [dataset_pb2_grpc.DatasetServiceStub(c) for c in channels]
        created = [
            await stubs[n % 2].CreateExport(
                export_request([synthetic_job], "sharegpt", request_id=f"replicas-{n}-{uuid.uuid4()}")
            )
            for n in range(4)
        ]
        done = [await wait_export(stubs[0], e.id, within=240) for e in created]
        assert all(e.state == dataset_pb2.EXPORT_STATE_SUCCEEDED for e in done)
        assert all(e.runs == 1 for e in done), [e.runs for e in done]
        assert len({e.files[0].sha256 for e in done}) == 1
        for channel in channels:
            await channel.close()
        logs = "".join(r.log_text() for r in replicas)
        assert all(logs.count(f"export {e.id}: run 1 started") == 1 for e in done)
    finally:
        for replica in replicas:
            await replica.terminate()
