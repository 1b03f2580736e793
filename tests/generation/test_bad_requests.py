"""Bad GenerateConversation requests get specific statuses naming the offending value, and write nothing."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from convgen.v1 import common_pb2, generation_pb2
from tests.generation.helpers import assert_nothing_written, seed_request_with
from tests.support.demo_catalog import CRISIS, seed_request
from tests.support.postgres import fetch
from tests.support.services import Services

UNKNOWN = "11111111-2222-3333-4444-555555555555"


async def call(services: Services, req: generation_pb2.GenerateConversationRequest) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await services.generation_stub.GenerateConversation(req)
    return caught.value.code(), caught.value.details() or ""


@pytest.mark.parametrize(
    ("field", "named"),
    [("persona_id", "persona"), ("emotional_arc_id", "emotional_arc"), ("training_topic_id", "training_topic")],
)
async def test_unknown_ids_are_not_found_and_named(
    services: Services, database_url: str, tmp_path: Path, field: str, named: str
) -> None:
    code, message = await call(services, seed_request_with(**{field: UNKNOWN}))
    assert code == grpc.StatusCode.NOT_FOUND
    assert message == f"{named} {UNKNOWN} does not exist"
    await assert_nothing_written(database_url, tmp_path / "blobs")


async def test_every_unknown_id_is_listed(services: Services) -> None:
    code, message = await call(services, seed_request_with(persona_id=UNKNOWN, training_topic_id=UNKNOWN))
    assert code == grpc.StatusCode.NOT_FOUND
    assert message == f"persona {UNKNOWN} does not exist; training_topic {UNKNOWN} does not exist"


async def test_malformed_uuids_and_missing_tier_are_invalid_arguments_naming_each_field(
    services: Services, database_url: str, tmp_path: Path
) -> None:
    code, message = await call(
        services, seed_request_with(persona_id="not-a-uuid", template_id="x" * 36, tier=common_pb2.TIER_UNSPECIFIED)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "parameters.persona_id: 'not-a-uuid' is not a UUID" in message
    assert "parameters.template_id:" in message
    assert "parameters.tier: is required" in message
    await assert_nothing_written(database_url, tmp_path / "blobs")


async def test_missing_parameters_and_bad_created_by_are_invalid(services: Services) -> None:
    code, message = await call(
        services, generation_pb2.GenerateConversationRequest(request_id="x", created_by="nobody")
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "parameters: is required" in message
    assert "created_by: 'nobody' is not a UUID" in message


async def test_unknown_template_is_not_found(services: Services) -> None:
    code, message = await call(services, seed_request_with(template_id=UNKNOWN))
    assert code == grpc.StatusCode.NOT_FOUND
    assert message == f"template {UNKNOWN} does not exist"


async def test_an_arc_without_templates_fails_the_precondition_naming_arc_and_tier(
    services: Services, database_url: str
) -> None:
    # The catalog is cached by the service; a change made behind its back must still be seen at once.
    await services.generation_stub.GenerateConversation(
        generation_pb2.GenerateConversationRequest(
            parameters=seed_request_with(emotional_arc_id=CRISIS, tier=common_pb2.TIER_EDGE_CASE).parameters,
            request_id="warm",
        )
    )
    await fetch(database_url, "UPDATE prompt_templates SET active = false WHERE arc_key = 'crisis_to_referral'")
    code, message = await call(services, seed_request_with(emotional_arc_id=CRISIS, tier=common_pb2.TIER_EDGE_CASE))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert message.startswith("no active prompt template for arc crisis_to_referral (tier edge_case)")
    assert len(await fetch(database_url, "SELECT id FROM conversations")) == 1, "only the warm-up conversation"
    assert await fetch(database_url, "SELECT id FROM generation_failures") == []


async def test_edge_arc_auto_selects_its_edge_case_template(services: Services) -> None:
    stored = await services.generation_stub.GenerateConversation(
        seed_request_with(emotional_arc_id=CRISIS, tier=common_pb2.TIER_EDGE_CASE)
    )
    assert stored.template_name == "crisis_to_referral_edge_case"


async def test_seed_request_still_works_after_the_failures(services: Services) -> None:
    stored = await services.generation_stub.GenerateConversation(seed_request("after-bad"))
    assert stored.pk != stored.business_key
