"""The fake Messages API, exercised through the real anthropic SDK."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import pytest

from tests.support.messages_api import FakeApiConfig, FakeMessagesApi, Fault, build_conversation
from tests.support.processes import start_python_module

MODEL = "claude-sonnet-4-6"
API_HEADERS = {"x-api-key": "test-key", "anthropic-version": "2023-06-01"}


@pytest.fixture
async def api() -> AsyncIterator[FakeMessagesApi]:
    async with FakeMessagesApi() as server:
        yield server


@pytest.fixture
async def client(api: FakeMessagesApi) -> AsyncIterator[anthropic.AsyncAnthropic]:
    sdk = anthropic.AsyncAnthropic(api_key="test-key", base_url=api.base_url, max_retries=0)
    yield sdk
    await sdk.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def ask(client: anthropic.AsyncAnthropic, text: str = "Help me plan for retirement", **kwargs: Any) -> Any:
    return await client.messages.create(
        model=MODEL, max_tokens=1024, messages=[{"role": "user", "content": text}], **kwargs
    )


def check_conversation(text: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(text)
    assert set(document["conversation_metadata"]) == {
        "client_persona",
        "session_context",
        "conversation_phase",
        "expected_outcome",
    }
    turns = document["turns"]
    assert [turn["turn_number"] for turn in turns] == [1, 2, 3, 4, 5, 6]
    assert [turn["role"] for turn in turns] == ["user", "assistant"] * 3
    for turn in turns:
        assert len(turn["content"]) >= 40
        emotion = turn["emotional_context"]
        assert emotion["primary_emotion"]
        assert emotion["secondary_emotion"]
        assert 0 <= emotion["intensity"] <= 1
    return document


async def test_ok_reply_is_a_valid_messages_response(api: FakeMessagesApi, client: anthropic.AsyncAnthropic) -> None:
    message = await ask(client, 'Our "emergency fund"\nis   empty and we feel stuck')

    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == MODEL
    assert message.id.startswith("msg_01")
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0
    document = check_conversation(message.content[0].text)
    assert 'Our "emergency fund" is empty and we feel stuck' in document["turns"][0]["content"]
    recorded = api.requests[-1]
    assert recorded.fault is Fault.OK
    assert recorded.status == 200
    assert recorded.body["model"] == MODEL
    assert recorded.headers["authorization"] == "Bearer test-key"
    assert api.stats()["faults"] == {"ok": 1}


async def test_fenced_reply_wraps_the_conversation_in_prose(
    api: FakeMessagesApi, client: anthropic.AsyncAnthropic
) -> None:
    api.inject(Fault.OK_FENCED)

    text = (await ask(client)).content[0].text

    before, fenced = text.split("```json\n", 1)
    body, after = fenced.split("\n```", 1)
    assert before.strip()
    assert after.strip()
    check_conversation(body)


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault.OVERLOADED, (anthropic.OverloadedError, 529, "overloaded_error")),
        (Fault.RATE_LIMITED, (anthropic.RateLimitError, 429, "rate_limit_error")),
        (Fault.SERVER_ERROR, (anthropic.InternalServerError, 500, "api_error")),
        (Fault.SERVICE_UNAVAILABLE, (anthropic.InternalServerError, 503, "api_error")),
        (Fault.BAD_REQUEST, (anthropic.BadRequestError, 400, "invalid_request_error")),
        (Fault.UNAUTHORIZED, (anthropic.AuthenticationError, 401, "authentication_error")),
        (Fault.FORBIDDEN, (anthropic.PermissionDeniedError, 403, "permission_error")),
    ],
)
async def test_error_faults_raise_the_sdk_error(
    api: FakeMessagesApi,
    client: anthropic.AsyncAnthropic,
    fault: Fault,
    expected: tuple[type[anthropic.APIStatusError], int, str],
) -> None:
    error_type, status, api_type = expected
    api.inject(fault)

    with pytest.raises(error_type) as caught:
        await ask(client)

    error = caught.value
    assert error.status_code == status
    assert error.type == api_type
    assert error.request_id is not None
    assert error.request_id.startswith("req_")
    assert isinstance(error.body, dict)
    assert error.body["type"] == "error"
    assert error.body["request_id"] == error.request_id
    if fault is Fault.OVERLOADED:
        assert error.api_message == "Overloaded"
    if fault is Fault.RATE_LIMITED:
        assert error.response.headers["retry-after"] == "1"
    assert api.requests[-1].status == status


async def test_bad_gateway_is_html(client: anthropic.AsyncAnthropic, api: FakeMessagesApi) -> None:
    api.inject("bad_gateway_html")

    with pytest.raises(anthropic.InternalServerError) as caught:
        await ask(client)

    assert caught.value.status_code == 502
    assert caught.value.response.headers["content-type"].startswith("text/html")
    assert isinstance(caught.value.body, str)
    assert caught.value.body.startswith("<html><head><title>502 Bad Gateway</title></head><body>")


async def test_ok_status_faults_return_broken_text(api: FakeMessagesApi, client: anthropic.AsyncAnthropic) -> None:
    api.inject(Fault.UNPARSEABLE)
    api.inject(Fault.TRUNCATED)
    api.inject(Fault.SCHEMA_INVALID)

    unparseable = await ask(client)
    truncated = await ask(client)
    schema_invalid = await ask(client)

    with pytest.raises(json.JSONDecodeError):
        json.loads(unparseable.content[0].text)
    assert truncated.stop_reason == "max_tokens"
    assert truncated.usage.output_tokens == 1024
    with pytest.raises(json.JSONDecodeError):
        json.loads(truncated.content[0].text)
    assert truncated.content[0].text.startswith('{"conversation_metadata"')
    document = json.loads(schema_invalid.content[0].text)
    assert "conversation_metadata" in document
    assert "turns" not in document


async def test_connection_reset_is_a_connection_error(api: FakeMessagesApi, client: anthropic.AsyncAnthropic) -> None:
    api.inject(Fault.CONNECTION_RESET)

    with pytest.raises(anthropic.APIConnectionError) as caught:
        await ask(client)

    assert not isinstance(caught.value, anthropic.APITimeoutError)
    assert api.requests[-1].status == 0
    check_conversation((await ask(client)).content[0].text)


async def test_slow_times_out_a_short_client_timeout(api: FakeMessagesApi, client: anthropic.AsyncAnthropic) -> None:
    api.inject(Fault.SLOW)

    started = time.monotonic()
    with pytest.raises(anthropic.APITimeoutError):
        await ask(client, timeout=0.3)

    assert time.monotonic() - started < 5
    assert api.requests[-1].fault is Fault.SLOW


async def test_slow_answers_after_slow_seconds(api: FakeMessagesApi, client: anthropic.AsyncAnthropic) -> None:
    api.config.slow_seconds = 0.3
    api.inject(Fault.SLOW)

    started = time.monotonic()
    message = await ask(client)

    assert time.monotonic() - started >= 0.3
    check_conversation(message.content[0].text)


async def test_scripted_match_only_hits_matching_requests(
    api: FakeMessagesApi, client: anthropic.AsyncAnthropic
) -> None:
    api.inject(Fault.OVERLOADED, times=2, match="needle-42")

    await ask(client, "an ordinary request")
    with pytest.raises(anthropic.OverloadedError):
        await ask(client, "this one has needle-42 inside")
    await ask(client, "another ordinary request")
    with pytest.raises(anthropic.OverloadedError):
        await ask(client, "needle-42 again")
    await ask(client, "needle-42 but the script is used up")

    assert [record.fault for record in api.requests] == [
        Fault.OK,
        Fault.OVERLOADED,
        Fault.OK,
        Fault.OVERLOADED,
        Fault.OK,
    ]


async def test_scripted_faults_are_fifo_and_clearable(api: FakeMessagesApi, client: anthropic.AsyncAnthropic) -> None:
    api.inject(Fault.SERVER_ERROR)
    api.inject(Fault.FORBIDDEN)
    api.inject(Fault.OVERLOADED)

    with pytest.raises(anthropic.InternalServerError):
        await ask(client)
    with pytest.raises(anthropic.PermissionDeniedError):
        await ask(client)
    api.clear_injections()
    await ask(client)


async def test_request_validation(api: FakeMessagesApi, http: aiohttp.ClientSession) -> None:
    url = f"{api.base_url}/v1/messages"
    good: dict[str, Any] = {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    cases: list[tuple[dict[str, str], Any, int, str]] = [
        ({"anthropic-version": "2023-06-01"}, good, 401, "x-api-key"),
        ({"x-api-key": "k"}, good, 400, "anthropic-version"),
        (API_HEADERS, {**good, "model": None}, 400, "model"),
        (API_HEADERS, {k: v for k, v in good.items() if k != "max_tokens"}, 400, "max_tokens"),
        (API_HEADERS, {**good, "max_tokens": 0}, 400, "max_tokens"),
        (API_HEADERS, {**good, "messages": []}, 400, "messages"),
        (API_HEADERS, {**good, "system": 5}, 400, "system"),
        (API_HEADERS, [1, 2], 400, "JSON object"),
    ]
    for headers, body, status, named in cases:
        async with http.post(url, json=body, headers=headers) as response:
            payload = await response.json()
            assert response.status == status, (headers, body)
            assert payload["type"] == "error"
            assert named in payload["error"]["message"]
            assert response.headers["request-id"] == payload["request_id"]
    assert all(record.fault is None for record in api.requests)

    async with http.get(f"{api.base_url}/v1/nothing") as response:
        assert response.status == 404
        assert (await response.json())["error"]["type"] == "not_found_error"


async def test_system_as_string_and_blocks(client: anthropic.AsyncAnthropic) -> None:
    plain = await ask(client, system="You write conversations.")
    blocks = await ask(client, system=[{"type": "text", "text": "You write conversations."}])

    assert plain.usage.input_tokens == blocks.usage.input_tokens
    assert plain.usage.cache_creation_input_tokens == 0
    assert blocks.usage.cache_read_input_tokens == 0


async def test_cache_tokens_created_then_read(api: FakeMessagesApi, client: anthropic.AsyncAnthropic) -> None:
    cached_text = "You are a financial planning conversation writer. " * 100  # 5,100 characters: 1,275 tokens
    system: Any = [
        {"type": "text", "text": cached_text, "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Persona: cautious saver."},
    ]
    expected = len(cached_text) // 4

    first = await ask(client, system=system)
    api.inject(Fault.OVERLOADED)
    with pytest.raises(anthropic.OverloadedError):
        await ask(client, system=system)
    second = await ask(client, system=system)
    other = await ask(client, system=[{**system[0], "text": cached_text + "v2"}])

    assert first.usage.cache_creation_input_tokens == expected
    assert first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_creation_input_tokens == 0
    assert second.usage.cache_read_input_tokens == expected
    assert second.usage.input_tokens == first.usage.input_tokens
    assert other.usage.cache_creation_input_tokens > 0
    assert other.usage.cache_read_input_tokens == 0


async def test_rate_limiter_returns_429_with_retry_after(
    api: FakeMessagesApi, client: anthropic.AsyncAnthropic
) -> None:
    api.config.requests_per_minute = 60
    api.config.burst = 3

    for _ in range(3):
        response = await client.messages.with_raw_response.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
        assert response.headers["anthropic-ratelimit-requests-limit"] == "60"
        datetime.fromisoformat(response.headers["anthropic-ratelimit-requests-reset"])
    assert response.headers["anthropic-ratelimit-requests-remaining"] == "0"
    with pytest.raises(anthropic.RateLimitError) as caught:
        await ask(client)

    assert caught.value.response.headers["retry-after"] == "1"
    assert caught.value.type == "rate_limit_error"
    assert api.requests[-1].throttled
    assert api.requests[-1].fault is None
    stats = api.stats()
    assert stats["rate_limited"] == 1
    assert stats["throttled"] == 1
    assert stats["statuses"] == {"200": 3, "429": 1}


async def test_rate_limiter_refills_continuously(api: FakeMessagesApi, client: anthropic.AsyncAnthropic) -> None:
    api.config.requests_per_minute = 120  # one token every 0.5 s
    api.config.burst = 4

    results = await asyncio.gather(*(ask(client) for _ in range(6)), return_exceptions=True)
    assert sum(isinstance(result, anthropic.RateLimitError) for result in results) == 2

    await asyncio.sleep(0.6)
    await ask(client)
    with pytest.raises(anthropic.RateLimitError) as caught:
        await ask(client)
    assert caught.value.response.headers["retry-after"] == "1"


async def test_rate_limit_check_happens_before_latency(api: FakeMessagesApi, client: anthropic.AsyncAnthropic) -> None:
    api.config.requests_per_minute = 60
    api.config.latency_seconds = 0.4

    started = time.monotonic()
    results = await asyncio.gather(ask(client), ask(client), return_exceptions=True)

    assert time.monotonic() - started < 1.5
    assert sum(isinstance(result, anthropic.RateLimitError) for result in results) == 1


async def test_latency_and_jitter(api: FakeMessagesApi, client: anthropic.AsyncAnthropic) -> None:
    api.config.latency_seconds = 0.2
    api.config.latency_jitter = 0.5

    started = time.monotonic()
    await asyncio.gather(*(ask(client) for _ in range(5)))
    elapsed = time.monotonic() - started

    assert 0.1 <= elapsed < 1.0


async def fault_sequence(config: FakeApiConfig, count: int) -> tuple[list[Fault | None], list[str]]:
    async with FakeMessagesApi(config) as server:
        sdk = anthropic.AsyncAnthropic(api_key="k", base_url=server.base_url, max_retries=0)
        ids = []
        try:
            for index in range(count):
                try:
                    ids.append((await ask(sdk, f"request {index}")).id)
                except anthropic.APIStatusError as error:
                    ids.append(error.request_id or "")
        finally:
            await sdk.close()
        return [record.fault for record in server.requests], ids


async def test_mix_is_deterministic_for_a_seed() -> None:
    mix = {"overloaded": 0.3, "server_error": 0.2, "ok_fenced": 0.1}

    first = await fault_sequence(FakeApiConfig(seed=7, fault_mix=mix), 40)
    again = await fault_sequence(FakeApiConfig(seed=7, fault_mix=mix), 40)
    other = await fault_sequence(FakeApiConfig(seed=8, fault_mix=mix), 40)

    assert first == again
    assert first != other
    faults = first[0]
    assert {Fault.OK, Fault.OVERLOADED, Fault.SERVER_ERROR} <= set(faults)
    assert 4 <= faults.count(Fault.OVERLOADED) <= 22


def test_config_rejects_bad_fault_mix() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        FakeMessagesApi(FakeApiConfig(fault_mix={"exploded": 0.1}))
    with pytest.raises(ValueError, match="more than 1"):
        FakeMessagesApi(FakeApiConfig(fault_mix={"overloaded": 0.7, "slow": 0.5}))


async def test_control_endpoints(
    api: FakeMessagesApi, client: anthropic.AsyncAnthropic, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{api.base_url}/_fake/config", json={"fault_mix": {"overloaded": 1.0}}) as response:
        assert response.status == 200
        assert (await response.json())["fault_mix"] == {"overloaded": 1.0}
    with pytest.raises(anthropic.OverloadedError):
        await ask(client)

    async with http.post(f"{api.base_url}/_fake/config", json={"fault_mix": {}, "requests_per_minute": 0}) as response:
        assert response.status == 200
    async with http.post(f"{api.base_url}/_fake/inject", json={"fault": "forbidden", "times": 2, "match": "x1"}) as r:
        assert r.status == 200
        assert (await r.json())["pending_injections"] == 2
    with pytest.raises(anthropic.PermissionDeniedError):
        await ask(client, "x1")
    await ask(client, "y")

    async with http.get(f"{api.base_url}/_fake/stats") as response:
        stats = await response.json()
    assert stats["total"] == 3
    assert stats["faults"] == {"overloaded": 1, "forbidden": 1, "ok": 1}
    assert stats["statuses"] == {"529": 1, "403": 1, "200": 1}
    assert stats["pending_injections"] == 1

    async with http.post(f"{api.base_url}/_fake/config", json={"no_such_field": 1}) as response:
        assert response.status == 400
    async with http.post(f"{api.base_url}/_fake/config", json={"fault_mix": {"ok": 2}}) as response:
        assert response.status == 400
    async with http.post(f"{api.base_url}/_fake/inject", json={"fault": "nonsense"}) as response:
        assert response.status == 400
    assert api.config.fault_mix == {}

    async with http.post(f"{api.base_url}/_fake/reset") as response:
        assert (await response.json())["total"] == 0
    assert api.requests == []
    await ask(client, "x1")
    assert api.requests[-1].fault is Fault.OK


async def test_reset_forgets_cache_and_reseeds(api: FakeMessagesApi, client: anthropic.AsyncAnthropic) -> None:
    system: Any = [{"type": "text", "text": "cached " * 700, "cache_control": {"type": "ephemeral"}}]
    first = await ask(client, system=system)
    api.reset()
    again = await ask(client, system=system)

    assert again.usage.cache_creation_input_tokens == first.usage.cache_creation_input_tokens > 0
    assert again.id == first.id


def test_conversation_text_is_built_once_per_excerpt() -> None:
    assert build_conversation("saving for a house") is build_conversation("saving for a house")
    check_conversation(build_conversation('tricky "quotes" \\ and\nnewlines'))


async def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    process = await start_python_module(
        "tests.support.messages_api",
        *("--rpm", "600", "--fault-mix", '{"overloaded": 0.0}', "--seed", "1", "--ready-file", str(ready)),
    )
    try:
        deadline = time.monotonic() + 15
        while not ready.exists():
            assert process.returncode is None, "the CLI exited before it was ready"
            assert time.monotonic() < deadline, "the CLI did not become ready"
            await asyncio.sleep(0.05)
        base_url = ready.read_text()
        assert base_url.startswith("http://127.0.0.1:")

        sdk = anthropic.AsyncAnthropic(api_key="k", base_url=base_url, max_retries=0)
        try:
            response = await sdk.messages.with_raw_response.create(
                model=MODEL, max_tokens=1024, messages=[{"role": "user", "content": "from the CLI test"}]
            )
        finally:
            await sdk.close()
        assert response.headers["anthropic-ratelimit-requests-limit"] == "600"
        check_conversation((await response.parse()).content[0].text)

        process.send_signal(signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=10)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()
    assert stdout == b""
    assert stderr == b""


async def test_cli_refuses_a_non_loopback_host() -> None:
    process = await start_python_module("tests.support.messages_api", "--host", "0.0.0.0")
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=15)

    assert process.returncode == 2
    assert b"loopback only" in stderr
