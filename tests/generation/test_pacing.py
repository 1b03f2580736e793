"""Pacing to every limit the API states: the pacer's books (requests, input and output tokens per minute), and the
generation service under a binding output-token limit of the stand-in, through the real SDK."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from convgen.pricing import TokenUsage
from generation_service.model.pacing import CallCharge, InputEstimates, RatePacer
from tests.support.demo_catalog import seed_request
from tests.support.messages_api import FakeMessagesApi
from tests.support.postgres import fetch
from tests.support.services import Services, claude_settings, running_services, test_settings


async def test_an_output_reservation_is_held_until_the_call_settles_then_the_rest_comes_back() -> None:
    pacer = RatePacer(max_concurrency=8, output_tokens_per_minute=6000)  # 100 tokens a second
    first_admitted = asyncio.Event()
    release_first = asyncio.Event()

    async def first() -> None:
        async with pacer.call(CallCharge(input_tokens=0, output_tokens=4000)) as ticket:
            first_admitted.set()
            await release_first.wait()
            ticket.settle(TokenUsage(output_tokens=500))

    async def second() -> float:
        await first_admitted.wait()
        started = time.monotonic()
        async with pacer.call(CallCharge(input_tokens=0, output_tokens=4000)):
            return time.monotonic() - started

    holder = asyncio.create_task(first())
    waiter = asyncio.create_task(second())
    await asyncio.sleep(0.3)
    assert not waiter.done(), "4,000 + 4,000 tokens do not fit a 6,000-token minute"
    release_first.set()
    waited = await asyncio.wait_for(waiter, timeout=5)
    await holder
    # Without the 3,500 unused tokens given back, the second call would wait ~20 s for the bucket to refill.
    assert waited < 2.0


async def test_limits_are_learned_from_headers_and_never_above_what_remains() -> None:
    pacer = RatePacer(max_concurrency=4)
    pacer.observe(
        {
            "anthropic-ratelimit-requests-limit": "600",
            "anthropic-ratelimit-input-tokens-limit": "30000",
            "anthropic-ratelimit-input-tokens-remaining": "100",
            "anthropic-ratelimit-output-tokens-limit": "8000",
            "anthropic-ratelimit-output-tokens-remaining": "8000",
        }
    )
    assert pacer.limits == {"requests": 600, "input-tokens": 30000, "output-tokens": 8000}
    started = time.monotonic()
    # 100 input tokens remain at 500 a second: a 600-token call waits about a second.
    async with pacer.call(CallCharge(input_tokens=600, output_tokens=100)):
        waited = time.monotonic() - started
    assert 0.7 <= waited <= 2.5
    # A later response (the limits named again) says only 33 output tokens remain: 100 more take ~0.5 s.
    pacer.observe(
        {"anthropic-ratelimit-output-tokens-limit": "8000", "anthropic-ratelimit-output-tokens-remaining": "33"}
    )
    started = time.monotonic()
    async with pacer.call(CallCharge(input_tokens=0, output_tokens=100)):
        waited = time.monotonic() - started
    assert 0.3 <= waited <= 2.0, "every response's remaining count lowers the pacer's, not only the first's"


async def test_until_the_first_response_only_one_call_is_in_flight() -> None:
    pacer = RatePacer(max_concurrency=8)
    in_flight = 0
    most = 0
    first_may_end = asyncio.Event()

    async def call(n: int) -> None:
        nonlocal in_flight, most
        async with pacer.call(CallCharge(input_tokens=10, output_tokens=10)):
            in_flight += 1
            most = max(most, in_flight)
            await (first_may_end.wait() if n == 0 else asyncio.sleep(0.1))
            in_flight -= 1
        pacer.observe({})  # a response without rate-limit headers: no limits

    calls = [asyncio.create_task(call(0))]
    await asyncio.sleep(0.05)
    calls += [asyncio.create_task(call(n)) for n in range(1, 5)]
    await asyncio.sleep(0.2)
    assert most == 1, "the probe call is alone until its response comes back"
    first_may_end.set()
    await asyncio.gather(*calls)
    assert most == 4, "then the others run together"


async def test_after_an_idle_second_the_next_call_goes_alone_to_resync_the_buckets() -> None:
    """The API's bucket may hold less than the minute the pacer assumes: after idling, its headers are asked first."""
    pacer = RatePacer(max_concurrency=8)
    headers = {
        "anthropic-ratelimit-output-tokens-limit": "600000",
        "anthropic-ratelimit-output-tokens-remaining": "9000",
    }
    pacer.observe(headers)
    in_flight = 0
    most = 0

    async def call() -> None:
        nonlocal in_flight, most
        async with pacer.call(CallCharge(input_tokens=0, output_tokens=100)) as ticket:
            in_flight += 1
            most = max(most, in_flight)
            await asyncio.sleep(0.1)
            in_flight -= 1
            ticket.settle(TokenUsage(output_tokens=50))
        pacer.observe(headers)

    await asyncio.gather(*(call() for _ in range(3)))
    assert most == 3, "busy: no probing"
    most = 0
    await asyncio.sleep(1.1)
    first = asyncio.create_task(call())
    await asyncio.sleep(0.02)
    others = [asyncio.create_task(call()) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert most == 1, "after an idle second one call goes first"
    await asyncio.gather(first, *others)
    assert most >= 2, "then the rest together"


def test_input_estimates_follow_what_the_api_counted_per_template() -> None:
    estimates = InputEstimates()
    assert estimates.estimate("a", prompt_chars=8000) == 2000, "before any call: the whole prompt, nothing cached"
    estimates.learn("a", TokenUsage(input_tokens=50, cache_creation_5m_input_tokens=1950))
    for _ in range(20):
        estimates.learn("a", TokenUsage(input_tokens=50, cache_read_input_tokens=1950))
    assert estimates.estimate("a", prompt_chars=8000) < 100, "cache reads are not counted"
    assert estimates.estimate("b", prompt_chars=400) == 100


# --- the generation service under a binding output-token limit --------------------------------------------------

OUTPUT_PER_MINUTE = 120_000  # 2,000 output tokens a second: about 4 conversations of 500 tokens
CALLS = 40


@pytest.fixture
async def limited(database_url: str, tmp_path: Path, fake_api: FakeMessagesApi) -> AsyncIterator[Services]:
    fake_api.update_config(
        {
            "output_tokens_per_minute": OUTPUT_PER_MINUTE,
            # A 6-second bucket (the API's holds a minute) so that the limit binds within a short test.
            "token_burst_seconds": 6,
            "output_tokens": 500,
            "latency_seconds": 0.2,
            "latency_jitter": 0.3,
        }
    )
    settings = test_settings(
        database_url, tmp_path, **claude_settings(fake_api.base_url), model_max_tokens=2048, model_max_concurrency=16
    )
    async with running_services(settings, batch=False) as running:
        yield running


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_under_a_binding_output_token_limit_at_most_5_percent_of_requests_are_refused(
    limited: Services, fake_api: FakeMessagesApi, database_url: str
) -> None:
    """40 calls at once against a limit of ~4 conversations a second: they are paced, not refused."""

    async def one(n: int) -> None:
        request = seed_request(f"paced-{n}")
        await limited.generation_stub.GenerateConversation(request, timeout=90)

    started = time.monotonic()
    await asyncio.gather(*(one(n) for n in range(CALLS)))
    elapsed = time.monotonic() - started

    stats = fake_api.stats()
    assert stats["rate_limited"] <= 0.05 * stats["total"], stats
    rows = await fetch(database_url, "SELECT sum(output_tokens) AS output FROM conversations")
    output = int(rows[0]["output"])
    assert len(await fetch(database_url, "SELECT id FROM conversations")) == CALLS
    # The limit did bind: the bucket (12,000) holds far less than the 40 calls' ~21,000 output tokens.
    assert output > 1.5 * OUTPUT_PER_MINUTE * 6 / 60
    assert elapsed > (output - OUTPUT_PER_MINUTE * 6 / 60) / (OUTPUT_PER_MINUTE / 60) * 0.8
