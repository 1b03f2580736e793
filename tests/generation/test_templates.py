"""Prompt templates: vocabulary, validation, rendering, the packaged builtin templates and their stable ids."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from convgen.catalog.models import ConversationSubject, PromptTemplate, Tier
from convgen.catalog.templates import (
    PER_ITEM_PLACEHOLDERS,
    PLACEHOLDERS,
    TEMPLATE_NAMESPACE,
    InvalidTemplate,
    TemplateDefinition,
    extract_placeholders,
    load_builtin_templates,
    parse_template_file,
    render,
    template_uuid,
    validate_template,
    validate_template_text,
)
from convgen.errors import InvalidArgument
from tests.support import demo_catalog

GOOD_FILE = """\
template_name: sample_template
tier: template
arc_key: confusion_to_clarity
---
Talk with {{persona_name}}.
--- topic ---
The topic is {{ topic_name }}.
"""


def _template(text: str, topic: str = "The topic is {{topic_name}}.", name: str = "t") -> PromptTemplate:
    return PromptTemplate(
        id=uuid.uuid4(),
        template_name=name,
        tier=Tier.TEMPLATE,
        arc_key="confusion_to_clarity",
        template_text=text,
        topic_text=topic,
        placeholders=extract_placeholders(text + topic),
    )


def test_placeholders_cover_persona_arc_topic_and_tier() -> None:
    assert set(PLACEHOLDERS) == {
        "persona_name",
        "persona_archetype",
        "persona_age",
        "persona_occupation",
        "persona_income_range",
        "persona_communication_style",
        "persona_emotional_baseline",
        "arc_name",
        "arc_starting_emotion",
        "arc_ending_emotion",
        "topic_name",
        "topic_category",
        "tier",
    }
    assert all(description for description in PLACEHOLDERS.values())


def test_extract_placeholders_is_sorted_unique_and_tolerates_spaces() -> None:
    assert extract_placeholders("{{ topic_name }} and {{arc_name}} and {{topic_name}}") == ("arc_name", "topic_name")
    assert extract_placeholders("no placeholders, just {single} braces") == ()


def test_unknown_placeholder_fails_naming_template_and_every_unknown_name() -> None:
    with pytest.raises(InvalidTemplate) as caught:
        validate_template_text("my_template", "Hi {{persona_name}}, {{ client_nickname }} and {{bogus}}")
    message = caught.value.message
    assert "'my_template'" in message
    assert "{{client_nickname}}" in message
    assert "{{bogus}}" in message
    assert "persona_name," in message  # the known names are listed, so the fix is obvious
    assert isinstance(caught.value, InvalidArgument)
    assert caught.value.reason == "INVALID_TEMPLATE"
    assert caught.value.violations[0].field == "template_text"


@pytest.mark.parametrize("text", ["Hello {{persona_name", "Hello persona_name}}", "{{topic_name}} and {{ oops"])
def test_unbalanced_braces_fail(text: str) -> None:
    with pytest.raises(InvalidTemplate, match="unbalanced"):
        validate_template_text("t", text)


def test_empty_text_fails() -> None:
    with pytest.raises(InvalidTemplate, match="'t': template text is empty"):
        validate_template_text("t", "  \n ")


def test_render_fills_every_placeholder_in_both_parts() -> None:
    subject = demo_catalog.subject(2, "couple_conflict_to_alignment", 8)
    shared = " | ".join("{{" + name + "}}" for name in PLACEHOLDERS if name not in PER_ITEM_PLACEHOLDERS)
    topic = "{{topic_name}} | {{topic_category}} | {{tier}} | {{persona_name}}"
    rendered = render(_template(shared, topic), subject)
    assert rendered.shared == " | ".join(
        [
            "David Chen",
            "The Pragmatic Optimist",
            "35",
            "Teacher",
            "$65k-$85k",
            "direct, practical, upbeat",
            "hopeful but stretched",
            "Couple Conflict → Alignment",
            "conflict",
            "alignment",
        ]
    )
    assert rendered.topic == "Essential Estate Planning | estate | template | David Chen"


@pytest.mark.parametrize("placeholder", sorted(PER_ITEM_PLACEHOLDERS))
def test_the_shared_part_may_not_use_a_per_item_placeholder(placeholder: str) -> None:
    with pytest.raises(InvalidTemplate) as caught:
        validate_template("my_template", "Talk with {{persona_name}} about {{" + placeholder + "}}.", "Topic.")
    message = caught.value.message
    assert "'my_template'" in message
    assert "{{" + placeholder + "}}" in message
    assert "--- topic ---" in message
    with pytest.raises(InvalidTemplate, match="'my_template'"):
        render(_template("About {{" + placeholder + "}}.", "Topic.", name="my_template"), demo_catalog.subject())


def test_a_template_stored_before_the_topic_part_existed_is_refused_with_the_fix() -> None:
    """A row whose topic still sits in template_text (topic_text empty) names the problem, not an empty topic."""
    with pytest.raises(InvalidTemplate, match=r"shared part uses \{\{topic_name\}\}"):
        render(_template("Talk about {{topic_name}} with {{persona_name}}.", ""), demo_catalog.subject())


def test_render_rejects_unknown_placeholder_instead_of_sending_it() -> None:
    with pytest.raises(InvalidTemplate, match=r"\{\{client_goal\}\}"):
        render(_template("Help {{persona_name}} reach {{client_goal}}"), demo_catalog.subject())


def test_render_rejects_braces_left_by_a_catalog_value() -> None:
    subject = demo_catalog.subject()
    tricky = dataclasses.replace(subject, persona=dataclasses.replace(subject.persona, name="{{persona_name}}"))
    with pytest.raises(InvalidTemplate, match="still contains"):
        render(_template("Hello {{persona_name}}"), tricky)


def test_a_template_serves_each_of_the_eight_arcs_at_its_tier() -> None:
    definitions = load_builtin_templates()
    by_tier: dict[Tier, set[str]] = {tier: set() for tier in Tier}
    for definition in definitions:
        by_tier[definition.tier].add(definition.arc_key)
    arcs = demo_catalog.arcs()
    core = {a.arc_key for a in arcs if a.tier is Tier.TEMPLATE}
    edge = {a.arc_key for a in arcs if a.tier is Tier.EDGE_CASE}
    assert len(core) == 5
    assert len(edge) == 3
    assert by_tier[Tier.TEMPLATE] == core
    assert by_tier[Tier.EDGE_CASE] == edge
    assert len(by_tier[Tier.SCENARIO]) >= 2
    assert by_tier[Tier.SCENARIO] <= core
    assert {d.arc_key for d in definitions} <= {a.arc_key for a in arcs}


def test_builtin_templates_have_unique_names_and_stable_ids() -> None:
    definitions = load_builtin_templates()
    names = [d.template_name for d in definitions]
    assert len(names) == len(set(names))
    for definition in definitions:
        record = definition.to_prompt_template()
        assert record.id == template_uuid(definition.template_name)
        assert record.placeholders == extract_placeholders(definition.template_text + definition.topic_text)
        assert record.active


@pytest.mark.parametrize("definition", load_builtin_templates(), ids=lambda d: d.template_name)
def test_builtin_template_renders_for_every_persona_and_several_topics(definition: TemplateDefinition) -> None:
    validate_template(definition.template_name, definition.template_text, definition.topic_text)
    arc = demo_catalog.arc(definition.arc_key)
    record = definition.to_prompt_template()
    for persona in demo_catalog.personas():
        shared_parts = set()
        for topic in demo_catalog.topics()[::4]:
            rendered = render(record, ConversationSubject(persona, arc, topic, definition.tier))
            whole = rendered.shared + rendered.topic
            assert "{{" not in whole
            assert "}}" not in whole
            assert persona.name in rendered.shared
            assert persona.communication_style in rendered.shared
            assert arc.starting_emotion in rendered.shared
            assert arc.ending_emotion in rendered.shared
            assert "8 and 16 turns" in rendered.shared
            assert topic.name in rendered.topic
            assert topic.name not in rendered.shared
            shared_parts.add(rendered.shared)
        assert len(shared_parts) == 1, "every topic of a persona × arc shares the shared part (it can be cached)"


def test_edge_templates_ask_for_boundaries_referral_or_triage() -> None:
    edge = {d.arc_key: d.template_text for d in load_builtin_templates() if d.tier is Tier.EDGE_CASE}
    assert "988" in edge["crisis_to_referral"]
    assert "boundary" in edge["hostility_to_boundary"]
    assert "triage" in edge["overwhelm_to_triage"]


def test_template_uuid_is_a_stable_uuid5() -> None:
    first = template_uuid("fear_to_confidence_template")
    assert first == template_uuid("fear_to_confidence_template")
    assert first == uuid.uuid5(TEMPLATE_NAMESPACE, "fear_to_confidence_template")
    assert first.version == 5
    assert first != template_uuid("fear_to_confidence_scenario")
    # Pinned: a template must keep its id across installs and releases.
    assert str(first) == "81b1a34f-f592-5031-8de1-833391a725cb"


def test_parse_template_file_reads_header_and_body() -> None:
    definition = parse_template_file("sample_template.md", GOOD_FILE)
    assert definition == TemplateDefinition(
        template_name="sample_template",
        tier=Tier.TEMPLATE,
        arc_key="confusion_to_clarity",
        template_text="Talk with {{persona_name}}.",
        topic_text="The topic is {{ topic_name }}.",
    )
    assert definition.placeholders == ("persona_name", "topic_name")
    assert parse_template_file("crlf.md", GOOD_FILE.replace("\n", "\r\n")) == definition


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD_FILE.replace("---\n", ""), "no '---' line"),
        (GOOD_FILE.replace("tier: template", "tier: premium"), "tier 'premium' is not one of template, scenario"),
        (GOOD_FILE.replace("tier: template", "tier: template\nauthor: me"), "header line 3 'author: me'"),
        (GOOD_FILE.replace("arc_key: confusion_to_clarity\n", ""), "header is missing arc_key"),
        (GOOD_FILE.replace("tier: template", "tier: template\ntier: scenario"), "'tier' appears twice"),
        (GOOD_FILE.replace("{{persona_name}}", "{{persona_nmae}}"), r"unknown placeholder \{\{persona_nmae\}\}"),
        (GOOD_FILE.split("---", maxsplit=1)[0] + "---\n\n--- topic ---\nX\n", "template text is empty"),
        (GOOD_FILE.replace("--- topic ---\n", ""), "no '--- topic ---' line"),
        (GOOD_FILE.replace("The topic is {{ topic_name }}.", ""), "topic text is empty"),
        (GOOD_FILE.replace("Talk with {{persona_name}}.", "Talk about {{tier}}."), r"shared part uses \{\{tier\}\}"),
    ],
)
def test_parse_template_file_rejects_bad_files(text: str, message: str) -> None:
    with pytest.raises(InvalidTemplate, match=message):
        parse_template_file("bad.md", text)
