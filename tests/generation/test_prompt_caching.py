"""Prompt caching that hits, through the real SDK against a stand-in that caches like the API: the prompt layout
(contract, then persona and arc, then topic), and the warning that names a template whose prefix is too short."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from convgen.catalog import repository
from convgen.catalog.models import PromptTemplate, Tier
from convgen.catalog.templates import extract_placeholders, template_uuid
from convgen.db.database import Database
from convgen.pricing import packaged_price_table_path
from generation_service.cache_check import CONTRACT
from tests.support.demo_catalog import seed_request
from tests.support.messages_api import FakeMessagesApi
from tests.support.services import Services, claude_settings, running_services, test_settings

CONFUSION = "53583301-5758-4781-99df-57b9c5fc1949"
TOPICS = ("42f435d0-8450-4ec5-a319-8c9f404e7606", "7ea09d37-5310-4076-a230-3df0c4080966")


async def test_the_persona_and_arc_prefix_is_shared_by_every_topic(claude: Services, fake_api: FakeMessagesApi) -> None:
    first = await claude.generation_stub.GenerateConversation(seed_request("layout-1"))
    request = seed_request("layout-2")
    request.parameters.training_topic_id = TOPICS[0]
    same_arc = await claude.generation_stub.GenerateConversation(request)
    request = seed_request("layout-3")
    request.parameters.training_topic_id = TOPICS[1]
    request.parameters.emotional_arc_id = CONFUSION
    other_arc = await claude.generation_stub.GenerateConversation(request)

    contract_and_shared = first.usage.cache_creation_input_tokens
    assert first.usage.cache_read_input_tokens == 0
    assert same_arc.usage.cache_read_input_tokens == contract_and_shared, "another topic reads contract and shared part"
    assert same_arc.usage.cache_creation_input_tokens == 0
    assert 0 < other_arc.usage.cache_read_input_tokens < contract_and_shared, "another arc reads the contract only"
    assert other_arc.usage.cache_creation_input_tokens > 0
    assert same_arc.usage.input_tokens < 100, "only the topic part is paid in full"
    blocks = fake_api.requests[-1].body["messages"][0]["content"]
    assert [bool(b.get("cache_control")) for b in blocks] == [True, False], "breakpoint after the shared part only"
    assert "Confusion" in blocks[0]["text"]
    assert "## The topic" in blocks[1]["text"]


def _price_table_with_minimum(tmp_path: Path, minimum: int) -> Path:
    data = json.loads(packaged_price_table_path().read_text())
    data["models"]["claude-sonnet-5-5"]["min_cacheable_tokens"] = minimum
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(data))
    return path


async def test_a_prefix_below_the_models_minimum_is_named_at_start_and_when_a_template_changes(
    database_url: str, tmp_path: Path, fake_api: FakeMessagesApi, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    # The contract alone is ~1,400 tokens: below 1,700; with any builtin template's shared part it is above.
    settings = test_settings(
        database_url,
        tmp_path,
        **claude_settings(fake_api.base_url),
        model_price_table_file=_price_table_with_minimum(tmp_path, 1700),
    )
    with caplog.at_level(logging.WARNING, logger="generation_service.cache_check"):
        async with running_services(settings, batch=False) as running:
            assert running.generation is not None
            generator = running.generation.generator
            await generator.checks_done()
            assert set(generator.prefix_check.short) == {CONTRACT}
            assert fake_api.token_counts, "the prefixes were counted with count_tokens"

            async with db.connection() as conn:
                await repository.upsert_template(
                    conn,
                    PromptTemplate(
                        id=template_uuid("tiny_template"),
                        template_name="tiny_template",
                        tier=Tier.SCENARIO,
                        arc_key="confusion_to_clarity",
                        template_text="Talk with {{persona_name}}.",
                        topic_text="About {{topic_name}}.",
                        placeholders=extract_placeholders("{{persona_name}}{{topic_name}}"),
                    ),
                )
            # The next request notices the catalog change; the check runs without holding it up.
            await running.generation_stub.GenerateConversation(seed_request("after-change"))
            await generator.checks_done()
            assert set(generator.prefix_check.short) == {CONTRACT, "template 'tiny_template'"}

    messages = [r.getMessage() for r in caplog.records if r.name == "generation_service.cache_check"]
    assert any("output contract" in m and "1700" in m for m in messages), messages
    tiny = [m for m in messages if "tiny_template" in m]
    assert len(tiny) == 1, "only the changed template is checked again"
    assert "prompt caching will not work" in tiny[0]
    assert "claude-sonnet-5-5" in tiny[0]


async def test_every_prefix_is_short_for_a_model_with_a_large_minimum(
    database_url: str, tmp_path: Path, fake_api: FakeMessagesApi
) -> None:
    settings = test_settings(
        database_url, tmp_path, **claude_settings(fake_api.base_url), anthropic_model="claude-haiku-4-5"
    )
    async with running_services(settings, batch=False) as running:
        assert running.generation is not None
        await running.generation.generator.checks_done()
        short = running.generation.generator.prefix_check.short
    assert CONTRACT in short
    assert "template 'couple_conflict_to_alignment_template'" in short
    assert all(s.minimum == 4096 for s in short.values())
    assert len(short) == 11, "the contract and each of the ten builtin templates"
