"""ConvgenClient against the real services: typed calls, errors as ConvgenRpcError, paging, token metadata."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from clients import ConvgenClient, ConvgenRpcError, tier_value
from convgen.v1 import batch_pb2, common_pb2, generation_pb2
from tests.support.demo_catalog import seed_combination_fields
from tests.support.services import Services


async def test_generate_get_and_list_conversations_with_human_keys(client: ConvgenClient) -> None:
    persona = await client.resolve_persona_id("pragmatic_optimist")
    arc = await client.resolve_emotional_arc_id("couple_conflict_to_alignment")
    topic = await client.resolve_training_topic_id("estate_planning_basics")
    assert uuid.UUID(persona)
    assert uuid.UUID(arc)
    assert uuid.UUID(topic)

    stored = await client.generate_conversation(
        persona_id=persona, emotional_arc_id=arc, training_topic_id=topic, tier="template", request_id="client-1"
    )
    assert isinstance(stored, generation_pb2.StoredConversation)
    assert stored.pk != stored.business_key
    assert (stored.persona_key, stored.arc_key, stored.topic_key) == (
        "pragmatic_optimist",
        "couple_conflict_to_alignment",
        "estate_planning_basics",
    )
    assert stored.raw_blob.uri
    assert stored.final_blob.uri

    again = await client.generate_conversation(
        persona_id=persona,
        emotional_arc_id=arc,
        training_topic_id=topic,
        tier=common_pb2.TIER_TEMPLATE,
        request_id="client-1",
    )
    assert again.pk == stored.pk

    by_pk = await client.get_conversation(pk=stored.pk)
    by_key = await client.get_conversation(business_key=stored.business_key, full=True)
    assert by_pk.pk == by_key.pk == stored.pk
    assert not by_pk.HasField("content")
    assert len(by_key.content.turns) == stored.turn_count > 0

    listed = await client.list_conversations(persona_id=persona)
    assert [c.pk for c in listed.conversations] == [stored.pk]
    assert [c.pk async for c in client.iter_conversations(page_size=1)] == [stored.pk]

    estimated = await client.estimate_conversations(
        [{"persona_id": persona, "emotional_arc_id": arc, "training_topic_id": topic, "tier": "template"}] * 3,
        concurrency=2,
    )
    assert estimated.estimate.items == 3
    assert estimated.estimate.model == "offline-synthetic"
    assert estimated.estimate.usage.output_tokens == 3 * stored.usage.output_tokens, "observed output size"
    assert len(estimated.reservation_usd) == 3


async def test_batch_job_lifecycle_through_typed_calls(client: ConvgenClient) -> None:
    job = await client.create_batch_job(
        name="typed", combination=seed_combination_fields(), concurrency=2, auto_start=False, request_id="typed-1"
    )
    assert isinstance(job, batch_pb2.BatchJob)
    assert (job.state, job.total_items, job.concurrency) == (batch_pb2.BATCH_JOB_STATE_QUEUED, 8, 2)
    assert (await client.create_batch_job(combination=seed_combination_fields(), request_id="typed-1")).id == job.id

    step = await client.process_next(job.id)
    assert step.item.state == batch_pb2.BATCH_ITEM_STATE_COMPLETED
    assert step.item.conversation_pk != step.item.conversation_business_key
    assert step.remaining_items == 7
    assert not step.job_finished

    paused = await client.pause_batch_job(job.id)
    assert paused.state == batch_pb2.BATCH_JOB_STATE_PAUSED
    cancelled = await client.cancel_batch_job(job.id)
    assert cancelled.state == batch_pb2.BATCH_JOB_STATE_CANCELLED
    assert (cancelled.completed_items, cancelled.cancelled_items) == (1, 7)

    got = await client.get_batch_job(job.id)
    assert got.state == batch_pb2.BATCH_JOB_STATE_CANCELLED
    assert [j.id for j in (await client.list_batch_jobs(state="cancelled")).batch_jobs] == [job.id]
    assert (await client.list_batch_jobs(state="running")).batch_jobs == []
    failed_items = await client.list_batch_items(job.id, state="failed")
    assert list(failed_items.items) == []
    log = await client.get_batch_job_log(job.id)
    assert log.job_id == job.id
    assert "cancelled" in log.text
    assert log.blob.key == f"{job.id}/log.txt"


async def test_retry_failed_items_and_resume(client: ConvgenClient) -> None:
    parameters = [
        {
            "persona_id": seed_combination_fields()["persona_ids"][0],
            "emotional_arc_id": seed_combination_fields()["emotional_arc_ids"][0],
            "training_topic_id": topic,
            "tier": "template",
        }
        for topic in seed_combination_fields()["training_topic_ids"][:2]
    ]
    job = await client.create_batch_job(parameters=parameters, auto_start=False)
    assert job.total_items == 2
    resumed = await client.resume_batch_job(job.id)
    assert resumed.state in (batch_pb2.BATCH_JOB_STATE_RUNNING, batch_pb2.BATCH_JOB_STATE_COMPLETED)
    with pytest.raises(ConvgenRpcError):
        # Nothing failed, so a named item that is not a failed item of the job is refused.
        await client.retry_failed_items(job.id, item_ids=[str(uuid.uuid4())])


async def test_not_found_becomes_convgen_rpc_error_with_reason(client: ConvgenClient) -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(ConvgenRpcError) as caught:
        await client.get_batch_job(missing)
    error = caught.value
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert missing in error.message
    assert error.reason == "BATCH_JOB_NOT_FOUND"
    assert error.details.domain == "convgen.v1"
    assert str(error) == f"NOT_FOUND: {error.message}"

    with pytest.raises(ConvgenRpcError) as conversation:
        await client.get_conversation(business_key=missing)
    assert conversation.value.code == grpc.StatusCode.NOT_FOUND
    assert conversation.value.reason == "CONVERSATION_NOT_FOUND"


async def test_invalid_argument_carries_field_violations(client: ConvgenClient) -> None:
    with pytest.raises(ConvgenRpcError) as caught:
        await client.create_batch_job(
            combination={
                "persona_ids": ["not-a-uuid"],
                "emotional_arc_ids": seed_combination_fields()["emotional_arc_ids"],
                "training_topic_ids": seed_combination_fields()["training_topic_ids"],
                "tier": "template",
            },
            concurrency=999,
        )
    error = caught.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.message
    fields = {v.field for v in error.field_violations}
    assert {"combination.persona_ids[0]", "concurrency"} <= fields
    assert all(v.description for v in error.field_violations)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c: c.list_batch_jobs(state="sideways"), "state"),
        (lambda c: c.list_conversations(tier="epic"), "tier"),
        (lambda c: c.get_conversation(), "key"),
        (lambda c: c.create_batch_job(name="neither"), "selection"),
        (lambda c: c.resolve_persona_id("nobody_at_all"), None),
    ],
)
async def test_client_side_errors_are_convgen_rpc_errors(
    client: ConvgenClient, call: Callable[[ConvgenClient], Awaitable[Any]], field: str | None
) -> None:
    with pytest.raises(ConvgenRpcError) as caught:
        await call(client)
    if field is None:
        assert caught.value.code == grpc.StatusCode.NOT_FOUND
        assert "pragmatic_optimist" in caught.value.message  # the known keys are listed
    else:
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in caught.value.field_violations] == [field]


def test_enum_arguments_accept_names_and_values() -> None:
    assert tier_value("edge_case") == tier_value("edge-case") == tier_value("TIER_EDGE_CASE")
    assert tier_value(common_pb2.TIER_SCENARIO) == common_pb2.TIER_SCENARIO
    with pytest.raises(ConvgenRpcError):
        tier_value("unspecified")
    with pytest.raises(ConvgenRpcError):
        tier_value(42)


async def test_paging_helpers_walk_every_page(client: ConvgenClient) -> None:
    all_topics = (await client.list_training_topics(page_size=1000)).training_topics
    assert len(all_topics) == 20
    first = await client.list_training_topics(page_size=3)
    assert len(first.training_topics) == 3
    assert first.next_page_token
    walked = [t.topic_key async for t in client.iter_training_topics(page_size=3)]
    assert walked == [t.topic_key for t in all_topics]
    assert len([p async for p in client.iter_personas(page_size=1)]) == 3
    assert len([a async for a in client.iter_emotional_arcs(page_size=3)]) == 8
    assert len([t async for t in client.iter_templates(page_size=2)]) == len(
        (await client.list_templates(page_size=1000)).templates
    )

    job = await client.create_batch_job(combination=seed_combination_fields(), auto_start=False)
    positions = [i.position async for i in client.iter_batch_items(job.id, page_size=3)]
    assert positions == list(range(8))
    assert [i.position async for i in client.iter_batch_items(job.id, state="completed", page_size=3)] == []
    second = await client.create_batch_job(combination=seed_combination_fields(), auto_start=False)
    jobs = [j.id async for j in client.iter_batch_jobs(page_size=1)]
    assert jobs == [second.id, job.id]


class _Recorder(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Records the metadata of every unary call."""

    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self.metadata.append(dict(details.metadata or ()))
        return await continuation(details, request)


async def test_token_is_sent_and_only_own_channels_are_closed(services: Services) -> None:
    generation = services.targets[0]
    recorder = _Recorder()
    channel = grpc.aio.insecure_channel(generation, interceptors=[recorder])
    try:
        borrowed = ConvgenClient.from_channels(generation_channel=channel, token="s3cret")
        async with borrowed:
            await borrowed.list_personas()
        assert recorder.metadata[-1]["authorization"] == "Bearer s3cret"
        # The borrowed channel is still open after the client closed.
        await ConvgenClient.from_channels(generation_channel=channel).list_personas()
        with pytest.raises(ConvgenRpcError) as caught:
            await borrowed.get_batch_job(str(uuid.uuid4()))
        assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        await channel.close()

    same = await ConvgenClient.connect(generation, generation)
    async with same:
        assert len(same._owned) == 1  # one channel per target
        assert len((await same.list_personas()).personas) == 3
