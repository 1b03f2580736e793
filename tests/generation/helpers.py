"""Helpers for generation tests: the seed's request with changed parameters, and the nothing-written check."""

from __future__ import annotations

from pathlib import Path

from convgen.v1 import common_pb2, generation_pb2
from tests.support.demo_catalog import COUPLE_CONFLICT, DAVID_CHEN, ESTATE_PLANNING, NIL
from tests.support.postgres import fetch


def seed_request_with(**parameters: object) -> generation_pb2.GenerateConversationRequest:
    """GenerateConversation for the seed's failed combination with some parameters replaced (request id 'bad')."""
    base: dict[str, object] = {
        "persona_id": DAVID_CHEN,
        "emotional_arc_id": COUPLE_CONFLICT,
        "training_topic_id": ESTATE_PLANNING,
        "tier": common_pb2.TIER_TEMPLATE,
        "template_id": NIL,
    }
    base.update(parameters)
    return generation_pb2.GenerateConversationRequest(
        parameters=common_pb2.GenerationParameters(**base),
        request_id="bad",  # type: ignore[arg-type]
    )


async def assert_nothing_written(dsn: str, blobs: Path) -> None:
    """No conversation, failure or claim row and no conversation blob exists."""
    assert await fetch(dsn, "SELECT id FROM conversations") == []
    assert await fetch(dsn, "SELECT id FROM generation_failures") == []
    assert await fetch(dsn, "SELECT request_id FROM generation_claims") == []
    assert not list((blobs / "conversation-files").rglob("*.json"))
