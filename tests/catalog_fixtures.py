"""Catalog values built from convgen/data/catalog.json, for tests that need real personas, arcs and topics."""

from __future__ import annotations

import functools
import json
import uuid
from importlib import resources
from typing import Any

from convgen.catalog.models import ConversationSubject, EmotionalArc, Persona, Tier, TrainingTopic


@functools.cache
def _catalog() -> dict[str, Any]:
    """The parsed demo catalog file."""
    text = resources.files("convgen").joinpath("data/catalog.json").read_text(encoding="utf-8")
    parsed: dict[str, Any] = json.loads(text)
    return parsed


def personas() -> tuple[Persona, ...]:
    """The demo personas."""
    return tuple(Persona(**{**row, "id": uuid.UUID(row["id"])}) for row in _catalog()["personas"])


def arcs() -> tuple[EmotionalArc, ...]:
    """The demo emotional arcs (5 core, 3 edge)."""
    return tuple(
        EmotionalArc(**{**row, "id": uuid.UUID(row["id"]), "tier": Tier(row["tier"])})
        for row in _catalog()["emotional_arcs"]
    )


def topics() -> tuple[TrainingTopic, ...]:
    """The demo training topics."""
    return tuple(TrainingTopic(**{**row, "id": uuid.UUID(row["id"])}) for row in _catalog()["training_topics"])


def arc(arc_key: str) -> EmotionalArc:
    """The demo arc with this key."""
    return next(a for a in arcs() if a.arc_key == arc_key)


def subject(persona_index: int = 0, arc_key: str = "confusion_to_clarity", topic_index: int = 0) -> ConversationSubject:
    """A subject from the demo catalog, at the arc's own tier."""
    chosen = arc(arc_key)
    return ConversationSubject(personas()[persona_index], chosen, topics()[topic_index], chosen.tier)


def all_subjects() -> list[ConversationSubject]:
    """Every persona x arc x topic of the demo catalog, each at its arc's tier."""
    return [ConversationSubject(p, a, t, a.tier) for p in personas() for a in arcs() for t in topics()]
