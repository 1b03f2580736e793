"""Generation guarantees over gRPC: one model call per request_id, permanent provider errors, template choice, logs."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from convgen.settings import Settings, environment_variable_names
from convgen.v1 import catalog_pb2, common_pb2, generation_pb2_grpc
from generation_service.model.anthropic_client import AnthropicModelClient
from generation_service.model.factory import build_model_client
from generation_service.model.offline import OfflineModelClient
from generation_service.model.port import ModelClient
from tests.bad_input.strategies import Answer
from tests.generation.helpers import assert_nothing_written, seed_request_with
from tests.support.demo_catalog import CRISIS, seed_request
from tests.support.messages_api import FakeMessagesApi, Fault
from tests.support.postgres import fetch
from tests.support.processes import ServiceProcess, clean_environment
from tests.support.services import Services

CONFUSION = "53583301-5758-4781-99df-57b9c5fc1949"  # confusion_to_clarity: a template-tier template only
PLACEHOLDER = re.compile(r"\{\{\s*.*?\s*\}\}", re.DOTALL)


async def rows_for(dsn: str, request_id: str) -> int:
    rows = await fetch(dsn, "SELECT id FROM conversations WHERE request_id = $1", request_id)
    return len(rows)


async def test_a_repeated_or_raced_request_id_calls_the_model_once(
    claude: Services, fake_api: FakeMessagesApi, database_url: str
) -> None:
    """The same request_id twice in a row, then 8 times at once, gives one row, one pk, one Messages API request."""
    first = await claude.generation_stub.GenerateConversation(seed_request("twice"))
    second = await claude.generation_stub.GenerateConversation(seed_request("twice"))
    assert (first.pk, first.business_key) == (second.pk, second.business_key)
    assert len(fake_api.requests) == 1
    assert await rows_for(database_url, "twice") == 1

    fake_api.update_config({"latency_seconds": 0.3})  # the first call is still at the model when the others arrive
    raced = await asyncio.gather(
        *(claude.generation_stub.GenerateConversation(seed_request("raced")) for _ in range(8))
    )
    assert len({r.pk for r in raced}) == 1
    assert raced[0].pk != first.pk
    assert len(fake_api.requests) == 2, "one more model request for the raced request_id"
    assert await rows_for(database_url, "raced") == 1


@pytest.mark.parametrize(
    ("fault", "code", "provider_status", "error_type", "provider_message", "reason"),
    [
        (
            Fault.UNAUTHORIZED,
            grpc.StatusCode.FAILED_PRECONDITION,
            "401",
            "authentication_error",
            "invalid x-api-key",
            "MODEL_AUTHENTICATION_FAILED",
        ),
        (
            Fault.FORBIDDEN,
            grpc.StatusCode.PERMISSION_DENIED,
            "403",
            "permission_error",
            "Your API key does not have permission to use the specified resource.",
            "MODEL_PERMISSION_DENIED",
        ),
    ],
    ids=["401", "403"],
)
async def test_a_401_or_403_fails_at_once_with_the_provider_error_in_message_and_details(
    claude: Services,
    fake_api: FakeMessagesApi,
    database_url: str,
    tmp_path: Path,
    fault: Fault,
    code: grpc.StatusCode,
    provider_status: str,
    error_type: str,
    provider_message: str,
    reason: str,
) -> None:
    """401 → FAILED_PRECONDITION, 403 → PERMISSION_DENIED: one request, provider error in message and details."""
    fake_api.inject(fault, times=5)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await claude.generation_stub.GenerateConversation(seed_request(f"denied-{fault.value}"))
    answer = Answer.of_error(caught.value)
    text = f"anthropic {provider_status} {error_type}: {provider_message}"
    assert answer.code == code
    assert answer.message == text
    (sent,) = fake_api.requests
    assert sent.status == int(provider_status), "answered once and not retried"

    assert answer.status is not None, "google.rpc.Status details are attached"
    assert answer.status.code == code.value[0]
    assert answer.status.message == text
    (detail,) = answer.status.details
    info = error_details_pb2.ErrorInfo()
    assert detail.Unpack(info)
    assert info.reason == reason
    assert info.domain == "convgen.v1"
    metadata = dict(info.metadata)
    assert metadata.pop("provider_request_id").startswith("req_"), "the provider's request id is kept"
    assert metadata == {
        "step": "model_call",
        "provider": "anthropic",
        "provider_status": provider_status,
        "provider_error_type": error_type,
        "attempts": "1",
    }

    failures = await fetch(database_url, "SELECT step, error_code, reason, error_message FROM generation_failures")
    assert [tuple(f.values()) for f in failures] == [("model_call", code.name, reason, text)]
    assert await fetch(database_url, "SELECT id FROM conversations") == []
    assert not list((tmp_path / "blobs").rglob("*.json")), "no blob either"


async def test_an_explicit_template_id_is_the_template_used_and_sent(
    claude: Services, fake_api: FakeMessagesApi
) -> None:
    """An explicit template (not the one auto-selection would pick) is stored as used and is the prompt sent."""
    listed = await claude.catalog_stub.ListTemplates(catalog_pb2.ListTemplatesRequest(page_size=100))
    chosen = next(t for t in listed.templates if t.template_name == "couple_conflict_to_alignment_scenario")
    req = seed_request("explicit")  # tier template: auto-selection would pick couple_conflict_to_alignment_template
    req.parameters.template_id = chosen.id

    stored = await claude.generation_stub.GenerateConversation(req)

    assert stored.parameters.template_id == chosen.id
    assert stored.template_name == chosen.template_name
    (sent,) = fake_api.requests
    shared, topic = (block["text"] for block in sent.body["messages"][0]["content"])
    for text, part in ((shared, chosen.template_text), (topic, chosen.topic_text)):
        pattern = ".+?".join(re.escape(piece) for piece in PLACEHOLDER.split(part))
        assert re.fullmatch(pattern, text, re.DOTALL), "the prompt is the chosen template with its placeholders filled"
    assert "David Chen" in shared


@pytest.mark.parametrize(
    ("arc_id", "tier", "fallback"),
    [
        (CONFUSION, common_pb2.TIER_SCENARIO, "confusion_to_clarity_template"),
        (CRISIS, common_pb2.TIER_TEMPLATE, "crisis_to_referral_edge_case"),
    ],
    ids=["confusion-at-scenario", "crisis-at-template"],
)
async def test_a_tier_without_a_template_for_the_arc_falls_back_to_the_arc_alone(
    services: Services, arc_id: str, tier: common_pb2.Tier, fallback: str
) -> None:
    """With the nil template id and no template of the arc at the tier, the arc's own template is used."""
    listed = await services.catalog_stub.ListTemplates(catalog_pb2.ListTemplatesRequest(page_size=100))
    by_name = {t.template_name: t for t in listed.templates}
    stored = await services.generation_stub.GenerateConversation(seed_request_with(emotional_arc_id=arc_id, tier=tier))
    assert stored.template_name == fallback
    assert stored.parameters.template_id == by_name[fallback].id
    assert stored.parameters.tier == tier, "the requested tier is kept"


async def test_an_arc_with_no_template_fails_naming_arc_and_tier_and_writes_no_row_or_blob(
    services: Services, database_url: str, tmp_path: Path
) -> None:
    """No active template of the arc at any tier: FAILED_PRECONDITION naming arc and tier; no row, no blob."""
    await fetch(database_url, "UPDATE prompt_templates SET active = false WHERE arc_key = 'crisis_to_referral'")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await services.generation_stub.GenerateConversation(
            seed_request_with(emotional_arc_id=CRISIS, tier=common_pb2.TIER_TEMPLATE)
        )
    answer = Answer.of_error(caught.value)
    assert answer.code == grpc.StatusCode.FAILED_PRECONDITION
    assert answer.message.startswith("no active prompt template for arc crisis_to_referral (tier template)")
    assert answer.status is not None
    (detail,) = answer.status.details
    info = error_details_pb2.ErrorInfo()
    assert detail.Unpack(info)
    assert (info.reason, dict(info.metadata)) == (
        "NO_TEMPLATE_FOR_ARC",
        {"arc_key": "crisis_to_referral", "tier": "template"},
    )
    await assert_nothing_written(database_url, tmp_path / "blobs")


@pytest.fixture
def no_convgen_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in environment_variable_names():
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


async def client_from_environment(caplog: pytest.LogCaptureFixture) -> tuple[ModelClient, list[logging.LogRecord]]:
    """The model client the service builds from Settings read from the environment (closed), and what it logged."""
    with caplog.at_level(logging.INFO, logger="generation_service.model"):
        client = build_model_client(Settings())
    await client.close()
    return client, [r for r in caplog.records if r.name.startswith("generation_service.model")]


async def test_without_an_api_key_the_model_is_offline_and_the_log_says_so(
    no_convgen_environment: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Settings from an environment without ANTHROPIC_API_KEY build the offline client, with a warning saying so."""
    client, (record,) = await client_from_environment(caplog)
    assert isinstance(client, OfflineModelClient)
    assert client.name == "offline-synthetic"
    assert record.levelno == logging.WARNING
    assert "offline-synthetic" in record.getMessage()
    assert "no ANTHROPIC_API_KEY is set" in record.getMessage()


async def test_with_an_api_key_the_model_is_claude(
    no_convgen_environment: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, fake_api: FakeMessagesApi
) -> None:
    """Settings from an environment with ANTHROPIC_API_KEY and a base URL build the Anthropic client."""
    no_convgen_environment.setenv("ANTHROPIC_API_KEY", "test-key")
    no_convgen_environment.setenv("ANTHROPIC_BASE_URL", fake_api.base_url)
    client, records = await client_from_environment(caplog)
    assert isinstance(client, AnthropicModelClient)
    assert client.name == "claude-sonnet-5-5"
    assert [r.getMessage() for r in records] == [f"using Claude model claude-sonnet-5-5 at {fake_api.base_url}"]


async def test_the_service_logs_carry_the_request_id(database_url: str, tmp_path: Path) -> None:
    """A `convgen serve generation` process logs JSON lines carrying the request_id of the call they belong to,
    also the line of a call that fails before the servicer reads the request (an unknown persona)."""
    service = ServiceProcess(
        "generation",
        clean_environment(
            {
                "DATABASE_URL": database_url,
                "CONVGEN_DATA_DIR": str(tmp_path),
                "BLOB_STORE": "file",
                "LISTEN_HOST": "127.0.0.1",
                "LOG_LEVEL": "DEBUG",
                "LOG_FORMAT": "json",
                "SHUTDOWN_GRACE_SECONDS": "0.5",
            }
        ),
        tmp_path,
    )
    try:
        await service.start()
        async with grpc.aio.insecure_channel(service.address) as channel:
            stub = generation_pb2_grpc.GenerationServiceStub(channel)
            stored = await stub.GenerateConversation(seed_request("logged-request"))
            failing = seed_request("failing-request")
            failing.parameters.persona_id = str(uuid.uuid4())
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await stub.GenerateConversation(failing)
    finally:
        exit_code = await service.terminate()
    assert exit_code == 0
    lines = [json.loads(line) for line in service.log_text().splitlines() if line.startswith("{")]
    tagged = [line for line in lines if line.get("request_id") == "logged-request"]
    assert tagged, f"no log line carries the request id:\n{service.log_tail()}"
    assert any(stored.pk in line["msg"] for line in tagged), "the stored-conversation line names the pk"
    assert all(line.get("rpc", "").endswith("/GenerateConversation") for line in tagged)
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    failed = [line for line in lines if line.get("request_id") == "failing-request"]
    assert any("GenerateConversation failed: NOT_FOUND" in line["msg"] for line in failed), service.log_tail()
