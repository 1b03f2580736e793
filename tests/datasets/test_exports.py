"""Dataset exports over real gRPC on real PostgreSQL, on both blob stores (files and S3 on moto).

Acceptance 1: a demo-catalog job in each format (every line parses; chat loads with Hugging Face datasets and has
only `messages`; Bedrock lines obey their rules; convgen lines round-trip to the stored conversation).
Acceptance 2: exported + dropped (with reasons) = selected, no conversation twice, the same export twice is
byte-identical with the same sha256 in the manifest. Acceptance 4: group_by=topic never puts a topic in both splits.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convgen.blobs import BlobStore
from convgen.blobs.factory import open_blob_store
from convgen.v1 import dataset_pb2, generation_pb2
from tests.datasets.helpers import (
    FORMATS,
    completed_job,
    completed_seed_job,
    dataset_stub,
    demo_combination,
    export_request,
    lines,
    read_file,
    run_export,
)
from tests.support.moto_s3 import MotoS3Server
from tests.support.postgres import fetch
from tests.support.s3 import s3_settings
from tests.support.services import Services, running_services, test_settings


@pytest.fixture(params=["file", "s3"])
async def services(request: pytest.FixtureRequest, database_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    """Both services, on the file store or on S3 (moto)."""
    overrides: dict[str, Any] = {}
    if request.param == "s3":
        moto: MotoS3Server = request.getfixturevalue("moto_s3")
        await asyncio.to_thread(moto.reset)
        overrides = s3_settings(moto.endpoint_url)
    async with running_services(test_settings(database_url, tmp_path, **overrides)) as running:
        yield running


@pytest.fixture
async def blobs(services: Services) -> AsyncIterator[BlobStore]:
    """A blob store of the services' kind, to look at (and damage) what they stored."""
    store = await open_blob_store(services.settings)
    yield store
    await store.close()


def _hf_rows(path: Path, cache: Path) -> Any:
    """The file loaded as trainers load it: datasets.load_dataset("json", ...)."""
    import datasets  # noqa: PLC0415 - heavy import, only for this check

    datasets.disable_progress_bars()
    return datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(cache))


async def test_a_demo_job_in_each_format(
    services: Services, blobs: BlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    job_id = await completed_seed_job(services)
    stub = dataset_stub(services)
    split = dataset_pb2.ExportSplit(eval_fraction=0.25, seed=3)
    for name in FORMATS:
        export = await run_export(stub, export_request([job_id], name, split=split))
        assert export.counts.selected == 8
        assert export.counts.exported_train + export.counts.exported_eval == 8
        assert [f.name for f in export.files] == ["train.jsonl", "eval.jsonl", "manifest.json", "report.md"]
        rows = []
        for file in ("train.jsonl", "eval.jsonl"):
            data = await read_file(stub, export.id, file)
            assert data == b"" or data.endswith(b"\n")
            rows += lines(data)
        assert len(rows) == 8
        if name == "chat":
            assert all(set(r) == {"messages"} for r in rows)
            for row in rows:
                roles = [m["role"] for m in row["messages"]]
                assert roles[0] == "system"
                assert set(roles[1:]) <= {"user", "assistant"}
                assert all(set(m) == {"role", "content"} and m["content"] for m in row["messages"])
            path = tmp_path / "chat-train.jsonl"
            path.write_bytes(await read_file(stub, export.id, "train.jsonl"))
            loaded = _hf_rows(path, tmp_path / "hf-cache")
            assert loaded.column_names == ["messages"]
            assert loaded.num_rows == export.counts.exported_train
            assert loaded[0]["messages"][0]["role"] == "system"
        elif name == "sharegpt":
            assert all(set(r) == {"conversations"} for r in rows)
            for row in rows:
                speakers = [m["from"] for m in row["conversations"]]
                assert speakers[0] == "system"
                assert set(speakers[1:]) <= {"human", "gpt"}
        elif name == "bedrock":
            for row in rows:
                assert set(row) == {"system", "messages"}
                assert row["system"]
                roles = [m["role"] for m in row["messages"]]
                assert roles[0] == "user"
                assert roles[-1] == "assistant"
                assert all(a != b for a, b in itertools.pairwise(roles)), roles
                assert all(set(m) == {"role", "content"} for m in row["messages"])
        else:
            await _assert_lineage_round_trips(services, blobs, rows, job_id)


async def _assert_lineage_round_trips(
    services: Services, blobs: BlobStore, rows: list[dict[str, Any]], job_id: str
) -> None:
    """Each convgen line is the stored conversation: same keys, parameters, usage, cost, and the blob verbatim."""
    for row in rows:
        stored = await services.generation_stub.GetConversation(
            generation_pb2.GetConversationRequest(pk=row["pk"], view=generation_pb2.CONVERSATION_VIEW_FULL)
        )
        assert row["business_key"] == stored.business_key != row["pk"]
        assert row["job_id"] == job_id
        assert row["request_id"] == stored.request_id
        assert row["model"] == stored.model
        assert row["parameters"]["persona_id"] == stored.parameters.persona_id
        assert row["parameters"]["template_id"] == stored.parameters.template_id
        assert row["parameters"]["topic_key"] == stored.topic_key
        assert row["usage"]["input_tokens"] == stored.usage.input_tokens
        assert row["usage"]["output_tokens"] == stored.usage.output_tokens
        assert float(row["cost_usd"]) == pytest.approx(stored.cost_usd)
        assert row["validation_warnings"] == list(stored.validation_warnings)
        assert row["blobs"]["final"] == {"bucket": stored.final_blob.bucket, "key": stored.final_blob.key}
        document = json.loads(await blobs.get(stored.final_blob.bucket, stored.final_blob.key))
        assert row["conversation"] == document
        assert [t["content"] for t in row["conversation"]["turns"]] == [t.content for t in stored.content.turns]


async def test_rows_add_up_and_the_same_export_twice_is_byte_identical(
    services: Services, blobs: BlobStore, database_url: str
) -> None:
    job_id = await completed_seed_job(services)
    conversations = await fetch(
        database_url,
        """
        SELECT c.id, c.conversation_id, c.final_bucket, c.final_key FROM batch_items i
        JOIN conversations c ON c.id = i.conversation_id WHERE i.batch_job_id = $1 ORDER BY c.created_at, c.id
        """,
        uuid.UUID(job_id),
    )
    missing, unreadable, invalid = conversations[1], conversations[3], conversations[5]
    # A missing blob, a blob that is not JSON, and one that breaks a blocking rule: reported and skipped.
    await _replace_blob(blobs, missing, None)
    await _replace_blob(blobs, unreadable, b"{not json")
    document = json.loads(await blobs.get(invalid["final_bucket"], invalid["final_key"]))
    document["turns"][1]["content"] = "   "
    await _replace_blob(blobs, invalid, json.dumps(document).encode())

    stub = dataset_stub(services)
    request = export_request(
        [job_id],
        "convgen",
        split=dataset_pb2.ExportSplit(eval_fraction=0.4, seed=11),
        quality_gate=dataset_pb2.QualityGate(drop_near_duplicates=True),
    )
    first = await run_export(stub, request)
    second = await run_export(stub, request)
    assert first.id != second.id

    counts = first.counts
    assert counts.selected == 8
    assert counts.exported_train + counts.exported_eval + counts.dropped == counts.selected
    assert counts.dropped_by_reason["blob_missing"] == 1
    assert counts.dropped_by_reason["blob_unreadable"] == 1
    assert counts.dropped_by_reason["validation"] == 1
    reasons = {row.business_key: row.reason for row in first.dropped_sample}
    assert reasons[str(missing["conversation_id"])].startswith("blob_missing: ")
    assert reasons[str(unreadable["conversation_id"])].startswith("blob_unreadable: not JSON")
    assert reasons[str(invalid["conversation_id"])] == "validation:empty_content: turn 2: content is empty"

    manifest = json.loads(await read_file(stub, first.id, "manifest.json"))
    exported = [
        row["business_key"]
        for name in ("train.jsonl", "eval.jsonl")
        for row in lines(await read_file(stub, first.id, name))
    ]
    dropped = [d["business_key"] for d in manifest["dropped"]]
    assert len(exported) == len(set(exported)), "no conversation in two rows"
    assert not set(exported) & set(dropped)
    assert sorted(exported + dropped) == sorted(str(c["conversation_id"]) for c in conversations)
    assert all(d["reason"] for d in manifest["dropped"])

    for name in ("train.jsonl", "eval.jsonl"):
        assert await read_file(stub, first.id, name) == await read_file(stub, second.id, name)
    first_files = {f.name: f.sha256 for f in first.files}
    second_manifest = json.loads(await read_file(stub, second.id, "manifest.json"))
    for entry in manifest["files"]:
        assert entry["sha256"] == first_files[entry["name"]]
    assert [(f["name"], f["sha256"], f["bytes"]) for f in manifest["files"]] == [
        (f["name"], f["sha256"], f["bytes"]) for f in second_manifest["files"]
    ]
    assert manifest["report"]["duplicates"] == second_manifest["report"]["duplicates"]


async def _replace_blob(blobs: BlobStore, row: Any, data: bytes | None) -> None:
    """Overwrites a conversation's final blob, or removes it (data None)."""
    if data is not None:
        await blobs.put(row["final_bucket"], row["final_key"], data, content_type="application/json")
        return
    root = getattr(blobs, "root", None)
    if root is not None:
        (Path(root) / row["final_bucket"] / row["final_key"]).unlink()
        return
    client = blobs._open_client()  # type: ignore[attr-defined]
    await client.delete_object(Bucket=row["final_bucket"], Key=row["final_key"])


TOPICS = 12


@pytest.mark.parametrize("services", ["file"], indirect=True)
@settings(
    max_examples=12,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    topics=st.sets(st.integers(0, TOPICS - 1), min_size=1, max_size=TOPICS),
    seed=st.integers(-(2**63), 2**63 - 1),
    eval_fraction=st.floats(0.0, 0.5),
    with_second_persona=st.booleans(),
)
async def test_group_by_topic_never_puts_a_topic_in_both_splits(
    services: Services, topics: set[int], seed: int, eval_fraction: float, with_second_persona: bool
) -> None:
    jobs = await _topic_jobs(services)
    job_ids = jobs[:2] if with_second_persona else jobs[:1]
    topic_ids = [jobs_topics()[i] for i in sorted(topics)]
    stub = dataset_stub(services)
    export = await run_export(
        stub,
        export_request(
            job_ids,
            "chat",
            selection=dataset_pb2.ExportSelection(job_ids=job_ids, training_topic_ids=topic_ids),
            split=dataset_pb2.ExportSplit(
                eval_fraction=eval_fraction, group_by=dataset_pb2.SPLIT_GROUP_BY_TRAINING_TOPIC, seed=seed
            ),
        ),
    )
    manifest = json.loads(await read_file(stub, export.id, "manifest.json"))
    assert manifest["split"]["group_by"] == "training_topic"
    topic_of = await _topic_of_first_user_turn(services, job_ids)
    split_topics = {}
    for name in ("train.jsonl", "eval.jsonl"):
        split_topics[name] = {
            topic_of[row["messages"][1]["content"]] for row in lines(await read_file(stub, export.id, name))
        }
    assert not split_topics["train.jsonl"] & split_topics["eval.jsonl"]
    assert split_topics["train.jsonl"] | split_topics["eval.jsonl"] == set(topic_ids)
    report = export.report.split
    assert report.leakage_free
    assert (report.train_groups, report.eval_groups) == (
        len(split_topics["train.jsonl"]),
        len(split_topics["eval.jsonl"]),
    )


_TOPIC_JOBS: dict[str, list[str]] = {}


def jobs_topics() -> list[str]:
    """The topic ids of the topic jobs."""
    return list(demo_combination(personas=1, arcs=1, topics=TOPICS).training_topic_ids)


async def _topic_jobs(services: Services) -> list[str]:
    """Two completed jobs (one persona each) over TOPICS topics, made once per services."""
    key = services.settings.database_url or ""
    if key not in _TOPIC_JOBS:
        made = []
        for persona in range(2):
            combination = demo_combination(personas=2, arcs=1, topics=TOPICS)
            del combination.persona_ids[:]
            combination.persona_ids.append(demo_combination(personas=2).persona_ids[persona])
            made.append((await completed_job(services, combination)).id)
        _TOPIC_JOBS[key] = made
    return _TOPIC_JOBS[key]


async def _topic_of_first_user_turn(services: Services, job_ids: list[str]) -> dict[str, str]:
    """The topic id of each conversation of the jobs, by its first user turn (unique per conversation here)."""
    rows = await fetch(
        services.settings.database_url or "",
        """
        SELECT c.training_topic_id, c.final_bucket, c.final_key FROM batch_items i
        JOIN conversations c ON c.id = i.conversation_id WHERE i.batch_job_id = ANY($1::uuid[])
        """,
        [uuid.UUID(j) for j in job_ids],
    )
    store = await open_blob_store(services.settings)
    try:
        found = {}
        for row in rows:
            document = json.loads(await store.get(row["final_bucket"], row["final_key"]))
            first = min(document["turns"], key=lambda t: t["turn_number"])
            assert first["content"] not in found, "first user turns identify conversations here"
            found[first["content"]] = str(row["training_topic_id"])
        return found
    finally:
        await store.close()
