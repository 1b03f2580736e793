"""The stand-in's cost behaviour, through the real SDK: prompt caching like the API, token-rate limits with the API's
headers, count_tokens, the models endpoint, effort (thinking tokens) and structured output."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import jsonschema
import pytest

from convgen.conversation_schema import output_schema
from tests.support.messages_api import FakeApiConfig, FakeMessagesApi, Fault

MODEL = "claude-sonnet-5-5"
CONTRACT = "You write financial planning conversations as JSON. " * 100  # 5,200 characters: 1,300 tokens
SHARED = "The client is David Chen, a teacher with a dry sense of humour. " * 20  # 1,280 characters: 320 tokens


@pytest.fixture
async def api() -> AsyncIterator[FakeMessagesApi]:
    async with FakeMessagesApi() as server:
        yield server


@pytest.fixture
async def client(api: FakeMessagesApi) -> AsyncIterator[anthropic.AsyncAnthropic]:
    sdk = anthropic.AsyncAnthropic(api_key="test-key", base_url=api.base_url, max_retries=0)
    yield sdk
    await sdk.close()


def cached(text: str, ttl: str = "5m") -> dict[str, Any]:
    return {"type": "text", "text": text, "cache_control": {"type": "ephemeral", "ttl": ttl}}


async def layered(
    client: anthropic.AsyncAnthropic, topic: str, *, shared: str = SHARED, ttl: str = "5m", **kwargs: Any
) -> Any:
    """A call laid out as convgen lays it out: contract, shared part, topic; breakpoints after the first two."""
    return await client.messages.create(
        model=kwargs.pop("model", MODEL),
        max_tokens=kwargs.pop("max_tokens", 4096),
        system=[cached(CONTRACT, ttl)],
        messages=[{"role": "user", "content": [cached(shared, ttl), {"type": "text", "text": topic}]}],
        **kwargs,
    )


def kinds(message: Any) -> tuple[int, int, int]:
    usage = message.usage
    return usage.cache_read_input_tokens, usage.cache_creation_input_tokens, usage.input_tokens


# --- prompt caching -------------------------------------------------------------------------------------------------


async def test_the_longest_cached_prefix_is_read_and_the_rest_written(client: anthropic.AsyncAnthropic) -> None:
    first = await layered(client, "Topic: estate planning.")
    same_shared = await layered(client, "Topic: paying for college.")
    other_shared = await layered(client, "Topic: estate planning.", shared=SHARED.replace("teacher", "plumber"))

    topic_tokens = 6  # "Topic: estate planning." is 23 characters
    assert kinds(first) == (0, 1300 + 320, topic_tokens)
    assert kinds(same_shared) == (1300 + 320, 0, 7)
    assert kinds(other_shared) == (1300, 320, topic_tokens), "the contract is read; the new shared part written"
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == 1620
    assert first.usage.cache_creation.ephemeral_1h_input_tokens == 0


async def test_a_prefix_below_the_minimum_is_not_cached_and_nothing_says_so(
    api: FakeMessagesApi, client: anthropic.AsyncAnthropic
) -> None:
    api.update_config({"min_cacheable_tokens": 2048})
    short = [await layered(client, f"Topic {n}.") for n in range(2)]

    assert [kinds(m)[:2] for m in short] == [(0, 0), (0, 0)]
    assert short[1].usage.input_tokens == 1300 + 320 + 2

    api.update_config({"min_cacheable_tokens": 1500})
    crossing = [await layered(client, f"Topic {n}.") for n in range(2)]
    # The contract alone (1,300) is below 1,500; with the shared part (1,620) it is cached, as one entry.
    assert kinds(crossing[0])[:2] == (0, 1620)
    assert kinds(crossing[1])[:2] == (1620, 0)


async def test_entries_expire_their_ttl_after_their_last_use(
    api: FakeMessagesApi, client: anthropic.AsyncAnthropic
) -> None:
    api.update_config({"cache_ttl_scale": 0.002})  # 5 minutes → 0.6 s; 1 hour → 7.2 s
    await layered(client, "Topic A.")
    await asyncio.sleep(0.4)
    refreshed = await layered(client, "Topic B.")  # a read refreshes the entry for another TTL
    await asyncio.sleep(0.4)
    still = await layered(client, "Topic C.")
    await asyncio.sleep(0.9)
    expired = await layered(client, "Topic D.")
    await layered(client, "Topic E.", ttl="1h")
    await asyncio.sleep(0.9)
    hour = await layered(client, "Topic F.", ttl="1h")

    assert kinds(refreshed)[0] == 1620
    assert kinds(still)[0] == 1620
    assert kinds(expired)[:2] == (0, 1620)
    assert kinds(hour)[0] == 1620, "a 1-hour entry outlives a 5-minute one"


async def test_one_hour_writes_are_reported_apart(client: anthropic.AsyncAnthropic) -> None:
    message = await client.messages.create(
        model=MODEL,
        max_tokens=4096,
        system=[cached(CONTRACT, "1h")],
        messages=[{"role": "user", "content": [cached(SHARED, "5m"), {"type": "text", "text": "Topic."}]}],
    )
    assert message.usage.cache_creation.ephemeral_1h_input_tokens == 1300
    assert message.usage.cache_creation.ephemeral_5m_input_tokens == 320


async def test_an_entry_is_readable_only_once_the_response_that_wrote_it_begins(
    api: FakeMessagesApi, client: anthropic.AsyncAnthropic
) -> None:
    api.update_config({"latency_seconds": 0.3})
    together = await asyncio.gather(layered(client, "Topic A."), layered(client, "Topic B."))
    after = await layered(client, "Topic C.")

    assert [kinds(m)[:2] for m in together] == [(0, 1620), (0, 1620)]
    assert kinds(after)[0] == 1620


@pytest.mark.parametrize(
    ("system", "content", "message"),
    [
        ([cached("a")] * 3, [cached("b"), cached("c")], "A maximum of 4 blocks with cache_control"),
        ([cached("a", "5m")], [cached("b", "1h"), {"type": "text", "text": "c"}], "ttl='1h'"),
        ([cached("a", "1d")], [{"type": "text", "text": "c"}], "cache_control.ttl"),
    ],
    ids=["five-breakpoints", "1h-after-5m", "bad-ttl"],
)
async def test_cache_control_rules_are_the_apis(
    client: anthropic.AsyncAnthropic, system: Any, content: Any, message: str
) -> None:
    with pytest.raises(anthropic.BadRequestError, match=message):
        await client.messages.create(
            model=MODEL, max_tokens=100, system=system, messages=[{"role": "user", "content": content}]
        )


# --- count_tokens and the models endpoint -------------------------------------------------------------------------


async def test_count_tokens_counts_what_a_call_uses(api: FakeMessagesApi, client: anthropic.AsyncAnthropic) -> None:
    counted = await client.messages.count_tokens(
        model=MODEL,
        system=[cached(CONTRACT)],
        messages=[{"role": "user", "content": [cached(SHARED), {"type": "text", "text": "Topic: taxes."}]}],
    )
    used = await layered(client, "Topic: taxes.")

    assert counted.input_tokens == sum(kinds(used)) == 1300 + 320 + 4
    assert len(api.token_counts) == 1
    assert api.requests[-1].body["model"] == MODEL, "count_tokens is not recorded as a messages call"
    assert len(api.requests) == 1


async def test_models_endpoint_states_capabilities_and_unknown_models_are_404(
    api: FakeMessagesApi, client: anthropic.AsyncAnthropic
) -> None:
    info = await client.models.retrieve(MODEL)
    assert info.capabilities is not None
    assert info.capabilities.structured_outputs.supported
    assert info.capabilities.effort.supported

    api.update_config({"known_models": [MODEL], "structured_outputs": False})
    assert not (await client.models.retrieve(MODEL)).capabilities.structured_outputs.supported  # type: ignore[union-attr]
    with pytest.raises(anthropic.NotFoundError, match="model: claude-nonexistent"):
        await client.models.retrieve("claude-nonexistent")
    with pytest.raises(anthropic.NotFoundError, match="model: claude-nonexistent"):
        await layered(client, "Topic.", model="claude-nonexistent")
    with pytest.raises(anthropic.NotFoundError):
        await client.messages.count_tokens(model="claude-nonexistent", messages=[{"role": "user", "content": "x"}])


# --- token-rate limits --------------------------------------------------------------------------------------------


async def test_output_tokens_are_charged_at_max_tokens_until_the_reply_settles(
    api: FakeMessagesApi, client: anthropic.AsyncAnthropic
) -> None:
    api.update_config({"output_tokens_per_minute": 6000, "latency_seconds": 0.3})

    results = await asyncio.gather(
        layered(client, "Topic A.", max_tokens=4000),
        layered(client, "Topic B.", max_tokens=4000),
        return_exceptions=True,
    )
    after = await client.messages.with_raw_response.create(
        model=MODEL, max_tokens=4000, messages=[{"role": "user", "content": "Topic C."}]
    )

    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, anthropic.RateLimitError)]
    assert len(ok) == 1
    assert len(refused) == 1, "two 4,000-token reservations do not fit a 6,000-token bucket at once"
    error = refused[0]
    assert "6000 output tokens per minute" in error.message
    assert int(error.response.headers["retry-after"]) >= 1
    assert error.response.headers["anthropic-ratelimit-output-tokens-limit"] == "6000"
    # Once the first reply settled, its unused reservation came back: the third call fits.
    used = ok[0].usage.output_tokens
    remaining = int(after.headers["anthropic-ratelimit-output-tokens-remaining"])
    output = (await after.parse()).usage.output_tokens
    # Both reservations came back but for the real output; the bucket refilled 100 tokens a second meanwhile.
    assert 6000 - used - output - 10 <= remaining <= 6000 - used - output + 200
    assert api.stats()["throttled"] == 1


async def test_cache_reads_are_free_under_the_input_token_limit(
    api: FakeMessagesApi, client: anthropic.AsyncAnthropic
) -> None:
    api.update_config({"input_tokens_per_minute": 2000})
    await layered(client, "Topic A.")  # writes 1,620 tokens: counted
    again = await client.messages.with_raw_response.create(
        model=MODEL,
        max_tokens=4096,
        system=[cached(CONTRACT)],
        messages=[{"role": "user", "content": [cached(SHARED), {"type": "text", "text": "Topic B."}]}],
    )
    assert int(again.headers["anthropic-ratelimit-input-tokens-remaining"]) >= 2000 - 1626 - 2 - 10
    with pytest.raises(anthropic.RateLimitError, match="input tokens per minute"):
        await client.messages.create(
            model=MODEL,
            max_tokens=4096,
            system=[cached(CONTRACT.upper())],
            messages=[{"role": "user", "content": [cached(SHARED), {"type": "text", "text": "Topic C."}]}],
        )


# --- effort, thinking and structured output -----------------------------------------------------------------------


async def test_thinking_tokens_follow_the_effort_and_count_against_max_tokens(
    api: FakeMessagesApi, client: anthropic.AsyncAnthropic
) -> None:
    api.update_config({"thinking_tokens": {"low": 0, "medium": 200, "high": 900}})
    default = await layered(client, "Topic.")
    low = await layered(client, "Topic.", output_config={"effort": "low"})
    cut = await layered(client, "Topic.", max_tokens=1000)

    assert default.usage.output_tokens == low.usage.output_tokens + 900, "no effort sent is high effort"
    assert default.content[0].type == "thinking"
    assert default.usage.output_tokens_details.thinking_tokens == 900
    assert [b.type for b in low.content] == ["text"]
    assert cut.stop_reason == "max_tokens"
    assert cut.usage.output_tokens == 1000
    with pytest.raises(anthropic.BadRequestError, match=r"output_config\.effort"):
        await layered(client, "Topic.", output_config={"effort": "extreme"})


async def test_structured_output_is_json_matching_the_schema_whatever_the_fault(
    api: FakeMessagesApi, client: anthropic.AsyncAnthropic
) -> None:
    schema = anthropic.transform_schema(output_schema())
    answer_only = {
        "type": "object",
        "properties": {"answer": {"type": "string"}, "score": {"type": "integer"}},
        "required": ["answer", "score"],
        "additionalProperties": False,
    }
    api.inject(Fault.UNPARSEABLE)
    api.inject(Fault.SCHEMA_INVALID)
    replies = [
        await layered(client, "Topic.", output_config={"format": {"type": "json_schema", "schema": schema}})
        for _ in range(3)
    ]
    other = await layered(client, "Topic.", output_config={"format": {"type": "json_schema", "schema": answer_only}})

    for reply in replies:
        jsonschema.validate(json.loads(reply.content[0].text), schema)
    jsonschema.validate(json.loads(other.content[0].text), answer_only)
    api.update_config({"structured_outputs": False})
    with pytest.raises(anthropic.BadRequestError, match="structured outputs are not supported"):
        await layered(client, "Topic.", output_config={"format": {"type": "json_schema", "schema": schema}})


async def test_credit_exhausted_is_a_400_with_the_apis_message(
    api: FakeMessagesApi, client: anthropic.AsyncAnthropic
) -> None:
    api.inject(Fault.CREDIT_EXHAUSTED)
    with pytest.raises(anthropic.BadRequestError, match="credit balance is too low"):
        await layered(client, "Topic.")


async def test_replies_can_be_as_long_as_real_conversations() -> None:
    async with FakeMessagesApi(FakeApiConfig(output_tokens=3000)) as api:
        sdk = anthropic.AsyncAnthropic(api_key="k", base_url=api.base_url, max_retries=0)
        try:
            message = await layered(sdk, "Topic.", max_tokens=8192)
        finally:
            await sdk.close()
    assert 2900 <= message.usage.output_tokens <= 3100
    assert len(json.loads(message.content[0].text)["turns"]) == 6
