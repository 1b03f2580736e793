"""Benchmark 6, dataset export: 100,000 conversations (quick: 2,000) exported with the report from the file store.

A completed job of N conversations is written straight into PostgreSQL and the file store (tests/support/
synthetic_dataset.py: ~10% are light edits of earlier ones, so the near-duplicate step has work to do); the export
does not care how they got there. Then, with the batch service as its own process (`convgen serve batch`, default
settings), one export in the chat format with a 10% eval split, drop_near_duplicates and the report:
- end to end: CreateExport until GetExport says succeeded (the client polls every 200 ms), and the server's own
  created_at -> finished_at; peak RSS of the batch service sampled every 100 ms throughout;
- near-duplicate detection alone, in the bench process over the same conversations: word ids, shingles and
  signatures, then LSH banding and clustering (no blob I/O);
- the same export from S3 (moto as a process) over a smaller job (10,000; quick: 200): rows/s. moto's server
  answers one request at a time (~50 GETs/s here), so this figure measures moto as much as the export.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from batch_service.datasets.near_duplicates import NearDuplicateIndex
from batch_service.datasets.text_features import Vocabulary
from bench.cluster import ClusterPool
from bench.meters import RssSampler
from bench.report import Row, fmt, note, result_line, verdict
from bench.runner import standalone
from convgen.blobs import BlobStore
from convgen.blobs.filesystem import FileBlobStore
from convgen.v1 import dataset_pb2, dataset_pb2_grpc
from tests.support.moto_s3 import MotoS3Process
from tests.support.near_duplicates import stream_conversations
from tests.support.processes import ServiceProcess, clean_environment
from tests.support.s3 import open_s3_store
from tests.support.synthetic_dataset import BUCKET, write_job

NAME = "dataset_export"
TARGET_SECONDS = 120.0
TARGET_RSS_MB = 500.0
SEED = 2026


def _batch_env(dsn: str, workdir: Path, extra: dict[str, str]) -> dict[str, str]:
    return clean_environment(
        {
            "DATABASE_URL": dsn,
            "CONVGEN_DATA_DIR": str(workdir / "data"),
            "BLOB_STORE": "file",
            "LISTEN_HOST": "127.0.0.1",
            "LOG_FORMAT": "json",
            "SHUTDOWN_GRACE_SECONDS": "2",
            # Nothing is generated: the batch service never calls the generation service here.
            "GENERATION_TARGET": "127.0.0.1:9",
            **extra,
        }
    )


async def _export(address: str, job_id: str, *, sample_pid: int | None) -> dict[str, Any]:
    """Runs one export through the service and returns its figures (and the peak RSS of sample_pid)."""
    rss = RssSampler({"batch": sample_pid}, interval=0.1) if sample_pid is not None else None
    if rss is not None:
        rss.start()
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = dataset_pb2_grpc.DatasetServiceStub(channel)
            started = time.perf_counter()
            created = await stub.CreateExport(
                dataset_pb2.CreateExportRequest(
                    selection=dataset_pb2.ExportSelection(job_ids=[job_id]),
                    format=dataset_pb2.EXPORT_FORMAT_CHAT_MESSAGES,
                    split=dataset_pb2.ExportSplit(eval_fraction=0.1, seed=1),
                    quality_gate=dataset_pb2.QualityGate(drop_near_duplicates=True),
                )
            )
            while True:
                export = await stub.GetExport(dataset_pb2.GetExportRequest(export_id=created.id))
                if export.state != dataset_pb2.EXPORT_STATE_RUNNING:
                    break
                await asyncio.sleep(0.2)
            elapsed = time.perf_counter() - started
    finally:
        peak = await rss.stop() if rss is not None else {}
    if export.state != dataset_pb2.EXPORT_STATE_SUCCEEDED:
        raise RuntimeError(f"export failed: {export.error_code}: {export.error_message}")
    server = export.finished_at.ToDatetime() - export.created_at.ToDatetime()
    counts = export.counts
    return {
        "end_to_end_s": round(elapsed, 2),
        "server_s": round(server.total_seconds(), 2),
        "rows_per_s": round(counts.selected / elapsed, 1),
        "selected": counts.selected,
        "train": counts.exported_train,
        "eval": counts.exported_eval,
        "dropped": dict(counts.dropped_by_reason),
        "near_duplicate_clusters": export.report.duplicates.near_duplicate_clusters,
        "train_bytes": export.files[0].bytes,
        "peak_rss_mb": peak.get("batch"),
        "rss_samples": rss.samples if rss is not None else 0,
    }


async def _run_service(dsn: str, workdir: Path, job_id: str, extra: dict[str, str]) -> dict[str, Any]:
    service = ServiceProcess("batch", _batch_env(dsn, workdir, extra), workdir)
    await service.start()
    try:
        assert service.process is not None
        return await _export(service.address, job_id, sample_pid=service.process.pid)
    finally:
        await service.terminate()


def near_duplicate_seconds(count: int) -> dict[str, Any]:
    """Near-duplicate detection alone over `count` synthetic conversations (no I/O): signing, then clustering."""
    documents = stream_conversations(count, seed=SEED)
    vocabulary = Vocabulary()
    index = NearDuplicateIndex(0.8, vocabulary)
    signing = 0.0
    for document in documents:
        turns = sorted(document["turns"], key=lambda t: t["turn_number"])
        started = time.perf_counter()
        index.add([vocabulary.ids(t["content"]) for t in turns])
        signing += time.perf_counter() - started
    started = time.perf_counter()
    index.flush()
    signing += time.perf_counter() - started
    started = time.perf_counter()
    clusters = index.clusters()
    clustering = time.perf_counter() - started
    return {
        "signing_s": round(signing, 2),
        "clustering_s": round(clustering, 2),
        "total_s": round(signing + clustering, 2),
        "clusters": len(clusters.members),
        "candidate_pairs": clusters.candidate_pairs,
        "signatures_mb": round(index.memory_bytes / 1e6, 1),
    }


async def run(pool: ClusterPool, quick: bool) -> dict[str, Any]:
    """Writes the datasets, runs the exports, measures near-duplicate detection; returns the JSON line."""
    count = 2_000 if quick else 100_000
    s3_count = 200 if quick else 10_000
    figures: dict[str, Any] = {"conversations": count, "s3_conversations": s3_count}
    workdir = Path(tempfile.mkdtemp(prefix="convgen-bench-export-"))
    dsn = await pool.postgres.create_database()
    moto: MotoS3Process | None = None
    try:
        files = FileBlobStore(workdir / "data" / "blobs")
        await files.ensure_buckets([BUCKET])
        started = time.perf_counter()
        job = await write_job(dsn, files, count, seed=SEED)
        await files.close()
        figures["setup_s"] = round(time.perf_counter() - started, 1)
        figures["blob_mb"] = round(job.blob_bytes / 1e6, 1)
        note(f"dataset_export: wrote {count} conversations ({figures['blob_mb']} MB) in {figures['setup_s']} s")
        figures["file"] = await _run_service(dsn, workdir, str(job.job_id), {})
        note(f"dataset_export: file store {figures['file']}")
        figures["near_duplicates"] = await asyncio.to_thread(near_duplicate_seconds, count)
        note(f"dataset_export: near-duplicate detection alone {figures['near_duplicates']}")

        moto = MotoS3Process()
        await asyncio.to_thread(moto.start)
        s3: BlobStore = await open_s3_store(moto.endpoint_url)
        try:
            await s3.ensure_buckets([BUCKET])
            s3_job = await write_job(dsn, s3, s3_count, seed=SEED + 1)
        finally:
            await s3.close()
        figures["s3"] = await _run_service(dsn, workdir, str(s3_job.job_id), moto.service_env())
        note(f"dataset_export: S3 (moto) {figures['s3']}")
    finally:
        if moto is not None:
            await asyncio.to_thread(moto.stop)
        await pool.postgres.drop_database(dsn)
        shutil.rmtree(workdir, ignore_errors=True)
    return result_line(NAME, quick, figures)


def rows(result: dict[str, Any]) -> list[Row]:
    """Table rows for docs/performance.md."""
    n = f"{result['conversations']:,}"
    file, s3, near = result["file"], result["s3"], result["near_duplicates"]
    return [
        Row(
            NAME,
            f"export with the report, {n} conversations, file store (end to end)",
            fmt(file.get("end_to_end_s"), "s", 1),
            f"< {TARGET_SECONDS:.0f} s",
            verdict(file.get("end_to_end_s"), below=TARGET_SECONDS),
            f"server {fmt(file.get('server_s'), 's', 1)}; {fmt(file.get('rows_per_s'), 'rows/s', 0)}; "
            f"{file.get('train')} train, {file.get('eval')} eval, dropped {file.get('dropped')}; "
            f"{result.get('blob_mb')} MB of blobs",
        ),
        Row(
            NAME,
            f"peak RSS of the batch service during that export ({n})",
            fmt(file.get("peak_rss_mb"), "MB", 0),
            f"< {TARGET_RSS_MB:.0f} MB",
            verdict(file.get("peak_rss_mb"), below=TARGET_RSS_MB),
            f"{file.get('rss_samples')} samples every 100 ms",
        ),
        Row(
            NAME,
            f"near-duplicate detection alone, {n} conversations",
            fmt(near.get("total_s"), "s", 1),
            notes=f"signing {near.get('signing_s')} s, LSH + clusters {near.get('clustering_s')} s; "
            f"{near.get('clusters')} clusters, {near.get('candidate_pairs')} candidate pairs; signatures "
            f"{near.get('signatures_mb')} MB",
        ),
        Row(
            NAME,
            f"export from S3 (moto), {result['s3_conversations']:,} conversations",
            fmt(s3.get("rows_per_s"), "rows/s", 0),
            notes=f"end to end {fmt(s3.get('end_to_end_s'), 's', 1)}; peak RSS {fmt(s3.get('peak_rss_mb'), 'MB', 0)}",
        ),
    ]


if __name__ == "__main__":
    sys.exit(standalone(NAME, run))
