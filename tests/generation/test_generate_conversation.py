"""GenerateConversation end to end over gRPC on real PostgreSQL: distinct pk and business key, blobs, idempotency."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import asyncpg

from convgen.v1 import generation_pb2
from tests.support.demo_catalog import NIL, seed_request
from tests.support.services import Services


async def test_seed_combination_returns_distinct_pk_and_business_key(
    services: Services, database_url: str, tmp_path: Path
) -> None:
    stored = await services.generation_stub.GenerateConversation(seed_request("seed-1"))

    pk, business_key = uuid.UUID(stored.pk), uuid.UUID(stored.business_key)
    assert pk != business_key
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow("SELECT id, conversation_id FROM conversations WHERE request_id = 'seed-1'")
    finally:
        await conn.close()
    assert row is not None
    assert row["id"] == pk
    assert row["conversation_id"] == business_key

    assert stored.raw_blob.bucket == "conversation-files"
    assert stored.raw_blob.key == f"raw/{NIL}/{business_key}_raw.json"
    assert stored.final_blob.key == f"final/{NIL}/{business_key}.json"
    raw = json.loads((tmp_path / "blobs" / "conversation-files" / stored.raw_blob.key).read_text())
    final = json.loads((tmp_path / "blobs" / "conversation-files" / stored.final_blob.key).read_text())
    assert raw["type"] == "message"
    assert len(final["turns"]) == stored.turn_count >= 2
    assert final["input_parameters"]["persona"]["name"] == "David Chen"
    assert stored.parameters.template_id != NIL  # the template actually used
    assert stored.model == "offline-synthetic"
    assert stored.persona_key == "pragmatic_optimist"


async def test_same_request_id_sequentially_returns_the_same_conversation(
    services: Services, database_url: str
) -> None:
    first = await services.generation_stub.GenerateConversation(seed_request("again"))
    second = await services.generation_stub.GenerateConversation(seed_request("again"))
    assert first.pk == second.pk
    assert first.business_key == second.business_key
    conn = await asyncpg.connect(database_url)
    try:
        count = await conn.fetchval("SELECT count(*) FROM conversations WHERE request_id = 'again'")
    finally:
        await conn.close()
    assert count == 1


async def test_same_request_id_concurrently_returns_one_conversation(services: Services, database_url: str) -> None:
    results = await asyncio.gather(
        *(services.generation_stub.GenerateConversation(seed_request("race")) for _ in range(8))
    )
    assert len({r.pk for r in results}) == 1
    conn = await asyncpg.connect(database_url)
    try:
        count = await conn.fetchval("SELECT count(*) FROM conversations WHERE request_id = 'race'")
    finally:
        await conn.close()
    assert count == 1


async def test_get_conversation_by_either_key(services: Services) -> None:
    stored = await services.generation_stub.GenerateConversation(seed_request("get-me"))
    by_pk = await services.generation_stub.GetConversation(
        generation_pb2.GetConversationRequest(pk=stored.pk, view=generation_pb2.CONVERSATION_VIEW_FULL)
    )
    by_key = await services.generation_stub.GetConversation(
        generation_pb2.GetConversationRequest(business_key=stored.business_key)
    )
    assert by_pk.pk == by_key.pk == stored.pk
    assert len(by_pk.content.turns) == stored.turn_count
    assert not by_key.HasField("content")
