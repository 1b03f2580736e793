"""Prompt templates: the placeholder vocabulary, validation, rendering and the packaged builtin templates.

A template has two parts, in the order they are sent: the shared part (the persona and the arc: the same for every
topic of a job, so it is prompt-cached) and the topic part (what differs per item: the topic and the tier). The
shared part may not use a per-item placeholder, or no two items would share it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType

from convgen.catalog.models import ConversationSubject, PromptTemplate, Tier
from convgen.errors import FieldViolation, InvalidArgument

PLACEHOLDERS: Mapping[str, str] = MappingProxyType(
    {
        "persona_name": "the client's name, e.g. David Chen",
        "persona_archetype": "the client's archetype, e.g. The Pragmatic Optimist",
        "persona_age": "the client's age in years",
        "persona_occupation": "the client's occupation",
        "persona_income_range": "the client's income range, e.g. $65k-$85k",
        "persona_communication_style": "how the client talks, e.g. direct, practical, upbeat",
        "persona_emotional_baseline": "the client's usual emotional state",
        "arc_name": "the emotional arc's name, e.g. Fear → Confidence",
        "arc_starting_emotion": "the client's emotion when the session starts",
        "arc_ending_emotion": "the client's emotion when the session ends",
        "topic_name": "what the session is about, e.g. Essential Estate Planning",
        "topic_category": "the topic's category, e.g. estate",
        "tier": "the prompt tier: template, scenario or edge_case",
    }
)

# Fixed forever: changing it would give every builtin template a new id on the next install.
TEMPLATE_NAMESPACE = uuid.UUID("3f1c9a52-7d4e-5b8a-9c61-2e0f4d7b8a13")

_PLACEHOLDER = re.compile(r"\{\{\s*(.*?)\s*\}\}", re.DOTALL)
_HEADER_KEYS = ("template_name", "tier", "arc_key")
_HEADER_END = "---"
_BUILTIN_PACKAGE = "convgen.catalog.prompt_templates"
_SUBJECT_VALUES: Mapping[str, Callable[[ConversationSubject], object]] = MappingProxyType(
    {
        "persona_name": lambda s: s.persona.name,
        "persona_archetype": lambda s: s.persona.archetype,
        "persona_age": lambda s: s.persona.age,
        "persona_occupation": lambda s: s.persona.occupation,
        "persona_income_range": lambda s: s.persona.income_range,
        "persona_communication_style": lambda s: s.persona.communication_style,
        "persona_emotional_baseline": lambda s: s.persona.emotional_baseline,
        "arc_name": lambda s: s.arc.name,
        "arc_starting_emotion": lambda s: s.arc.starting_emotion,
        "arc_ending_emotion": lambda s: s.arc.ending_emotion,
        "topic_name": lambda s: s.topic.name,
        "topic_category": lambda s: s.topic.category,
        "tier": lambda s: s.tier.value,
    }
)
assert _SUBJECT_VALUES.keys() == PLACEHOLDERS.keys()
# Placeholders whose value differs between the items of a job (one persona × arc meets many topics and tiers).
PER_ITEM_PLACEHOLDERS = frozenset({"topic_name", "topic_category", "tier"})
# The line between a template file's shared part and its topic part.
TOPIC_MARKER = "--- topic ---"


class InvalidTemplate(InvalidArgument):
    """A prompt template's text cannot be used: empty, unbalanced braces or unknown placeholders."""

    default_reason = "INVALID_TEMPLATE"


@dataclass(frozen=True)
class TemplateDefinition:
    """A prompt template as written in a file, before it has a database row."""

    template_name: str
    tier: Tier
    arc_key: str
    template_text: str
    topic_text: str

    @property
    def placeholders(self) -> tuple[str, ...]:
        """The placeholder names both parts use."""
        return extract_placeholders(self.template_text + self.topic_text)

    @property
    def id(self) -> uuid.UUID:
        """The template's stable id."""
        return template_uuid(self.template_name)

    def to_prompt_template(self) -> PromptTemplate:
        """The catalog value for this definition, with its stable id."""
        return PromptTemplate(
            id=self.id,
            template_name=self.template_name,
            tier=self.tier,
            arc_key=self.arc_key,
            template_text=self.template_text,
            topic_text=self.topic_text,
            placeholders=self.placeholders,
        )


def extract_placeholders(text: str) -> tuple[str, ...]:
    """The sorted unique names written as {{name}} (spaces inside the braces allowed)."""
    return tuple(sorted({match.group(1) for match in _PLACEHOLDER.finditer(text)}))


def validate_template_text(name: str, text: str, *, part: str = "template text") -> None:
    """Raises InvalidTemplate naming the template and every problem: empty, unbalanced or unknown placeholders."""
    if not text.strip():
        raise _invalid(name, f"{part} is empty")
    problems: list[str] = []
    leftover = _PLACEHOLDER.sub("", text)
    if "{{" in leftover or "}}" in leftover:
        problems.append("unbalanced '{{' or '}}' (every '{{' needs a matching '}}')")
    unknown = [p for p in extract_placeholders(text) if p not in PLACEHOLDERS]
    if unknown:
        shown = ", ".join("{{" + p + "}}" for p in unknown)
        problems.append(f"unknown placeholder{'s' if len(unknown) > 1 else ''} {shown}")
    if problems:
        raise _invalid(name, "; ".join(problems) + f" (known placeholders: {', '.join(PLACEHOLDERS)})")


def validate_template(name: str, template_text: str, topic_text: str) -> None:
    """Checks both parts, and that the shared part uses no per-item placeholder (it could not be shared)."""
    validate_template_text(name, template_text)
    per_item = [p for p in extract_placeholders(template_text) if p in PER_ITEM_PLACEHOLDERS]
    if per_item:
        shown = ", ".join("{{" + p + "}}" for p in per_item)
        raise _invalid(
            name,
            f"the shared part uses {shown}, which differs from item to item: move it to the topic part (after a "
            f"'{TOPIC_MARKER}' line), so that the items of a job share the shared part and it can be cached",
        )
    validate_template_text(name, topic_text, part="topic text")


@dataclass(frozen=True)
class RenderedTemplate:
    """A template filled for one conversation: the shared part (persona and arc) first, the topic part last."""

    shared: str
    topic: str


def render(template: PromptTemplate, subject: ConversationSubject) -> RenderedTemplate:
    """Fills every placeholder from the subject; raises InvalidTemplate rather than send a leftover to the model."""
    validate_template(template.template_name, template.template_text, template.topic_text)
    rendered = RenderedTemplate(_fill(template.template_text, subject), _fill(template.topic_text, subject))
    if any("{{" in text or "}}" in text for text in (rendered.shared, rendered.topic)):
        raise _invalid(template.template_name, "rendered prompt still contains '{{' or '}}' (from a catalog value)")
    return rendered


def _fill(text: str, subject: ConversationSubject) -> str:
    return _PLACEHOLDER.sub(lambda m: str(_SUBJECT_VALUES[m.group(1)](subject)), text)


def template_uuid(template_name: str) -> uuid.UUID:
    """The id a template keeps across installs: uuid5 of its name in convgen's template namespace."""
    return uuid.uuid5(TEMPLATE_NAMESPACE, template_name)


def parse_template_file(filename: str, text: str) -> TemplateDefinition:
    """Parses a 'key: value' header, a '---' line, the shared part, a '--- topic ---' line and the topic part.

    Raises InvalidTemplate naming the file.
    """
    normalized = text.lstrip("\ufeff").replace("\r\n", "\n")
    header, separator, body = normalized.partition(f"\n{_HEADER_END}\n")
    if not separator:
        raise _invalid(filename, f"no '{_HEADER_END}' line between the header and the body")
    fields: dict[str, str] = {}
    for number, line in enumerate(header.splitlines(), start=1):
        if not line.strip():
            continue
        key, colon, value = line.partition(":")
        key = key.strip()
        if not colon or key not in _HEADER_KEYS:
            raise _invalid(filename, f"header line {number} {line!r} is not one of {', '.join(_HEADER_KEYS)}")
        if key in fields:
            raise _invalid(filename, f"header key {key!r} appears twice")
        fields[key] = value.strip()
    missing = [key for key in _HEADER_KEYS if not fields.get(key)]
    if missing:
        raise _invalid(filename, f"header is missing {', '.join(missing)}")
    try:
        tier = Tier(fields["tier"])
    except ValueError:
        tiers = ", ".join(t.value for t in Tier)
        raise _invalid(filename, f"tier {fields['tier']!r} is not one of {tiers}") from None
    shared, marker, topic = body.partition(f"\n{TOPIC_MARKER}\n")
    if not marker:
        raise _invalid(filename, f"no '{TOPIC_MARKER}' line between the shared part and the topic part")
    definition = TemplateDefinition(
        template_name=fields["template_name"],
        tier=tier,
        arc_key=fields["arc_key"],
        template_text=shared.strip(),
        topic_text=topic.strip(),
    )
    validate_template(definition.template_name, definition.template_text, definition.topic_text)
    return definition


def load_builtin_templates() -> list[TemplateDefinition]:
    """Reads and validates the templates packaged in convgen/catalog/prompt_templates, sorted by file name."""
    definitions: list[TemplateDefinition] = []
    seen: dict[str, str] = {}
    files = sorted(
        (entry for entry in resources.files(_BUILTIN_PACKAGE).iterdir() if entry.name.endswith(".md")),
        key=lambda entry: entry.name,
    )
    for entry in files:
        definition = parse_template_file(entry.name, entry.read_text(encoding="utf-8"))
        if definition.template_name in seen:
            raise _invalid(
                entry.name,
                f"template_name {definition.template_name!r} is also used by {seen[definition.template_name]}",
            )
        seen[definition.template_name] = entry.name
        definitions.append(definition)
    return definitions


def _invalid(name: str, problem: str) -> InvalidTemplate:
    """An InvalidTemplate whose message starts with the template (or file) name."""
    description = f"template {name!r}: {problem}"
    return InvalidTemplate(description, violations=[FieldViolation("template_text", description)])
