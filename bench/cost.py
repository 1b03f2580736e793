"""Benchmark 6, cost: what 1,000 conversations of the reference workload cost, convgen (realtime) vs the naive script.

The reference workload is issue 12's: 5 personas × 5 arcs × 40 topics = 1,000 items at concurrency 32. One fake
Messages API process serves both, one after the other, configured like the real API where it matters for cost:
prompt caching by prefix (minimum 1,024 tokens, 5-minute TTL, entries readable once the writing response begins),
conversations of ~OUTPUT_TOKENS output tokens, and thinking tokens that depend on the effort (billed as output; the
levels are ASSUMED, see THINKING_TOKENS: the real model's are not published). convgen runs with its defaults
(prompt laid out for caching, MODEL_EFFORT=medium, structured output). The naive script sends the same rendered
prompts (contract as the system prompt, then the template and topic) without cache_control and without an effort
setting (the API's default, high). Costs are priced with convgen's price table (claude-sonnet-5-5: $2 / $10 per
million input / output tokens, 5-minute cache writes $2.50, reads $0.20).
"""

from __future__ import annotations

import sys
import uuid
from decimal import Decimal
from typing import Any

import asyncpg

from bench import naive_peer
from bench.cluster import ClusterPool, ClusterSpec
from bench.jobs import wait_job
from bench.report import Row, fmt, note, ratio, result_line, rounded, verdict
from bench.runner import standalone
from convgen.catalog import repository
from convgen.catalog.models import GenerationParameters, Tier
from convgen.catalog.templates import render
from convgen.pricing import TokenUsage, load_price_table
from convgen.v1 import batch_pb2
from generation_service.catalog_cache import resolve
from generation_service.conversation_format import SYSTEM_PROMPT

NAME = "cost"
MODEL = "claude-sonnet-5-5"
CONCURRENCY = 32
OUTPUT_TOKENS = 3000
# Thinking tokens per effort level, as the stand-in bills them (an assumption: adaptive thinking at the API's default
# effort, high, thinks on almost every call; lower effort thinks less or not at all).
THINKING_TOKENS = {"low": 0, "medium": 300, "high": 1200, "xhigh": 2400, "max": 4800}
LATENCY_S = 0.3
TARGET_HIT_RATIO = 0.7
TARGET_ESTIMATE_ERROR = 0.25


def spec() -> ClusterSpec:
    """The cluster: the SDK against a fake API that caches like the real one, with sized replies and thinking."""
    return ClusterSpec(
        model="sdk",
        api_latency=LATENCY_S,
        api_jitter=0.2,
        api_seed=12,
        api_config={"output_tokens": OUTPUT_TOKENS, "thinking_tokens": THINKING_TOKENS, "min_cacheable_tokens": 1024},
    )


async def naive_prompts(dsn: str, combination: batch_pb2.Combination) -> list[tuple[str, str]]:
    """The prompts of the job's items, rendered as convgen renders them, in item order (persona, arc, topic)."""
    conn = await asyncpg.connect(dsn)
    try:
        snapshot = await repository.snapshot(conn)
    finally:
        await conn.close()
    prompts = []
    for persona in combination.persona_ids:
        for arc in combination.emotional_arc_ids:
            for topic in combination.training_topic_ids:
                parameters = GenerationParameters(
                    uuid.UUID(persona), uuid.UUID(arc), uuid.UUID(topic), Tier.TEMPLATE, uuid.UUID(int=0)
                )
                subject, template = resolve(snapshot, parameters)
                rendered = render(template, subject)
                prompts.append((SYSTEM_PROMPT, f"{rendered.shared}\n\n{rendered.topic}"))
    return prompts


def per_thousand(cost: Decimal | float | None, items: int) -> float | None:
    """A cost scaled to 1,000 conversations."""
    return None if cost is None or items == 0 else round(float(cost) * 1000 / items, 4)


async def run(pool: ClusterPool, quick: bool) -> dict[str, Any]:
    """convgen's reference job (with its validate_only estimate first), then the naive script; the JSON line."""
    items = 50 if quick else 1000
    combination = pool.catalog.combination(items)
    prices = load_price_table()
    async with pool.cluster(spec()) as cluster:
        stub = cluster.stub
        # Earlier conversations of the same templates, so that the estimate has observed output sizes.
        catalog = pool.catalog
        earlier = batch_pb2.Combination(
            persona_ids=catalog.persona_ids[:1],
            emotional_arc_ids=catalog.arc_ids,
            training_topic_ids=catalog.topic_ids[-1:],
            tier=combination.tier,
        )
        warm = await stub.CreateBatchJob(
            batch_pb2.CreateBatchJobRequest(name="earlier conversations", combination=earlier, concurrency=5)
        )
        await wait_job(stub, warm.id, within=120)
        request = batch_pb2.CreateBatchJobRequest(
            name="reference job", combination=combination, concurrency=CONCURRENCY
        )
        preview = await stub.CreateBatchJob(
            batch_pb2.CreateBatchJobRequest(
                name="reference job", combination=combination, concurrency=CONCURRENCY, validate_only=True
            )
        )
        job = await stub.CreateBatchJob(request)
        done = await wait_job(stub, job.id, within=max(600.0, items * 2))
        naive = await naive_peer.run_prompts(
            cluster.fake_api.base_url, await naive_prompts(cluster.dsn, combination), CONCURRENCY, model=MODEL
        )
    usage = naive["usage"]
    naive_cost = prices.cost(
        MODEL,
        TokenUsage(
            input_tokens=usage["input_tokens"],
            output_tokens=usage["output_tokens"],
            cache_creation_5m_input_tokens=usage["cache_creation_input_tokens"],
            cache_read_input_tokens=usage["cache_read_input_tokens"],
        ),
    )
    convgen_per_1000 = per_thousand(done.cost_usd, done.completed_items)
    naive_per_1000 = per_thousand(naive_cost.usd, naive["ok"])
    estimate = preview.estimate
    figures = {
        "items": items,
        "workload": f"{len(combination.persona_ids)} personas x {len(combination.emotional_arc_ids)} arcs x "
        f"{len(combination.training_topic_ids)} topics, concurrency {CONCURRENCY}",
        "stand_in": {
            "output_tokens_per_conversation": OUTPUT_TOKENS,
            "thinking_tokens_by_effort_assumed": THINKING_TOKENS,
            "min_cacheable_tokens": 1024,
            "latency_s": LATENCY_S,
        },
        "price_table": prices.version,
        "convgen": {
            "completed": done.completed_items,
            "failed": done.failed_items,
            "cost_usd": rounded(done.cost_usd, 6),
            "cost_per_1000_usd": convgen_per_1000,
            "cache_hit_ratio": rounded(done.cache_hit_ratio, 4),
            "tokens": {
                "input": done.usage.input_tokens,
                "cache_write_5m": done.usage.cache_creation_5m_input_tokens,
                "cache_write_1h": done.usage.cache_creation_1h_input_tokens,
                "cache_read": done.usage.cache_read_input_tokens,
                "output": done.usage.output_tokens,
            },
            "cost_by_kind_usd": {
                "input": rounded(done.cost_breakdown.input_usd, 6),
                "cache_write": rounded(
                    done.cost_breakdown.cache_write_5m_usd + done.cost_breakdown.cache_write_1h_usd, 6
                ),
                "cache_read": rounded(done.cost_breakdown.cache_read_usd, 6),
                "output": rounded(done.cost_breakdown.output_usd, 6),
            },
            "estimate_cost_usd": rounded(estimate.cost_usd, 6),
            "estimate_error": ratio(abs(estimate.cost_usd - done.cost_usd), done.cost_usd, 4),
            "estimate_batch_cost_per_1000_usd": per_thousand(estimate.batch_cost_usd, estimate.items),
        },
        "naive_script": {
            "completed": naive["ok"],
            "errors": naive["errors"],
            "first_error": naive["first_error"],
            "cost_usd": rounded(float(naive_cost.usd or 0), 6),
            "cost_per_1000_usd": naive_per_1000,
            "tokens": usage,
        },
        "convgen_vs_naive": ratio(convgen_per_1000, naive_per_1000),
    }
    note(f"cost: convgen ${convgen_per_1000}/1000, naive ${naive_per_1000}/1000, hit ratio {done.cache_hit_ratio:.3f}")
    return result_line(NAME, quick, figures)


def rows(result: dict[str, Any]) -> list[Row]:
    """Table rows for docs/performance.md."""
    convgen, naive = result["convgen"], result["naive_script"]
    workload = result["workload"]
    assumed = "thinking tokens per effort assumed (see bench/cost.py)"
    return [
        Row(
            NAME,
            f"cost per 1,000 conversations, convgen realtime ({workload})",
            fmt(convgen.get("cost_per_1000_usd"), "USD", 2),
            "—",
            "—",
            f"cache hit ratio {convgen.get('cache_hit_ratio')}; effort medium; {assumed}",
        ),
        Row(
            NAME,
            "cost per 1,000 conversations, naive script (no cache_control, no effort)",
            fmt(naive.get("cost_per_1000_usd"), "USD", 2),
            "—",
            "—",
            "same stand-in, same run, same prompts",
        ),
        Row(
            NAME,
            "convgen ÷ naive script, cost",
            fmt(result.get("convgen_vs_naive"), "", 3),
            "< 1",
            verdict(result.get("convgen_vs_naive"), below=1.0),
        ),
        Row(
            NAME,
            "prompt-cache hit ratio of the reference job",
            fmt(convgen.get("cache_hit_ratio"), "", 3),
            f"≥ {TARGET_HIT_RATIO}",
            verdict(convgen.get("cache_hit_ratio"), at_least=TARGET_HIT_RATIO),
            "cache reads ÷ (reads + writes + uncached input)",
        ),
        Row(
            NAME,
            "validate_only estimate vs actual cost (relative error)",
            fmt(convgen.get("estimate_error"), "", 3),
            f"≤ {TARGET_ESTIMATE_ERROR}",
            verdict(convgen.get("estimate_error"), below=TARGET_ESTIMATE_ERROR + 1e-9),
            f"estimate ${convgen.get('estimate_cost_usd')}; through provider batches "
            f"${convgen.get('estimate_batch_cost_per_1000_usd')}/1,000",
        ),
    ]


if __name__ == "__main__":
    sys.exit(standalone(NAME, run))
