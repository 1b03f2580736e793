"""Benchmark 1, overhead: model latency 0, what convgen itself costs per item.

Three configurations, each on its own cluster and fresh database: the offline model with the filesystem blob store,
the offline model with S3 (moto's server as a process, over HTTP), and the anthropic SDK against the fake Messages
API (latency 0) with the filesystem store. For each: items/s end to end (the job's created_at to its finished_at,
server timestamps) and CPU milliseconds per item of every process (CPU time read from /proc via psutil before
CreateBatchJob and after the job is terminal and its log uploaded).
"""

from __future__ import annotations

import sys
from typing import Any

from bench.cluster import ClusterPool, ClusterSpec
from bench.jobs import failure_samples, job_elapsed, wait_job, warm_up
from bench.meters import CpuMeter, per_item_ms
from bench.report import Row, fmt, note, ratio, result_line, rounded, verdict
from bench.runner import standalone
from convgen.v1 import batch_pb2

NAME = "overhead"
JOB_CONCURRENCY = 64
WARM_UP_ITEMS = 20
TARGET_ITEMS_PER_S = 300.0
TARGET_CPU_MS = 5.0

CONFIGS: dict[str, ClusterSpec] = {
    "offline_file": ClusterSpec(model="offline", blob_store="file"),
    "offline_s3": ClusterSpec(model="offline", blob_store="s3"),
    "sdk_file": ClusterSpec(model="sdk", blob_store="file", api_latency=0.0, api_seed=1),
}


async def _run_config(
    pool: ClusterPool, name: str, spec: ClusterSpec, items: int, warm_up_items: int
) -> dict[str, Any]:
    async with pool.cluster(spec) as cluster:
        stub = cluster.stub
        # Warm-up: connections, lazy imports, the SDK's first request (the pacer's probe); not measured.
        warmed = await warm_up(stub, pool.catalog, warm_up_items, JOB_CONCURRENCY)
        if warmed.failed_items:
            raise RuntimeError(f"the warm-up job failed: {await failure_samples(stub, warmed.id)}")
        stats_before = await cluster.fake_api.stats() if spec.model == "sdk" else None

        meter = CpuMeter({**cluster.pids(), "postgres": pool.postgres.postmaster_pid})
        meter.start()
        job = await stub.CreateBatchJob(
            batch_pb2.CreateBatchJobRequest(
                name=f"overhead {name}", combination=pool.catalog.combination(items), concurrency=JOB_CONCURRENCY
            )
        )
        done = await wait_job(stub, job.id, within=max(300.0, items / 5), log_uploaded=True)
        cpu = meter.seconds()
        elapsed = job_elapsed(done)
        result: dict[str, Any] = {
            "completed": done.completed_items,
            "failed": done.failed_items,
            "elapsed_s": rounded(elapsed, 3),
            "items_per_s": rounded(done.completed_items / elapsed if elapsed > 0 else None, 1),
        }
        per_item = per_item_ms(cpu, items)
        generation, batch = per_item.get("generation"), per_item.get("batch")
        per_item["services"] = None if generation is None or batch is None else round(generation + batch, 3)
        result["cpu_ms_per_item"] = per_item
        if done.failed_items:
            result["failure_samples"] = await failure_samples(stub, job.id)
        if stats_before is not None:
            stats_after = await cluster.fake_api.stats()
            result["model_requests"] = stats_after["total"] - stats_before["total"]
            result["model_429"] = stats_after["rate_limited"] - stats_before["rate_limited"]
        note(
            f"overhead {name}: {result['items_per_s']} items/s, "
            f"{per_item['services']} ms CPU/item (services), {done.failed_items} failed"
        )
        return result


async def run(pool: ClusterPool, quick: bool) -> dict[str, Any]:
    """Runs the three configurations one after the other; returns the JSON line."""
    items = 100 if quick else 2000
    warm_up_items = 5 if quick else WARM_UP_ITEMS
    runs: dict[str, Any] = {}
    for name, spec in CONFIGS.items():
        try:
            runs[name] = await _run_config(pool, name, spec, items, warm_up_items)
        except Exception as error:
            note(f"overhead {name} failed: {error!r}")
            runs[name] = {"error": f"{type(error).__name__}: {error}"}
    return result_line(
        NAME,
        quick,
        {
            "items": items,
            "model_latency_s": 0,
            "job_concurrency": JOB_CONCURRENCY,
            "warm_up_items": warm_up_items,
            "runs": runs,
        },
    )


LABELS = {
    "offline_file": "offline model + file store",
    "offline_s3": "offline model + S3 (moto)",
    "sdk_file": "SDK → fake API + file store",
}


def _failures(run_result: dict[str, Any]) -> str:
    if not run_result.get("failed"):
        return ""
    samples = run_result.get("failure_samples") or ["(no error recorded)"]
    return f"{run_result['failed']} items FAILED, e.g. {samples[0]}"


def rows(result: dict[str, Any]) -> list[Row]:
    """Table rows for docs/performance.md."""
    out: list[Row] = []
    for name, label in LABELS.items():
        run_result = result["runs"].get(name, {})
        if "error" in run_result:
            out.append(Row(NAME, f"{label}: items/s", "not measured", notes=f"failed: {run_result['error']}"))
            continue
        ips = run_result.get("items_per_s")
        cpu = run_result.get("cpu_ms_per_item", {})
        is_main = name == "offline_file"
        out.append(
            Row(
                NAME,
                f"{label}: items/s end to end ({result['items']} items)",
                fmt(ips, "items/s", 1),
                f"≥ {TARGET_ITEMS_PER_S:.0f} items/s" if is_main else "—",
                verdict(ips, at_least=TARGET_ITEMS_PER_S) if is_main else "—",
                _failures(run_result),
            )
        )
        out.append(
            Row(
                NAME,
                f"{label}: CPU ms/item, generation + batch",
                fmt(cpu.get("services"), "ms"),
                f"< {TARGET_CPU_MS:.0f} ms",
                verdict(cpu.get("services"), below=TARGET_CPU_MS),
                f"generation {fmt(cpu.get('generation'), 'ms')}, batch {fmt(cpu.get('batch'), 'ms')}",
            )
        )
        others = [
            f"{process} {fmt(cpu.get(process), 'ms')}"
            for process in ("postgres", "fake_api", "moto_s3")
            if process in cpu
        ]
        out.append(Row(NAME, f"{label}: CPU ms/item, other processes", "; ".join(others) or "—", notes="for reference"))
    ratio_s3 = ratio(
        result["runs"].get("offline_s3", {}).get("items_per_s"),
        result["runs"].get("offline_file", {}).get("items_per_s"),
    )
    if ratio_s3 is not None:
        out.append(Row(NAME, "S3 / file throughput", fmt(ratio_s3, "", 2), notes="same offline model"))
    return out


if __name__ == "__main__":
    sys.exit(standalone(NAME, run))
