"""Benchmark 2, concurrency efficiency: model latency L = 0.5 s ± 20 %, concurrency C = 64, ideal C/L = 128 items/s.

One fake Messages API process serves, one after the other in the same run: convgen (a 1,280-item job, concurrency
64, BATCH_WORKER_CONCURRENCY = MODEL_MAX_CONCURRENCY = 64), the naive script (bench.naive_peer: asyncio.gather over
AsyncAnthropic.messages.create with Semaphore(64), no persistence, 1,280 requests) and the seed's design (a client
calling ProcessNext on a job created with auto_start=false, sleeping 500 ms between calls, 20 items).
convgen's items/s is end to end: the job's created_at to its finished_at (server timestamps).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from bench.cluster import Cluster, ClusterPool, ClusterSpec
from bench.jobs import failure_samples, job_elapsed, wait_job, warm_up
from bench.report import Row, fmt, note, ratio, result_line, rounded, verdict
from bench.runner import standalone
from convgen.v1 import batch_pb2
from tests.support.demo_catalog import CatalogIds
from tests.support.processes import start_python_module

NAME = "concurrency"
LATENCY_S = 0.5
JITTER = 0.2
CONCURRENCY = 64
IDEAL_ITEMS_PER_S = CONCURRENCY / LATENCY_S
SEED_PAUSE_S = 0.5
WARM_UP_ITEMS = 8

TARGET_OF_IDEAL = 0.8
TARGET_OF_NAIVE = 0.9
TARGET_OF_SEED = 50.0


def spec() -> ClusterSpec:
    """The SDK against a fake API with 0.5 s ± 20 % latency; 64 items and 64 model calls at once."""
    return ClusterSpec(model="sdk", api_latency=LATENCY_S, api_jitter=JITTER, api_seed=7)


def _requests_between(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    statuses_before, statuses_after = before["statuses"], after["statuses"]
    return {
        "total": after["total"] - before["total"],
        **{
            f"status_{code}": count - statuses_before.get(code, 0)
            for code, count in statuses_after.items()
            if count - statuses_before.get(code, 0)
        },
    }


async def _naive(base_url: str, items: int) -> dict[str, Any]:
    process = await start_python_module(
        "bench.naive_peer", "--base-url", base_url, "--items", str(items), "--concurrency", str(CONCURRENCY)
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=max(300.0, items))
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"naive peer exited with {process.returncode}: {stderr.decode(errors='replace')[-2000:]}")
    result: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    return result


async def _seed_design(cluster: Cluster, catalog: CatalogIds, items: int) -> dict[str, Any]:
    stub = cluster.stub
    job = await stub.CreateBatchJob(
        batch_pb2.CreateBatchJobRequest(
            name="seed design", combination=catalog.combination(items), concurrency=1, auto_start=False
        )
    )
    processed = 0
    start = time.perf_counter()
    while True:
        response = await stub.ProcessNext(batch_pb2.ProcessNextRequest(job_id=job.id))
        if response.HasField("item"):
            processed += 1
        if response.job_finished or not response.HasField("item"):
            break
        await asyncio.sleep(SEED_PAUSE_S)
    elapsed = time.perf_counter() - start
    completed = response.job.completed_items
    return {
        "items": items,
        "completed": completed,
        "processed_calls": processed,
        "elapsed_s": round(elapsed, 3),
        "items_per_s": round(completed / elapsed, 3) if elapsed > 0 else None,
    }


async def run(pool: ClusterPool, quick: bool) -> dict[str, Any]:
    """convgen, then the naive script, then the seed's design, against one fake API; returns the JSON line."""
    items = 64 if quick else 1280
    seed_items = 2 if quick else 20
    catalog = pool.catalog
    async with pool.cluster(spec()) as cluster:
        stub = cluster.stub
        base_url = cluster.fake_api.base_url
        await warm_up(stub, catalog, WARM_UP_ITEMS, CONCURRENCY, log_uploaded=False)

        before = await cluster.fake_api.stats()
        job = await stub.CreateBatchJob(
            batch_pb2.CreateBatchJobRequest(
                name="concurrency", combination=catalog.combination(items), concurrency=CONCURRENCY
            )
        )
        done = await wait_job(stub, job.id, within=max(300.0, items))
        elapsed = job_elapsed(done)
        convgen_ips = done.completed_items / elapsed if elapsed > 0 else None
        after_convgen = await cluster.fake_api.stats()
        convgen: dict[str, Any] = {
            "items": items,
            "completed": done.completed_items,
            "failed": done.failed_items,
            "elapsed_s": rounded(elapsed, 3),
            "items_per_s": rounded(convgen_ips, 2),
            "of_ideal": ratio(convgen_ips, IDEAL_ITEMS_PER_S),
            "model_requests": _requests_between(before, after_convgen),
        }
        if done.failed_items:
            convgen["failure_samples"] = await failure_samples(stub, job.id)
        note(f"concurrency convgen: {convgen['items_per_s']} items/s ({convgen['of_ideal']} of ideal)")
        # Let convgen's log upload and background work settle before the peer runs.
        await wait_job(stub, job.id, within=60, log_uploaded=True)

        naive = await _naive(base_url, items)
        after_naive = await cluster.fake_api.stats()
        naive["of_ideal"] = ratio(naive.get("items_per_s"), IDEAL_ITEMS_PER_S)
        naive["model_requests"] = _requests_between(after_convgen, after_naive)
        note(f"concurrency naive script: {naive['items_per_s']} items/s ({naive['of_ideal']} of ideal)")

        seed = await _seed_design(cluster, catalog, seed_items)
        seed["model_requests"] = _requests_between(after_naive, await cluster.fake_api.stats())
        note(f"concurrency seed design: {seed['items_per_s']} items/s")
    return result_line(
        NAME,
        quick,
        {
            "items": items,
            "concurrency": CONCURRENCY,
            "model_latency_s": LATENCY_S,
            "model_jitter": JITTER,
            "ideal_items_per_s": IDEAL_ITEMS_PER_S,
            "convgen": convgen,
            "naive_script": naive,
            "seed_design": seed,
            "convgen_vs_naive": ratio(convgen["items_per_s"], naive.get("items_per_s")),
            "convgen_vs_seed": ratio(convgen["items_per_s"], seed["items_per_s"], 1),
        },
    )


def rows(result: dict[str, Any]) -> list[Row]:
    """Table rows for docs/performance.md."""
    convgen, naive, seed = result["convgen"], result["naive_script"], result["seed_design"]
    ideal = result["ideal_items_per_s"]
    return [
        Row(
            NAME,
            f"convgen items/s ({result['items']} items, C={result['concurrency']}, L={result['model_latency_s']} s)",
            fmt(convgen.get("items_per_s"), "items/s"),
            f"ideal {ideal:.0f} items/s",
            notes=f"{convgen.get('failed', 0)} failed" if convgen.get("failed") else "",
        ),
        Row(
            NAME,
            "convgen ÷ ideal",
            fmt(convgen.get("of_ideal"), "", 3),
            f"≥ {TARGET_OF_IDEAL}",
            verdict(convgen.get("of_ideal"), at_least=TARGET_OF_IDEAL),
        ),
        Row(
            NAME,
            f"naive script items/s ({naive.get('items')} requests) and ÷ ideal",
            f"{fmt(naive.get('items_per_s'), 'items/s')} ({fmt(naive.get('of_ideal'), '', 3)} of ideal)",
            "—",
            notes=f"{naive.get('errors')} errors" if naive.get("errors") else "issue 6 expects about 0.83 of ideal",
        ),
        Row(
            NAME,
            "convgen ÷ naive script",
            fmt(result.get("convgen_vs_naive"), "", 3),
            f"≥ {TARGET_OF_NAIVE}",
            verdict(result.get("convgen_vs_naive"), at_least=TARGET_OF_NAIVE),
        ),
        Row(
            NAME,
            f"seed design items/s (ProcessNext + {SEED_PAUSE_S * 1000:.0f} ms pause, {seed.get('items')} items)",
            fmt(seed.get("items_per_s"), "items/s", 3),
        ),
        Row(
            NAME,
            "convgen ÷ seed design",
            fmt(result.get("convgen_vs_seed"), "×", 1),
            f"≥ {TARGET_OF_SEED:.0f}×",
            verdict(result.get("convgen_vs_seed"), at_least=TARGET_OF_SEED),
        ),
    ]


if __name__ == "__main__":
    sys.exit(standalone(NAME, run))
