"""Benchmark 5, scale: a 100,000-item job (quick: 10,000).

The bench catalog (5 personas, 4,000 topics; see bench.postgres) makes the job a plain combination: 5 personas ×
5 core arcs × 4,000 topics (quick: × 400), tier template, auto-selected template; BATCH_MAX_ITEMS is raised to the
job size. Steps, on one cluster (offline model, file store), RSS of both services sampled every 100 ms throughout:
1. CreateBatchJob (auto_start=false), timed at the client (the whole RPC);
2. WatchBatchJob snapshot latency: 20 streams opened one after the other, time to the first message;
3. ListBatchItems at the far end: walk the job with page tokens (page_size 1000, the maximum), then the last
   1,000 items with the default page_size 100; every page is timed at the client;
4. ResumeBatchJob, and let it run 60 s (quick: 5 s) at model latency 0, one snapshot latency sample a second;
5. PauseBatchJob; once nothing is in flight, a filtered walk (state QUEUED) to the far end the same way, and the
   first page of state COMPLETED.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from bench.cluster import ClusterPool, ClusterSpec
from bench.jobs import get_job
from bench.meters import RssSampler, percentile
from bench.report import Row, fmt, note, result_line, rounded, verdict
from bench.runner import standalone
from convgen.v1 import batch_pb2, batch_pb2_grpc

NAME = "scale"
CONCURRENCY = 64
SNAPSHOT_SAMPLES = 20
MAX_PAGE = 1000
DEFAULT_PAGE = 100

TARGET_CREATE_S = 5.0
TARGET_PAGE_MS = 20.0
TARGET_SNAPSHOT_MS = 100.0
TARGET_RSS_MB = 250.0


async def snapshot_ms(stub: batch_pb2_grpc.BatchServiceAsyncStub, job_id: str) -> float:
    """Opens a WatchBatchJob stream and returns the milliseconds until its first message (then cancels it)."""
    start = time.perf_counter()
    call = stub.WatchBatchJob(batch_pb2.WatchBatchJobRequest(job_id=job_id))
    try:
        event = await call.read()
        assert isinstance(event, batch_pb2.BatchJobEvent), "a first message"
        elapsed = (time.perf_counter() - start) * 1000
        assert event.WhichOneof("event") == "snapshot", "the first message is the snapshot"
        return elapsed
    finally:
        call.cancel()


async def walk_pages(
    stub: batch_pb2_grpc.BatchServiceAsyncStub,
    job_id: str,
    total: int,
    state: batch_pb2.BatchItemState.ValueType = batch_pb2.BATCH_ITEM_STATE_UNSPECIFIED,
) -> dict[str, Any]:
    """Walks to the far end with page tokens: size-1000 pages, then size-100 pages over the last 1,000 items."""
    big: list[float] = []
    small: list[float] = []
    token = ""
    seen = 0
    while True:
        size = MAX_PAGE if total - seen > MAX_PAGE else DEFAULT_PAGE
        start = time.perf_counter()
        page = await stub.ListBatchItems(
            batch_pb2.ListBatchItemsRequest(job_id=job_id, page_size=size, page_token=token, state=state)
        )
        elapsed = (time.perf_counter() - start) * 1000
        (big if size == MAX_PAGE else small).append(elapsed)
        seen += len(page.items)
        token = page.next_page_token
        if not token:
            break
    return {
        "items_seen": seen,
        f"pages_{MAX_PAGE}": len(big),
        f"page_{MAX_PAGE}_ms": {
            "p50": rounded(percentile(big, 0.5), 1),
            "max": rounded(max(big) if big else None, 1),
        },
        f"far_end_pages_{DEFAULT_PAGE}": len(small),
        f"far_end_page_{DEFAULT_PAGE}_ms": {
            "p50": rounded(percentile(small, 0.5), 1),
            "max": rounded(max(small) if small else None, 1),
            "last": rounded(small[-1] if small else None, 1),
        },
    }


async def run(pool: ClusterPool, quick: bool) -> dict[str, Any]:
    """Creates the big job, measures lists and snapshots, runs it for a while; returns the JSON line."""
    items = 10_000 if quick else 100_000
    run_seconds = 3.0 if quick else 60.0
    snapshot_samples = 5 if quick else SNAPSHOT_SAMPLES
    spec = ClusterSpec(model="offline")
    figures: dict[str, Any] = {"items": items, "run_s": run_seconds, "job_concurrency": CONCURRENCY}
    async with pool.cluster(spec) as cluster:
        stub = cluster.stub
        pids = {k: v for k, v in cluster.pids().items() if k in ("generation", "batch")}
        rss = RssSampler(pids, interval=0.1)
        rss.start()
        try:
            combination = pool.catalog.combination(items)
            request = batch_pb2.CreateBatchJobRequest(
                name=f"scale {items}", combination=combination, concurrency=CONCURRENCY, auto_start=False
            )
            figures["request_bytes"] = request.ByteSize()
            figures["selection"] = (
                f"{len(combination.persona_ids)} personas × {len(combination.emotional_arc_ids)} arcs × "
                f"{len(combination.training_topic_ids)} topics"
            )
            start = time.perf_counter()
            job = await stub.CreateBatchJob(request, timeout=600)
            figures["create_s"] = round(time.perf_counter() - start, 3)
            figures["created_items"] = job.total_items
            figures["rss_mb_after_create"] = {name: round(peak / 1e6, 1) for name, peak in rss.peak.items()}
            note(f"scale: CreateBatchJob of {job.total_items} items took {figures['create_s']} s")

            idle = [await snapshot_ms(stub, job.id) for _ in range(snapshot_samples)]
            figures["snapshot_ms_idle"] = {
                "p50": rounded(percentile(idle, 0.5), 1),
                "max": rounded(max(idle), 1),
                "samples": len(idle),
            }
            figures["list_unfiltered"] = await walk_pages(stub, job.id, items)
            note(f"scale: far-end pages {figures['list_unfiltered']}")

            await stub.ResumeBatchJob(batch_pb2.ResumeBatchJobRequest(job_id=job.id))
            running: list[float] = []
            started = time.monotonic()
            while time.monotonic() - started < run_seconds:
                running.append(await snapshot_ms(stub, job.id))
                await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started) % 1.0))
            during = await get_job(stub, job.id)
            await stub.PauseBatchJob(batch_pb2.PauseBatchJobRequest(job_id=job.id))
            figures["snapshot_ms_running"] = {
                "p50": rounded(percentile(running, 0.5), 1),
                "max": rounded(max(running) if running else None, 1),
                "samples": len(running),
            }
            figures["completed_in_run"] = during.completed_items
            figures["items_per_s_in_run"] = round(during.completed_items / run_seconds, 1)
            note(f"scale: {during.completed_items} items completed in {run_seconds:.0f} s")
            deadline = time.monotonic() + 60
            paused = await get_job(stub, job.id)
            while paused.processing_items and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                paused = await get_job(stub, job.id)
            figures["completed_before_lists"] = paused.completed_items
            queued = await walk_pages(stub, job.id, paused.queued_items, batch_pb2.BATCH_ITEM_STATE_QUEUED)
            figures["list_filtered_queued"] = queued
            start = time.perf_counter()
            completed_page = await stub.ListBatchItems(
                batch_pb2.ListBatchItemsRequest(
                    job_id=job.id, page_size=DEFAULT_PAGE, state=batch_pb2.BATCH_ITEM_STATE_COMPLETED
                )
            )
            figures["list_filtered_completed_first_page_ms"] = round((time.perf_counter() - start) * 1000, 1)
            figures["list_filtered_completed_first_page_items"] = len(completed_page.items)
        finally:
            figures["peak_rss_mb"] = await rss.stop()
            figures["rss_samples"] = rss.samples
        note(f"scale: peak RSS {figures['peak_rss_mb']}")
    return result_line(NAME, quick, figures)


def _worst_page(result: dict[str, Any], key: str) -> float | None:
    walk = result.get(key, {})
    values = [
        walk.get(f"page_{MAX_PAGE}_ms", {}).get("max"),
        walk.get(f"far_end_page_{DEFAULT_PAGE}_ms", {}).get("max"),
    ]
    present = [v for v in values if v is not None]
    return max(present) if present else None


def rows(result: dict[str, Any]) -> list[Row]:
    """Table rows for docs/performance.md."""
    n = f"{result['items']:,}"
    unfiltered, queued = result["list_unfiltered"], result["list_filtered_queued"]
    far = f"far_end_page_{DEFAULT_PAGE}_ms"
    big = f"page_{MAX_PAGE}_ms"
    out = [
        Row(
            NAME,
            f"CreateBatchJob, {n} items",
            fmt(result.get("create_s"), "s", 2),
            f"< {TARGET_CREATE_S:.0f} s",
            verdict(result.get("create_s"), below=TARGET_CREATE_S),
            f"{result.get('selection')}; request {result.get('request_bytes', 0) / 1024:.0f} KiB",
        ),
        Row(
            NAME,
            f"ListBatchItems at the far end (page_size {DEFAULT_PAGE}, via page tokens), worst of the last "
            f"{unfiltered[f'far_end_pages_{DEFAULT_PAGE}']} pages",
            fmt(unfiltered[far]["max"], "ms", 1),
            f"< {TARGET_PAGE_MS:.0f} ms",
            verdict(unfiltered[far]["max"], below=TARGET_PAGE_MS),
            f"last page {fmt(unfiltered[far]['last'], 'ms', 1)}, p50 {fmt(unfiltered[far]['p50'], 'ms', 1)}",
        ),
        Row(
            NAME,
            f"ListBatchItems, page_size {MAX_PAGE} (the walk to the far end), worst page",
            fmt(unfiltered[big]["max"], "ms", 1),
            f"< {TARGET_PAGE_MS:.0f} ms",
            verdict(unfiltered[big]["max"], below=TARGET_PAGE_MS),
            f"{unfiltered[f'pages_{MAX_PAGE}']} pages, p50 {fmt(unfiltered[big]['p50'], 'ms', 1)}",
        ),
        Row(
            NAME,
            f"ListBatchItems filtered (state QUEUED) at the far end (page_size {DEFAULT_PAGE}), worst of the last "
            f"{queued[f'far_end_pages_{DEFAULT_PAGE}']} pages",
            fmt(queued[far]["max"], "ms", 1),
            f"< {TARGET_PAGE_MS:.0f} ms",
            verdict(queued[far]["max"], below=TARGET_PAGE_MS),
            f"after {result.get('completed_before_lists')} items completed; last page "
            f"{fmt(queued[far]['last'], 'ms', 1)}; worst filtered page of any size "
            f"{fmt(_worst_page(result, 'list_filtered_queued'), 'ms', 1)}; first COMPLETED page "
            f"{fmt(result.get('list_filtered_completed_first_page_ms'), 'ms', 1)}",
        ),
        Row(
            NAME,
            "WatchBatchJob snapshot (time to first message), idle job, worst of "
            f"{result['snapshot_ms_idle']['samples']}",
            fmt(result["snapshot_ms_idle"]["max"], "ms", 1),
            f"< {TARGET_SNAPSHOT_MS:.0f} ms",
            verdict(result["snapshot_ms_idle"]["max"], below=TARGET_SNAPSHOT_MS),
            f"p50 {fmt(result['snapshot_ms_idle']['p50'], 'ms', 1)}",
        ),
        Row(
            NAME,
            f"WatchBatchJob snapshot while the job runs, worst of {result['snapshot_ms_running']['samples']}",
            fmt(result["snapshot_ms_running"]["max"], "ms", 1),
            f"< {TARGET_SNAPSHOT_MS:.0f} ms",
            verdict(result["snapshot_ms_running"]["max"], below=TARGET_SNAPSHOT_MS),
            f"p50 {fmt(result['snapshot_ms_running']['p50'], 'ms', 1)}",
        ),
    ]
    for service in ("generation", "batch"):
        peak = result.get("peak_rss_mb", {}).get(service)
        out.append(
            Row(
                NAME,
                f"peak RSS, {service} service (create + {result['run_s']:.0f} s run)",
                fmt(peak, "MB", 0),
                f"< {TARGET_RSS_MB:.0f} MB",
                verdict(peak, below=TARGET_RSS_MB),
                f"{result.get('rss_samples')} samples every 100 ms",
            )
        )
    out.append(
        Row(
            NAME,
            f"items/s while the {n}-item job runs (model latency 0)",
            fmt(result.get("items_per_s_in_run"), "items/s", 1),
            notes=f"{result.get('completed_in_run')} items in {result['run_s']:.0f} s; compare with overhead",
        )
    )
    return out


if __name__ == "__main__":
    sys.exit(standalone(NAME, run))
