"""Benchmark 3, rate-limit adherence: the fake Messages API allows 600 requests/minute and answers 429 above it.

The fake's limiter is a token bucket (rate 10/s, capacity rpm/60 = 10) that sends anthropic-ratelimit-requests-*
headers and retry-after on its 429s. convgen runs with default settings (MODEL_REQUESTS_PER_MINUTE=0: the pace is
learned from the headers), a 300-item job at concurrency 64, model latency 0.5 s ± 20 %. Achieved rate: completed
items (one successful model request each) per second, from the job's created_at to its finished_at, divided by the
allowed 10/s; 429 share: the fake's own count of 429 answers (GET /_fake/stats) over all requests of the job.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from bench.cluster import ClusterPool, ClusterSpec
from bench.jobs import failure_samples, job_elapsed, wait_job, warm_up
from bench.report import Row, fmt, note, ratio, result_line, rounded, verdict
from bench.runner import standalone
from convgen.v1 import batch_pb2

NAME = "rate_limit"
RPM = 600
ALLOWED_PER_S = RPM / 60
LATENCY_S = 0.5
JITTER = 0.2
CONCURRENCY = 64
WARM_UP_ITEMS = 1

TARGET_OF_ALLOWED = 0.9
TARGET_SHARE_429 = 0.05


async def run(pool: ClusterPool, quick: bool) -> dict[str, Any]:
    """One job against the rate-limited fake; returns the JSON line."""
    items = 30 if quick else 300
    spec = ClusterSpec(model="sdk", api_latency=LATENCY_S, api_jitter=JITTER, api_seed=3, api_rpm=RPM)
    async with pool.cluster(spec) as cluster:
        stub = cluster.stub
        # Warm-up: one item (the pacer's probe learns the limit from its headers); then let the bucket refill.
        await warm_up(stub, pool.catalog, WARM_UP_ITEMS, CONCURRENCY)
        await asyncio.sleep(1.5)
        before = await cluster.fake_api.stats()
        job = await stub.CreateBatchJob(
            batch_pb2.CreateBatchJobRequest(
                name="rate limit", combination=pool.catalog.combination(items), concurrency=CONCURRENCY
            )
        )
        done = await wait_job(stub, job.id, within=max(300.0, items / ALLOWED_PER_S * 5))
        after = await cluster.fake_api.stats()
        failures = await failure_samples(stub, job.id) if done.failed_items else []
    elapsed = job_elapsed(done)
    achieved = done.completed_items / elapsed if elapsed > 0 else None
    requests = after["total"] - before["total"]
    rejected = after["rate_limited"] - before["rate_limited"]
    ok = after["statuses"].get("200", 0) - before["statuses"].get("200", 0)
    figures = {
        "items": items,
        "rpm": RPM,
        "allowed_per_s": ALLOWED_PER_S,
        "model_latency_s": LATENCY_S,
        "concurrency": CONCURRENCY,
        "settings": "defaults (MODEL_REQUESTS_PER_MINUTE=0: limit learned from response headers)",
        "completed": done.completed_items,
        "failed": done.failed_items,
        **({"failure_samples": failures} if failures else {}),
        "elapsed_s": rounded(elapsed, 3),
        "achieved_per_s": rounded(achieved, 3),
        "of_allowed": ratio(achieved, ALLOWED_PER_S),
        "requests": requests,
        "requests_ok": ok,
        "requests_429": rejected,
        "share_429": ratio(rejected, requests, 4),
    }
    note(f"rate limit: {figures['of_allowed']} of allowed, {rejected}/{requests} answered 429")
    return result_line(NAME, quick, figures)


def rows(result: dict[str, Any]) -> list[Row]:
    """Table rows for docs/performance.md."""
    share = result.get("share_429")
    return [
        Row(
            NAME,
            f"achieved ÷ allowed rate ({result['items']} items, {result['rpm']} rpm = {result['allowed_per_s']:.0f}/s)",
            fmt(result.get("of_allowed"), "", 3),
            f"≥ {TARGET_OF_ALLOWED}",
            verdict(result.get("of_allowed"), at_least=TARGET_OF_ALLOWED),
            f"{fmt(result.get('achieved_per_s'), 'items/s')}; {result.get('failed', 0)} failed; default settings",
        ),
        Row(
            NAME,
            "share of model requests answered 429",
            "not measured" if share is None else f"{share * 100:.1f} % ({result['requests_429']}/{result['requests']})",
            f"≤ {TARGET_SHARE_429 * 100:.0f} %",
            "not measured" if share is None else ("yes" if share <= TARGET_SHARE_429 else "no"),
        ),
    ]


if __name__ == "__main__":
    sys.exit(standalone(NAME, run))
