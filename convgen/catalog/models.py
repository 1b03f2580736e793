"""Catalog entries as typed values, the Tier vocabulary and the parameters of one generation, shared by both
services."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

# The nil UUID stands for "none": as a template_id it asks for auto-selection, as created_by it means anonymous.
NIL_UUID = uuid.UUID(int=0)


class Tier(StrEnum):
    """Prompt tier; the value is what the database stores."""

    TEMPLATE = "template"
    SCENARIO = "scenario"
    EDGE_CASE = "edge_case"


@dataclass(frozen=True)
class Persona:
    """A client persona."""

    id: uuid.UUID
    persona_key: str
    name: str
    archetype: str
    age: int
    occupation: str
    income_range: str
    communication_style: str
    emotional_baseline: str


@dataclass(frozen=True)
class EmotionalArc:
    """How the client's emotions move through a session."""

    id: uuid.UUID
    arc_key: str
    name: str
    tier: Tier
    category: str
    starting_emotion: str
    ending_emotion: str


@dataclass(frozen=True)
class TrainingTopic:
    """What a session is about."""

    id: uuid.UUID
    topic_key: str
    name: str
    category: str


@dataclass(frozen=True)
class PromptTemplate:
    """A prompt with {{placeholders}}, serving one arc at one tier."""

    id: uuid.UUID
    template_name: str
    tier: Tier
    arc_key: str
    template_text: str
    placeholders: tuple[str, ...]
    active: bool = True


@dataclass(frozen=True)
class ConversationSubject:
    """The catalog entries one conversation is about."""

    persona: Persona
    arc: EmotionalArc
    topic: TrainingTopic
    tier: Tier


@dataclass(frozen=True)
class GenerationParameters:
    """What one conversation is generated from: persona × arc × topic at a tier, with a template or NIL_UUID."""

    persona_id: uuid.UUID
    emotional_arc_id: uuid.UUID
    training_topic_id: uuid.UUID
    tier: Tier
    template_id: uuid.UUID

    @property
    def auto_template(self) -> bool:
        """True when no template is named: one is auto-selected by arc and tier."""
        return self.template_id == NIL_UUID
