"""GenerateConversation through the real Anthropic SDK against a local Messages API with injected faults."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tests.support.demo_catalog import seed_request
from tests.support.messages_api import FakeMessagesApi, Fault
from tests.support.postgres import fetch
from tests.support.services import Services, claude_settings, running_services, test_settings


@pytest.mark.parametrize(
    "faults",
    [
        [Fault.OK],
        [Fault.OK_FENCED],
        [Fault.OVERLOADED, Fault.OK],
        [Fault.RATE_LIMITED, Fault.OK],
        [Fault.BAD_GATEWAY_HTML, Fault.OK],
        [Fault.SERVER_ERROR, Fault.CONNECTION_RESET, Fault.OK],
    ],
    ids=lambda faults: "-then-".join(f.value for f in faults),
)
async def test_replies_and_transient_faults_end_in_a_stored_conversation(
    claude: Services, fake_api: FakeMessagesApi, tmp_path: Path, faults: list[Fault]
) -> None:
    for fault in faults:
        fake_api.inject(fault)

    stored = await claude.generation_stub.GenerateConversation(seed_request("sdk-path"))

    assert stored.turn_count == 6
    assert stored.model == "claude-sonnet-5-5"
    assert [r.fault for r in fake_api.requests] == faults
    raw = json.loads((tmp_path / "blobs" / "conversation-files" / stored.raw_blob.key).read_bytes())
    assert raw["type"] == "message"
    assert stored.usage.input_tokens > 0
    assert stored.usage.output_tokens > 0
    assert stored.cost_usd > 0
    system = fake_api.requests[-1].body["system"]
    assert system[0]["cache_control"] == {"type": "ephemeral", "ttl": "5m"}, "the output contract is cached"


@pytest.mark.slow
async def test_retry_after_is_honoured(claude: Services, fake_api: FakeMessagesApi) -> None:
    fake_api.update_config({"retry_after_seconds": 1})
    fake_api.inject(Fault.RATE_LIMITED)
    await claude.generation_stub.GenerateConversation(seed_request("retry-after"))
    first, second = fake_api.requests
    assert second.arrived_at - first.arrived_at >= 1.0


async def test_a_400_fails_at_once_with_invalid_argument_and_the_provider_message(
    claude: Services, fake_api: FakeMessagesApi, database_url: str
) -> None:
    fake_api.inject(Fault.BAD_REQUEST)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await claude.generation_stub.GenerateConversation(seed_request("bad-request"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == (
        "anthropic 400 invalid_request_error: messages: text content blocks must be non-empty"
    )
    assert len(fake_api.requests) == 1, "permanent errors are not retried"
    failures = await fetch(database_url, "SELECT step, error_code FROM generation_failures")
    assert [(f["step"], f["error_code"]) for f in failures] == [("model_call", "INVALID_ARGUMENT")]


async def test_persistent_overload_ends_in_resource_exhausted_naming_529(
    claude: Services, fake_api: FakeMessagesApi
) -> None:
    fake_api.inject(Fault.OVERLOADED, times=10)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await claude.generation_stub.GenerateConversation(seed_request("overloaded"))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.details() == "anthropic 529 overloaded_error: Overloaded (after 4 attempts)"
    assert len(fake_api.requests) == 4


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (Fault.TRUNCATED, "model output truncated at max_tokens"),
        (Fault.UNPARSEABLE, "no JSON"),
        (Fault.SCHEMA_INVALID, "turns"),
    ],
)
async def test_unusable_output_fails_clearly_keeps_the_raw_response_and_records_the_failure(
    claude: Services, fake_api: FakeMessagesApi, database_url: str, tmp_path: Path, fault: Fault, message: str
) -> None:
    """Without structured output (a model or stand-in that lacks it) the reply is parsed from text, and can fail."""
    fake_api.update_config({"structured_outputs": False})
    fake_api.inject(fault)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await claude.generation_stub.GenerateConversation(seed_request(f"unusable-{fault.value}"))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = caught.value.details() or ""
    assert message in details
    assert "raw response kept at file://" in details
    failures = await fetch(database_url, "SELECT step, reason, raw_bucket, raw_key FROM generation_failures")
    assert len(failures) == 1
    assert failures[0]["reason"].startswith("MODEL_OUTPUT_")
    raw_path = tmp_path / "blobs" / failures[0]["raw_bucket"] / failures[0]["raw_key"]
    assert json.loads(raw_path.read_bytes())["type"] == "message"
    assert await fetch(database_url, "SELECT id FROM conversations") == []


@pytest.mark.parametrize("fault", [Fault.UNPARSEABLE, Fault.SCHEMA_INVALID, Fault.OK_FENCED])
async def test_with_structured_output_unusable_text_cannot_happen(
    claude: Services, fake_api: FakeMessagesApi, fault: Fault
) -> None:
    """The conversation's JSON schema goes as output_config.format: the reply is the schema's JSON, no failed item."""
    fake_api.inject(fault)

    stored = await claude.generation_stub.GenerateConversation(seed_request(f"structured-{fault.value}"))

    assert stored.turn_count == 6
    (sent,) = fake_api.requests
    output_config = sent.body["output_config"]
    assert output_config["effort"] == "medium"
    assert output_config["format"]["type"] == "json_schema"
    schema = output_config["format"]["schema"]
    assert schema["required"] == ["conversation_metadata", "turns"]
    assert schema["additionalProperties"] is False


@pytest.fixture
async def impatient_services(database_url: str, tmp_path: Path, fake_api: FakeMessagesApi) -> AsyncIterator[Services]:
    settings = test_settings(
        database_url,
        tmp_path,
        **{**claude_settings(fake_api.base_url), "model_timeout_seconds": 1.0},
        model_max_attempts=2,
        model_retry_base_seconds=0.1,
    )
    async with running_services(settings, batch=False) as running:
        yield running


@pytest.mark.slow
async def test_an_answer_slower_than_the_model_timeout_is_cut_and_retried(
    impatient_services: Services, fake_api: FakeMessagesApi
) -> None:
    fake_api.update_config({"slow_seconds": 6.0})
    fake_api.inject(Fault.SLOW)
    stored = await impatient_services.generation_stub.GenerateConversation(seed_request("slow-then-ok"))
    assert stored.turn_count == 6
    slow, retried = fake_api.requests
    assert [slow.fault, retried.fault] == [Fault.SLOW, Fault.OK]
    # The retry went out after the 1 s timeout plus backoff, long before the slow answer (6 s) would have come.
    assert 1.0 <= retried.arrived_at - slow.arrived_at < 3.0


@pytest.mark.slow
async def test_persistent_slowness_ends_in_deadline_exceeded_saying_it_timed_out(
    impatient_services: Services, fake_api: FakeMessagesApi
) -> None:
    fake_api.update_config({"slow_seconds": 6.0})
    fake_api.inject(Fault.SLOW, times=2)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await impatient_services.generation_stub.GenerateConversation(seed_request("always-slow"))
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert caught.value.details() == "anthropic timeout: request timed out (after 2 attempts)"
    assert len(fake_api.requests) == 2
