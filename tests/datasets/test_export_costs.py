"""The dataset report's tokens and cost by kind (issue 12's columns) over conversations made through the real SDK
against the stand-in, which caches like the API: the sums of the stored conversations, and each convgen line's."""

from __future__ import annotations

import uuid
from decimal import Decimal
from pathlib import Path

from convgen.v1 import dataset_pb2
from tests.batch.test_engine_guarantees import claude_services
from tests.datasets.helpers import (
    completed_job,
    dataset_stub,
    demo_combination,
    export_request,
    lines,
    read_file,
    run_export,
)
from tests.support.messages_api import FakeMessagesApi
from tests.support.postgres import fetch

STORED = """
    SELECT sum(input_tokens) AS input, sum(output_tokens) AS output, sum(cache_read_input_tokens) AS reads,
           sum(cache_creation_5m_input_tokens) AS writes_5m, sum(cache_creation_1h_input_tokens) AS writes_1h,
           sum(cost_usd) AS cost, sum(input_cost_usd) AS input_cost, sum(output_cost_usd) AS output_cost,
           sum(cache_write_5m_cost_usd) AS write_5m_cost, sum(cache_write_1h_cost_usd) AS write_1h_cost,
           sum(cache_read_cost_usd) AS read_cost
    FROM conversations
"""


async def test_the_report_and_the_lines_split_tokens_and_cost_by_kind_as_stored(
    database_url: str, tmp_path: Path, fake_api: FakeMessagesApi
) -> None:
    fake_api.update_config({"latency_seconds": 0.01})
    # 1-hour cache writes: a report that swapped the two TTLs would show 5-minute writes.
    async with claude_services(database_url, tmp_path, fake_api, model_cache_ttl="1h") as services:
        job = await completed_job(services, demo_combination(personas=1, arcs=5, topics=4), concurrency=4)
        assert job.completed_items == 20
        stub = dataset_stub(services)
        done = await run_export(stub, export_request([job.id], "convgen"))
        export = await stub.GetExport(
            dataset_pb2.GetExportRequest(export_id=done.id, view=dataset_pb2.EXPORT_VIEW_FULL)
        )
        rows = lines(await read_file(stub, done.id, "train.jsonl")) + lines(
            await read_file(stub, done.id, "eval.jsonl")
        )
        card = (await read_file(stub, done.id, "report.md")).decode()

    (stored,) = await fetch(database_url, STORED)
    assert stored["writes_1h"] > 0
    assert stored["reads"] > 0
    assert stored["writes_5m"] == 0
    usage = export.report.usage
    for tokens, cost, by_kind in (
        (usage.selected_usage, usage.selected_cost_usd, usage.selected_cost_breakdown),
        (usage.exported_usage, usage.exported_cost_usd, usage.exported_cost_breakdown),
    ):
        assert (tokens.input_tokens, tokens.output_tokens, tokens.cache_read_input_tokens) == (
            stored["input"],
            stored["output"],
            stored["reads"],
        )
        assert (tokens.cache_creation_5m_input_tokens, tokens.cache_creation_1h_input_tokens) == (
            0,
            stored["writes_1h"],
        )
        assert Decimal(repr(cost)) == stored["cost"]
        assert [Decimal(repr(v)) for v in (by_kind.input_usd, by_kind.output_usd, by_kind.cache_read_usd)] == [
            stored["input_cost"],
            stored["output_cost"],
            stored["read_cost"],
        ]
        assert (Decimal(repr(by_kind.cache_write_1h_usd)), by_kind.cache_write_5m_usd) == (stored["write_1h_cost"], 0)
    assert usage.selected_unknown_cost == 0
    assert f"{stored['write_1h_cost']:.6f}" in card, "report.md shows the cost of 1-hour cache writes"

    assert len(rows) == 20
    for row in rows:
        (one,) = await fetch(
            database_url,
            "SELECT cost_usd, cache_write_1h_cost_usd, cache_creation_1h_input_tokens FROM conversations WHERE id = $1",
            uuid.UUID(row["pk"]),
        )
        assert Decimal(row["cost_usd"]) == one["cost_usd"]
        assert Decimal(row["cost_by_kind_usd"]["cache_write_1h"]) == one["cache_write_1h_cost_usd"]
        assert row["usage"]["cache_creation"]["ephemeral_1h_input_tokens"] == one["cache_creation_1h_input_tokens"]
