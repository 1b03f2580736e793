"""Benchmark 7, output-token pacing: the fake Messages API allows 600 requests but only OTPM output tokens a minute.

Conversations of ~3,000 output tokens make the output-token limit bind at ~3 requests a second, well before the
request limit (10 a second). The fake applies the limit as the API does: each request is charged its max_tokens
(8,192) when it starts and corrected to its real output when it ends, from a bucket refilled continuously; its
bucket holds BURST_SECONDS of the rate (the API's holds a minute: a short bucket makes the limit bind within a short
run, and convgen, which assumes the API's minute, must follow the `remaining` headers). convgen runs with default
settings: the limits are learned from the response headers. Achieved rate: the job's output tokens over its elapsed
time, divided by what the fake allowed in that time (its bucket plus its rate × the time); 429 share: the fake's own
count of 429 answers over all requests of the job.
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

NAME = "output_pacing"
RPM = 600
OUTPUT_TOKENS_PER_MINUTE = 600_000
BURST_SECONDS = 5.0
OUTPUT_TOKENS = 3000
LATENCY_S = 0.5
JITTER = 0.2
CONCURRENCY = 64
TARGET_OF_ALLOWED = 0.9
TARGET_SHARE_429 = 0.05


async def run(pool: ClusterPool, quick: bool) -> dict[str, Any]:
    """One job against the output-token-limited fake; returns the JSON line."""
    items = 30 if quick else 300
    spec = ClusterSpec(
        model="sdk",
        api_latency=LATENCY_S,
        api_jitter=JITTER,
        api_seed=5,
        api_rpm=RPM,
        api_config={
            "output_tokens_per_minute": OUTPUT_TOKENS_PER_MINUTE,
            "token_burst_seconds": BURST_SECONDS,
            "output_tokens": OUTPUT_TOKENS,
        },
    )
    rate = OUTPUT_TOKENS_PER_MINUTE / 60
    async with pool.cluster(spec) as cluster:
        stub = cluster.stub
        # Warm-up: one item (the pacer's probe learns the limits from its headers); then let the bucket refill.
        await warm_up(stub, pool.catalog, 1, 1)
        await asyncio.sleep(BURST_SECONDS + 1)
        before = await cluster.fake_api.stats()
        job = await stub.CreateBatchJob(
            batch_pb2.CreateBatchJobRequest(
                name="output pacing", combination=pool.catalog.combination(items), concurrency=CONCURRENCY
            )
        )
        done = await wait_job(stub, job.id, within=max(300.0, items * OUTPUT_TOKENS / rate * 4))
        after = await cluster.fake_api.stats()
        failures = await failure_samples(stub, job.id) if done.failed_items else []
    elapsed = job_elapsed(done)
    output = done.usage.output_tokens
    allowed = rate * BURST_SECONDS + rate * elapsed
    requests = after["total"] - before["total"]
    rejected = after["rate_limited"] - before["rate_limited"]
    figures = {
        "items": items,
        "rpm": RPM,
        "output_tokens_per_minute": OUTPUT_TOKENS_PER_MINUTE,
        "burst_seconds": BURST_SECONDS,
        "output_tokens_per_conversation": OUTPUT_TOKENS,
        "model_latency_s": LATENCY_S,
        "concurrency": CONCURRENCY,
        "settings": "defaults (limits learned from the response headers)",
        "completed": done.completed_items,
        "failed": done.failed_items,
        **({"failure_samples": failures} if failures else {}),
        "elapsed_s": rounded(elapsed, 3),
        "output_tokens": output,
        "output_tokens_per_s": rounded(output / elapsed if elapsed > 0 else None, 1),
        "allowed_output_tokens": round(allowed),
        "of_allowed": ratio(output, allowed),
        "requests_per_s": rounded(requests / elapsed if elapsed > 0 else None, 2),
        "requests": requests,
        "requests_429": rejected,
        "share_429": ratio(rejected, requests, 4),
    }
    note(f"output pacing: {figures['of_allowed']} of allowed output tokens, {rejected}/{requests} answered 429")
    return result_line(NAME, quick, figures)


def rows(result: dict[str, Any]) -> list[Row]:
    """Table rows for docs/performance.md."""
    share = result.get("share_429")
    limit = f"{result['output_tokens_per_minute']:,} output tokens/min, {result['rpm']} rpm"
    size = f"{result['items']} items of ~{result['output_tokens_per_conversation']:,} output tokens"
    speed = f"{fmt(result.get('output_tokens_per_s'), 'tokens/s')} at {fmt(result.get('requests_per_s'), 'requests/s')}"
    return [
        Row(
            NAME,
            f"achieved ÷ allowed output-token rate ({size}; {limit})",
            fmt(result.get("of_allowed"), "", 3),
            f"≥ {TARGET_OF_ALLOWED}",
            verdict(result.get("of_allowed"), at_least=TARGET_OF_ALLOWED),
            f"{speed}; {result.get('failed', 0)} failed; default settings",
        ),
        Row(
            NAME,
            "share of model requests answered 429 (output-token limit binding)",
            "not measured" if share is None else f"{share * 100:.1f} % ({result['requests_429']}/{result['requests']})",
            f"≤ {TARGET_SHARE_429 * 100:.0f} %",
            "not measured" if share is None else ("yes" if share <= TARGET_SHARE_429 else "no"),
        ),
    ]


if __name__ == "__main__":
    sys.exit(standalone(NAME, run))
