"""EstimateConversations through the real SDK against the stand-in: token counts from count_tokens, the cache
pattern the order and concurrency lead to, output sizes observed per template (a stated default before any), and
nothing written."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from convgen.v1 import common_pb2, generation_pb2
from tests.support.demo_catalog import seed_request
from tests.support.messages_api import FakeMessagesApi
from tests.support.postgres import fetch
from tests.support.services import Services

DAVID_CHEN = "aa514346-cd61-42ac-adad-498934975402"
ARCS = ("33d2ac3e-3f92-44a5-a53d-788fdece2545", "53583301-5758-4781-99df-57b9c5fc1949")
TOPICS = (
    "aee7b6c2-42e2-4ef4-8184-be12abe38eb5",
    "42f435d0-8450-4ec5-a319-8c9f404e7606",
    "7ea09d37-5310-4076-a230-3df0c4080966",
)
ROW_COUNTS = (
    "SELECT (SELECT count(*) FROM conversations) AS conversations, "
    "(SELECT count(*) FROM generation_claims) AS claims, (SELECT count(*) FROM generation_failures) AS failures"
)


def parameters() -> list[common_pb2.GenerationParameters]:
    """Two arcs × three topics of one persona, arc-major (as a combination orders them)."""
    return [
        common_pb2.GenerationParameters(
            persona_id=DAVID_CHEN, emotional_arc_id=arc, training_topic_id=topic, tier=common_pb2.TIER_TEMPLATE
        )
        for arc in ARCS
        for topic in TOPICS
    ]


async def test_an_estimate_writes_nothing_and_assumes_the_stated_default_before_any_conversation(
    claude: Services, fake_api: FakeMessagesApi, database_url: str
) -> None:
    before = await fetch(database_url, ROW_COUNTS)
    response = await claude.generation_stub.EstimateConversations(
        generation_pb2.EstimateConversationsRequest(parameters=parameters(), concurrency=1)
    )
    estimate = response.estimate

    assert await fetch(database_url, ROW_COUNTS) == before
    assert fake_api.requests == [], "no conversation was generated"
    assert fake_api.token_counts, "input tokens come from count_tokens"
    assert estimate.items == 6
    assert estimate.model == "claude-sonnet-5-5"
    assert {(b.output_tokens_per_conversation, b.observed_conversations) for b in estimate.output_basis} == {(5000, 0)}
    assert estimate.usage.output_tokens == 6 * 5000
    # One call at a time: the first writes contract and shared part, each arc's first writes its shared part,
    # every other call reads.
    assert estimate.usage.cache_read_input_tokens > 0
    assert estimate.usage.cache_creation_5m_input_tokens > 0
    assert estimate.batch_cost_usd == pytest.approx(estimate.cost_usd / 2, abs=2e-6)
    assert len(response.reservation_usd) == 6
    assert all(r >= estimate.cost_usd / 6 for r in response.reservation_usd), "a reservation is cautious"


async def test_the_estimate_of_conversations_is_close_to_what_they_then_cost(
    claude: Services, fake_api: FakeMessagesApi, database_url: str
) -> None:
    # Earlier conversations of the same templates give the output size. The estimate assumes a cold cache, so
    # their cache entries are let expire (5 minutes scaled to 1.5 s) before the estimated conversations run.
    fake_api.update_config({"cache_ttl_scale": 0.005})
    for n, topic in enumerate(TOPICS[:2]):
        request = seed_request(f"earlier-{n}")
        request.parameters.training_topic_id = topic
        request.parameters.emotional_arc_id = ARCS[n % 2]
        await claude.generation_stub.GenerateConversation(request)
    await asyncio.sleep(1.6)
    response = await claude.generation_stub.EstimateConversations(
        generation_pb2.EstimateConversationsRequest(parameters=parameters(), concurrency=1)
    )
    estimate = response.estimate
    assert all(b.observed_conversations == 1 for b in estimate.output_basis)

    for n, params in enumerate(parameters()):
        await claude.generation_stub.GenerateConversation(
            generation_pb2.GenerateConversationRequest(parameters=params, request_id=f"then-{n}")
        )
    rows = await fetch(
        database_url,
        "SELECT sum(cost_usd) AS cost, sum(input_tokens) AS input, sum(cache_read_input_tokens) AS reads, "
        "sum(output_tokens) AS output FROM conversations WHERE request_id LIKE 'then-%'",
    )
    actual = rows[0]
    assert estimate.cost_usd == pytest.approx(float(actual["cost"]), rel=0.05)
    assert estimate.usage.output_tokens == pytest.approx(int(actual["output"]), rel=0.05)
    assert estimate.usage.cache_read_input_tokens == pytest.approx(int(actual["reads"]), rel=0.05)


async def test_concurrency_makes_calls_write_what_they_cannot_yet_read(claude: Services) -> None:
    one = await claude.generation_stub.EstimateConversations(
        generation_pb2.EstimateConversationsRequest(parameters=parameters(), concurrency=1)
    )
    six = await claude.generation_stub.EstimateConversations(
        generation_pb2.EstimateConversationsRequest(parameters=parameters(), concurrency=6)
    )
    assert six.estimate.usage.cache_read_input_tokens == 0, "all six start before any answer"
    assert six.estimate.usage.cache_creation_5m_input_tokens > one.estimate.usage.cache_creation_5m_input_tokens
    assert six.estimate.cost_usd > one.estimate.cost_usd


async def test_bad_estimate_requests_are_refused_with_the_field(claude: Services) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as empty:
        await claude.generation_stub.EstimateConversations(generation_pb2.EstimateConversationsRequest())
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "parameters: is empty" in (empty.value.details() or "")
    unknown = parameters()[:1]
    unknown[0].persona_id = "00000000-0000-0000-0000-00000000beef"
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await claude.generation_stub.EstimateConversations(
            generation_pb2.EstimateConversationsRequest(parameters=unknown)
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as negative:
        await claude.generation_stub.EstimateConversations(
            generation_pb2.EstimateConversationsRequest(parameters=parameters(), concurrency=-1)
        )
    assert negative.value.code() == grpc.StatusCode.INVALID_ARGUMENT
