"""The offline model client: schema-valid, deterministic, subject-shaped conversations in a Messages API body."""

from __future__ import annotations

import dataclasses
import json

import pytest

from convgen.catalog.models import ConversationSubject, Tier
from generation_service.conversation_format import SYSTEM_PROMPT
from generation_service.model.errors import ModelOutputInvalid
from generation_service.model.offline import OfflineModelClient
from generation_service.model.port import ModelClient, ModelRequest, ModelResponse, PromptParts
from generation_service.parsing import parse_conversation
from tests.support import demo_catalog


def _request(subject: ConversationSubject, request_id: str = "req-1", max_tokens: int = 8192) -> ModelRequest:
    return ModelRequest(
        prompt=PromptParts(contract=SYSTEM_PROMPT, shared="rendered template", topic="the topic"),
        subject=subject,
        max_tokens=max_tokens,
        request_id=request_id,
    )


async def _complete(subject: ConversationSubject, request_id: str = "req-1") -> ModelResponse:
    return await OfflineModelClient().complete(_request(subject, request_id))


def _spoken(response: ModelResponse) -> str:
    return " ".join(turn["content"] for turn in json.loads(response.text)["turns"])


async def test_every_catalog_combination_validates_without_warnings() -> None:
    client = OfflineModelClient()
    subjects = demo_catalog.all_subjects()
    assert len(subjects) == 3 * 8 * 20
    for subject in subjects:
        response = await client.complete(_request(subject, f"{subject.persona.persona_key}-{subject.topic.topic_key}"))
        parsed = parse_conversation(response.text, response.stop_reason)
        label = f"{subject.persona.persona_key}/{subject.arc.arc_key}/{subject.topic.topic_key}"
        assert parsed.warnings == [], label
        assert 8 <= parsed.turn_count <= 12, label
        user_turns = [t for t in parsed.document["turns"] if t["role"] == "user"]
        assert user_turns[0]["emotional_context"]["primary_emotion"] == subject.arc.starting_emotion, label
        assert user_turns[-1]["emotional_context"]["primary_emotion"] == subject.arc.ending_emotion, label


async def test_scenario_tier_and_unknown_entries_also_validate_without_warnings() -> None:
    base = demo_catalog.subject(1, "fear_to_confidence", 3)
    variants = [
        dataclasses.replace(base, tier=Tier.SCENARIO),
        dataclasses.replace(base, tier=Tier.EDGE_CASE),
        dataclasses.replace(base, arc=dataclasses.replace(base.arc, arc_key="new_arc", starting_emotion="grief")),
        dataclasses.replace(base, topic=dataclasses.replace(base.topic, category="crypto")),
        dataclasses.replace(base, persona=dataclasses.replace(base.persona, communication_style="quiet")),
    ]
    for subject in variants:
        response = await _complete(subject)
        assert parse_conversation(response.text, response.stop_reason).warnings == []


async def test_same_request_gives_the_same_response() -> None:
    subject = demo_catalog.subject(0, "shame_to_acceptance", 17)
    first = await _complete(subject, "abc")
    second = await OfflineModelClient().complete(_request(subject, "abc"))
    assert first == second


async def test_request_ids_vary_the_conversation() -> None:
    subject = demo_catalog.subject(0, "shame_to_acceptance", 17)
    texts = {(await _complete(subject, f"id-{n}")).text for n in range(12)}
    assert len(texts) > 1


async def test_topics_give_visibly_different_conversations() -> None:
    spoken = {}
    for topic in demo_catalog.topics():
        subject = ConversationSubject(
            demo_catalog.personas()[2], demo_catalog.arc("confusion_to_clarity"), topic, Tier.TEMPLATE
        )
        text = _spoken(await _complete(subject))
        assert topic.name in text
        spoken[topic.topic_key] = text
    assert len(set(spoken.values())) == len(spoken)
    # Categories bring their own talking points and next steps, not only a different topic name.
    assert "realized gains" in spoken["tax_loss_harvesting"]
    assert "balances, rates and owners of every education account" in spoken["grandparent_529"]
    assert "guardian and executor" in spoken["estate_planning_basics"]
    assert "realized gains" not in spoken["estate_planning_basics"]


async def test_persona_shapes_the_client_turns() -> None:
    for index, persona in enumerate(demo_catalog.personas()):
        response = await _complete(demo_catalog.subject(index, "confusion_to_clarity", 0))
        document = json.loads(response.text)
        first_turn = document["turns"][0]["content"]
        assert persona.name.split()[0] in first_turn
        assert persona.occupation.lower() in first_turn
        assert persona.income_range in first_turn
        assert persona.name in document["conversation_metadata"]["client_persona"]
    humorous = json.loads((await _complete(demo_catalog.subject(0, "confusion_to_clarity", 0))).text)
    assert "joke" in humorous["turns"][0]["content"]  # "deflects with humor"


async def test_client_intensity_eases_then_the_ending_emotion_builds() -> None:
    response = await _complete(demo_catalog.subject(1, "overwhelm_to_empowerment", 5))
    user = [t["emotional_context"] for t in json.loads(response.text)["turns"] if t["role"] == "user"]
    assert user[0]["intensity"] >= max(u["intensity"] for u in user[1:-1])
    assert user[-1]["intensity"] > user[-2]["intensity"]
    assert user[1]["primary_emotion"] in ("overwhelm", "tentative focus")


@pytest.mark.parametrize(
    ("arc_key", "markers"),
    [
        ("crisis_to_referral", ("988", "not a crisis counselor")),
        ("hostility_to_boundary", ("boundary",)),
        ("overwhelm_to_triage", ("triage", "one next step")),
    ],
)
async def test_edge_case_advisor_sets_a_boundary_or_refers_out(arc_key: str, markers: tuple[str, ...]) -> None:
    for persona_index in range(3):
        for topic in demo_catalog.topics():
            for request_id in ("a", "b", "c"):
                subject = ConversationSubject(
                    demo_catalog.personas()[persona_index], demo_catalog.arc(arc_key), topic, Tier.EDGE_CASE
                )
                turns = json.loads((await _complete(subject, request_id)).text)["turns"]
                advisor = " ".join(t["content"] for t in turns if t["role"] == "assistant")
                for marker in markers:
                    assert marker in advisor, (arc_key, topic.topic_key, request_id)


async def test_edge_tier_on_a_core_arc_still_refers_out() -> None:
    subject = dataclasses.replace(demo_catalog.subject(2, "confusion_to_clarity", 0), tier=Tier.EDGE_CASE)
    assert "referring you" in _spoken(await _complete(subject))


async def test_raw_body_is_a_messages_api_response() -> None:
    request = _request(demo_catalog.subject(2, "couple_conflict_to_alignment", 8))
    response = await OfflineModelClient().complete(request)
    body = json.loads(response.raw_body)
    assert body["id"].startswith("msg_offline_")
    assert body["type"] == "message"
    assert body["role"] == "assistant"
    assert body["model"] == "offline-synthetic" == response.model
    assert body["content"] == [{"type": "text", "text": response.text}]
    assert body["stop_reason"] == "end_turn" == response.stop_reason
    assert body["stop_sequence"] is None
    assert body["usage"] == {
        "input_tokens": request.prompt.characters // 4,
        "output_tokens": len(response.text) // 4,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    assert response.usage.input_tokens == body["usage"]["input_tokens"]
    assert response.usage.output_tokens == body["usage"]["output_tokens"]
    assert response.attempts == 1


async def test_output_longer_than_max_tokens_is_cut_like_the_real_api() -> None:
    response = await OfflineModelClient().complete(_request(demo_catalog.subject(), max_tokens=100))
    assert response.stop_reason == "max_tokens"
    assert len(response.text) == 400
    assert json.loads(response.raw_body)["usage"]["output_tokens"] == 100
    with pytest.raises(ModelOutputInvalid) as caught:
        parse_conversation(response.text, response.stop_reason)
    assert caught.value.reason == "MODEL_OUTPUT_TRUNCATED"


async def test_implements_the_model_client_port() -> None:
    client: ModelClient = OfflineModelClient()
    assert client.name == "offline-synthetic"
    await client.close()
