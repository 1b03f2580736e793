"""Benchmark 4, progress latency: from the commit of an item's completion to a WatchBatchJob watcher receiving it.

Method. Each measured job is created with auto_start=false; the watchers (bench.watch_client processes, 50
watchers each, one channel per watcher) open their streams and receive the snapshot; then ResumeBatchJob starts
the job. For every ITEM COMPLETED event each watcher records its receive time (time.time()). Commit time is
bracketed from both sides, on the same machine clock:
- upper bound of the latency: receive time − the event row's created_at (clock_timestamp() at INSERT, which is
  before the commit: the rest of the transaction and the COMMIT itself are counted in);
- lower bound: receive time − the time the bench's own LISTEN connection (asyncpg, in the bench process) got the
  NOTIFY that the same INSERT statement sends, which PostgreSQL delivers only after the commit.
The table reports the upper bound (conservative); the JSON line has both.

Two phases on one cluster (the SDK against the fake Messages API):
- paced: model latency 0.5 s ± 20 %, concurrency 64 (about 128 completions/s, the concurrency benchmark's load):
  latency with 1 and with 100 watchers;
- moderate: the same model latency at concurrency 8 (about 16 completions/s), 100 watchers: the latency of the
  notification path when the watchers' fan-out is not CPU-bound (the paced phase's 100 watchers are: every event
  is written to 100 streams, and gRPC's per-message cost in Python, on both ends, exceeds the 2 cores);
- saturated: model latency 0 (the services use all the CPU they can): items/s with 0 and with 100 watchers, same
  job size; throughput cost = 1 − (items/s with 100) ÷ (items/s with 0). Items/s here is started_at → finished_at.
The watcher processes share the 2 cores with the services; their CPU time is in the JSON line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from batch_service.store.events import EVENTS_CHANNEL
from bench.cluster import Cluster, ClusterPool, ClusterSpec
from bench.jobs import failure_samples, job_elapsed, wait_job, warm_up
from bench.meters import percentile
from bench.report import Row, fmt, note, ratio, result_line, rounded, verdict
from bench.runner import standalone
from convgen.v1 import batch_pb2
from tests.support.checkout import ROOT
from tests.support.demo_catalog import CatalogIds

NAME = "progress_latency"
CONCURRENCY = 64
PACED_LATENCY_S = 0.5
JITTER = 0.2
WATCHERS_PER_PROCESS = 50
# The moderate phase: 8 items at once at 0.5 s each, about 16 completions/s (some 40 events/s per watcher).
MODERATE_CONCURRENCY = 8
MANY = 100
WARM_UP_ITEMS = 8

TARGET_P99_MS = 50.0
TARGET_COST = 0.10


class CommitListener:
    """LISTENs on the events channel and notes when each (job, sequence) notification arrived."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: asyncpg.Connection[Any] | None = None
        self.arrivals: dict[str, dict[int, float]] = {}

    def _on_notify(self, connection: Any, pid: int, channel: str, payload: object) -> None:
        now = time.time()
        job, _, sequence = str(payload).partition(":")
        if sequence.isdigit():
            self.arrivals.setdefault(job, {})[int(sequence)] = now

    async def start(self) -> None:
        """Connects and listens."""
        self._conn = await asyncpg.connect(self._dsn)
        await self._conn.add_listener(EVENTS_CHANNEL, self._on_notify)

    async def close(self) -> None:
        """Disconnects."""
        if self._conn is not None:
            await self._conn.close()


async def _start_watchers(
    target: str, job_id: str, watchers: int, workdir: Path
) -> list[tuple[asyncio.subprocess.Process, Path]]:
    clients: list[tuple[asyncio.subprocess.Process, Path]] = []
    remaining = watchers
    index = 0
    try:
        while remaining > 0:
            count = min(WATCHERS_PER_PROCESS, remaining)
            remaining -= count
            ready, out = workdir / f"watchers-{index}.ready", workdir / f"watchers-{index}.json"
            log = (workdir / f"watchers-{index}.log").open("wb")
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.watch_client",
                "--target",
                target,
                "--job",
                job_id,
                "--watchers",
                str(count),
                "--ready-file",
                str(ready),
                "--out",
                str(out),
                cwd=ROOT,
                stderr=log,
            )
            log.close()
            clients.append((process, out))
            index += 1
        deadline = time.monotonic() + 120
        for n, (process, _) in enumerate(clients):
            ready = workdir / f"watchers-{n}.ready"
            while not ready.exists():
                if process.returncode is not None:
                    tail = (workdir / f"watchers-{n}.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"watcher process exited with {process.returncode}: {tail}")
                if time.monotonic() > deadline:
                    raise TimeoutError("watchers did not get their snapshots within 120 s")
                await asyncio.sleep(0.02)
    except BaseException:
        await _stop_watchers(clients)
        raise
    return clients


async def _stop_watchers(clients: list[tuple[asyncio.subprocess.Process, Path]]) -> None:
    for process, _ in clients:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


async def _measure(
    cluster: Cluster,
    catalog: CatalogIds,
    listener: CommitListener,
    *,
    items: int,
    watchers: int,
    label: str,
    concurrency: int = CONCURRENCY,
) -> dict[str, Any]:
    """One job with `watchers` watchers: throughput and commit→receive latencies of completion events."""
    stub = cluster.stub
    job = await stub.CreateBatchJob(
        batch_pb2.CreateBatchJobRequest(
            name=f"progress {label}, {watchers} watchers",
            combination=catalog.combination(items),
            concurrency=concurrency,
            auto_start=False,
        )
    )
    with tempfile.TemporaryDirectory(prefix="convgen-bench-watch-") as tmp:
        clients = await _start_watchers(cluster.batch_address, job.id, watchers, Path(tmp)) if watchers else []
        try:
            await stub.ResumeBatchJob(batch_pb2.ResumeBatchJobRequest(job_id=job.id))
            done = await wait_job(stub, job.id, within=max(300.0, items))
            outputs = []
            for process, out in clients:
                await asyncio.wait_for(process.wait(), timeout=120)
                if process.returncode != 0:
                    raise RuntimeError(f"watcher process exited with {process.returncode}")
                outputs.append(json.loads(out.read_text()))
        finally:
            await _stop_watchers(clients)
    await wait_job(stub, job.id, within=60, log_uploaded=True)
    elapsed = job_elapsed(done, since="started")
    result: dict[str, Any] = {
        "watchers": watchers,
        "items": items,
        "concurrency": concurrency,
        "completed": done.completed_items,
        "failed": done.failed_items,
        "elapsed_s": rounded(elapsed, 3),
        "items_per_s": rounded(done.completed_items / elapsed if elapsed > 0 else None, 1),
    }
    if done.failed_items:
        result["failure_samples"] = await failure_samples(stub, job.id)
    if watchers:
        arrivals = listener.arrivals.get(job.id, {})
        upper: list[float] = []
        lower: list[float] = []
        for output in outputs:
            for stream in output["completed"]:
                for sequence, received_at, event_time in stream:
                    upper.append((received_at - event_time) * 1000)
                    if sequence in arrivals:
                        lower.append((received_at - arrivals[sequence]) * 1000)
        expected = done.completed_items * watchers
        result.update(
            {
                "samples": len(upper),
                "missing_samples": expected - len(upper),
                "latency_ms": {
                    "p50": rounded(percentile(upper, 0.5), 1),
                    "p99": rounded(percentile(upper, 0.99), 1),
                    "max": rounded(max(upper) if upper else None, 1),
                },
                "latency_ms_lower_bound": {
                    "p50": rounded(percentile(lower, 0.5), 1),
                    "p99": rounded(percentile(lower, 0.99), 1),
                    "samples": len(lower),
                },
                "watcher_messages": sum(o["messages"] for o in outputs),
                "watcher_cpu_s": rounded(sum(o["cpu_s"] for o in outputs), 2),
            }
        )
        note(
            f"progress {label}: {watchers} watcher(s): p50 {result['latency_ms']['p50']} ms, "
            f"p99 {result['latency_ms']['p99']} ms, {result['items_per_s']} items/s"
        )
    else:
        note(f"progress {label}: no watchers: {result['items_per_s']} items/s")
    return result


async def run(pool: ClusterPool, quick: bool) -> dict[str, Any]:
    """The paced phase (latency with 1 and 100 watchers), then the saturated phase (throughput with 0 and 100)."""
    paced_items = 32 if quick else 1280
    moderate_items = 16 if quick else 320
    saturated_items = 50 if quick else 1000
    spec = ClusterSpec(model="sdk", api_latency=PACED_LATENCY_S, api_jitter=JITTER, api_seed=11)
    catalog = pool.catalog
    async with pool.cluster(spec) as cluster:
        listener = CommitListener(cluster.dsn)
        await listener.start()
        try:
            await warm_up(cluster.stub, catalog, WARM_UP_ITEMS, CONCURRENCY)
            paced: dict[str, Any] = {
                "model_latency_s": PACED_LATENCY_S,
                "items": paced_items,
                "watchers_1": await _measure(cluster, catalog, listener, items=paced_items, watchers=1, label="paced"),
                f"watchers_{MANY}": await _measure(
                    cluster, catalog, listener, items=paced_items, watchers=MANY, label="paced"
                ),
            }
            moderate = await _measure(
                cluster,
                catalog,
                listener,
                items=moderate_items,
                watchers=MANY,
                label="moderate",
                concurrency=MODERATE_CONCURRENCY,
            )
            await cluster.fake_api.configure(latency_seconds=0.0, latency_jitter=0.0)
            saturated: dict[str, Any] = {
                "model_latency_s": 0,
                "items": saturated_items,
                "watchers_0": await _measure(
                    cluster, catalog, listener, items=saturated_items, watchers=0, label="saturated"
                ),
                f"watchers_{MANY}": await _measure(
                    cluster, catalog, listener, items=saturated_items, watchers=MANY, label="saturated"
                ),
            }
        finally:
            await listener.close()
    one, many = paced["watchers_1"], paced[f"watchers_{MANY}"]
    ips0, ips_many = saturated["watchers_0"]["items_per_s"], saturated[f"watchers_{MANY}"]["items_per_s"]
    share = ratio(ips_many, ips0, 4)
    return result_line(
        NAME,
        quick,
        {
            "method": "upper bound: receive − event created_at; lower bound: receive − bench LISTEN arrival",
            "p50_ms_1_watcher": one["latency_ms"]["p50"],
            "p99_ms_1_watcher": one["latency_ms"]["p99"],
            f"p50_ms_{MANY}_watchers": many["latency_ms"]["p50"],
            f"p99_ms_{MANY}_watchers": many["latency_ms"]["p99"],
            f"p99_ms_{MANY}_watchers_moderate": moderate["latency_ms"]["p99"],
            "items_per_s_0_watchers": ips0,
            f"items_per_s_{MANY}_watchers": ips_many,
            "throughput_cost": None if share is None else round(1 - share, 4),
            "paced": paced,
            "moderate": moderate,
            "saturated": saturated,
        },
    )


def _latency_row(result: dict[str, Any], watchers: int) -> list[Row]:
    key = f"watchers_{watchers}"
    measured = result["paced"][key]
    latency, lower = measured["latency_ms"], measured["latency_ms_lower_bound"]
    target = f"< {TARGET_P99_MS:.0f} ms" if watchers == MANY else "—"
    missing = f"; {measured['missing_samples']} events not received" if measured.get("missing_samples") else ""
    plural = "s" if watchers > 1 else ""
    return [
        Row(
            NAME,
            f"commit → watcher p50, {watchers} watcher{plural} (paced, {result['paced']['items']} items)",
            fmt(latency["p50"], "ms", 1),
            notes=f"lower bound {fmt(lower['p50'], 'ms', 1)}",
        ),
        Row(
            NAME,
            f"commit → watcher p99, {watchers} watcher{plural} (paced)",
            fmt(latency["p99"], "ms", 1),
            target,
            verdict(latency["p99"], below=TARGET_P99_MS) if watchers == MANY else "—",
            f"lower bound {fmt(lower['p99'], 'ms', 1)}; max {fmt(latency['max'], 'ms', 1)}{missing}",
        ),
    ]


def _moderate_row(result: dict[str, Any]) -> Row:
    measured = result["moderate"]
    latency, lower = measured["latency_ms"], measured["latency_ms_lower_bound"]
    return Row(
        NAME,
        f"commit → watcher p99, {MANY} watchers, moderate load ({measured['items']} items, concurrency "
        f"{measured['concurrency']}: {fmt(measured['items_per_s'], 'items/s', 1)})",
        fmt(latency["p99"], "ms", 1),
        f"< {TARGET_P99_MS:.0f} ms",
        verdict(latency["p99"], below=TARGET_P99_MS),
        f"p50 {fmt(latency['p50'], 'ms', 1)}; lower bound p99 {fmt(lower['p99'], 'ms', 1)}; "
        f"max {fmt(latency['max'], 'ms', 1)}",
    )


def rows(result: dict[str, Any]) -> list[Row]:
    """Table rows for docs/performance.md."""
    saturated_many = result["saturated"][f"watchers_{MANY}"]
    cost = result.get("throughput_cost")
    return [
        *_latency_row(result, 1),
        *_latency_row(result, MANY),
        _moderate_row(result),
        Row(
            NAME,
            f"throughput cost of {MANY} watchers (model latency 0, {result['saturated']['items']} items)",
            "not measured" if cost is None else f"{cost * 100:.1f} %",
            f"< {TARGET_COST * 100:.0f} %",
            verdict(cost, below=TARGET_COST),
            f"{fmt(result['items_per_s_0_watchers'], 'items/s', 1)} with 0 vs "
            f"{fmt(result[f'items_per_s_{MANY}_watchers'], 'items/s', 1)} with {MANY}; watcher clients used "
            f"{fmt(saturated_many.get('watcher_cpu_s'), 's', 1)} CPU on the same cores; "
            f"p99 there {fmt(saturated_many['latency_ms']['p99'], 'ms', 0)}",
        ),
    ]


if __name__ == "__main__":
    sys.exit(standalone(NAME, run))
