"""Acceptance 3: with a model stand-in serving planted near-duplicates (light word edits of earlier conversations)
among distinct ones, the report finds at least 95% of the planted pairs and wrongly clusters at most 2% of the
distinct conversations, at the default threshold; drop_near_duplicates keeps the earliest of each cluster."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from convgen.v1 import batch_pb2, dataset_pb2
from tests.datasets.helpers import completed_job, dataset_stub, demo_combination, export_request, lines, read_file
from tests.datasets.helpers import run_export as run
from tests.support.messages_api import FakeMessagesApi
from tests.support.near_duplicates import NearDuplicateCorpus
from tests.support.services import Services, claude_settings, running_services, test_settings

DISTINCT = 240
PLANTED = 60


@pytest.fixture
def corpus() -> NearDuplicateCorpus:
    """240 distinct conversations and 60 light edits of earlier ones."""
    return NearDuplicateCorpus(distinct=DISTINCT, planted=PLANTED, seed=3)


@pytest.fixture
async def services(database_url: str, tmp_path: Path, corpus: NearDuplicateCorpus) -> AsyncIterator[Services]:
    """The services generating through the real SDK against the stand-in serving the corpus."""
    async with FakeMessagesApi(replies=corpus.reply) as api:
        settings = test_settings(database_url, tmp_path, **claude_settings(api.base_url))
        async with running_services(settings, batch_overrides={"batch_worker_concurrency": 32}) as running:
            yield running


@pytest.mark.timeout(300)
async def test_planted_near_duplicates_are_found_and_distinct_ones_are_not(
    services: Services, corpus: NearDuplicateCorpus
) -> None:
    job = await completed_job(services, demo_combination(personas=3, arcs=5, topics=20), concurrency=32, within=240)
    assert job.state == batch_pb2.BATCH_JOB_STATE_COMPLETED
    assert job.completed_items == len(corpus) == DISTINCT + PLANTED
    stub = dataset_stub(services)

    export = await run(stub, export_request([job.id], "convgen"))
    rows = lines(await read_file(stub, export.id, "train.jsonl"))
    entry_of = {row["business_key"]: corpus.index_of(row["conversation"]) for row in rows}
    assert sorted(entry_of.values()) == list(range(len(corpus))), "every corpus entry was stored once"
    manifest = json.loads(await read_file(stub, export.id, "manifest.json"))
    duplicates = manifest["report"]["duplicates"]
    assert duplicates["threshold"] == 0.8
    cluster_of: dict[int, int] = {}
    for number, cluster in enumerate(duplicates["clusters"]):
        for key in cluster["business_keys"]:
            cluster_of[entry_of[key]] = number

    found = [
        pair
        for pair in corpus.planted_pairs
        if pair[0] in cluster_of and cluster_of[pair[0]] == cluster_of.get(pair[1])
    ]
    recall = len(found) / len(corpus.planted_pairs)
    wrongly = [entry for entry in corpus.distinct_ids if entry in cluster_of]
    found_text = f"{len(found)}/{len(corpus.planted_pairs)}"
    print(f"planted pairs found {found_text}; distinct clustered {len(wrongly)}/{len(corpus.distinct_ids)}")
    assert recall >= 0.95, f"found {len(found)} of {len(corpus.planted_pairs)} planted pairs"
    assert len(wrongly) <= 0.02 * len(corpus.distinct_ids), f"distinct conversations clustered: {wrongly}"

    dropping = await run(
        stub,
        export_request([job.id], "chat", quality_gate=dataset_pb2.QualityGate(drop_near_duplicates=True)),
    )
    assert dropping.counts.dropped_by_reason["near_duplicate"] == duplicates["near_duplicates"]
    assert dropping.counts.exported_train == len(corpus) - duplicates["near_duplicates"]
    dropped_manifest = json.loads(await read_file(stub, dropping.id, "manifest.json"))
    created_order = [row["business_key"] for row in rows]
    for dropped in dropped_manifest["dropped"]:
        kind, _, kept = dropped["reason"].partition(":")
        assert kind == "near_duplicate_of"
        # The kept one is the earliest of its cluster: exported rows are in creation order.
        assert created_order.index(kept) < created_order.index(dropped["business_key"])
        assert cluster_of[entry_of[kept]] == cluster_of[entry_of[dropped["business_key"]]]
