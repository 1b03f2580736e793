"""The catalog in memory, reloaded when its version (bumped by a trigger on every change) moves on."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from convgen.catalog import repository
from convgen.catalog.models import (
    ConversationSubject,
    EmotionalArc,
    GenerationParameters,
    Persona,
    PromptTemplate,
    TrainingTopic,
)
from convgen.catalog.repository import CatalogSnapshot
from convgen.catalog.selection import select_template
from convgen.db.database import Database
from convgen.errors import FailedPrecondition, NotFound


class CatalogCache:
    """Serves catalog lookups without a query per request; the version comes with the request's claim."""

    def __init__(self, db: Database, on_reload: Callable[[CatalogSnapshot], None] | None = None) -> None:
        self._db = db
        self._snapshot: CatalogSnapshot | None = None
        self._lock = asyncio.Lock()
        self._on_reload = on_reload

    async def at_least(self, version: int) -> CatalogSnapshot:
        """A snapshot no older than version (reloading once when the catalog changed)."""
        snapshot = self._snapshot
        if snapshot is not None and snapshot.version >= version:
            return snapshot
        async with self._lock:
            snapshot = self._snapshot
            if snapshot is None or snapshot.version < version:
                async with self._db.connection() as conn:
                    snapshot = await repository.snapshot(conn)
                self._snapshot = snapshot
                if self._on_reload is not None:
                    self._on_reload(snapshot)
        return snapshot


def lookup(
    snapshot: CatalogSnapshot, persona_id: uuid.UUID, arc_id: uuid.UUID, topic_id: uuid.UUID
) -> tuple[Persona | None, EmotionalArc | None, TrainingTopic | None]:
    """The persona, arc and topic of a request; None for each that does not exist."""
    return snapshot.personas.get(persona_id), snapshot.arcs.get(arc_id), snapshot.topics.get(topic_id)


def resolve(snapshot: CatalogSnapshot, p: GenerationParameters) -> tuple[ConversationSubject, PromptTemplate]:
    """Finds persona, arc, topic and the template (explicit, or auto-selected by arc and tier)."""
    persona, arc, topic = lookup(snapshot, p.persona_id, p.emotional_arc_id, p.training_topic_id)
    missing = [
        f"{kind} {value} does not exist"
        for kind, value, found in (
            ("persona", p.persona_id, persona),
            ("emotional_arc", p.emotional_arc_id, arc),
            ("training_topic", p.training_topic_id, topic),
        )
        if found is None
    ]
    if missing:
        raise NotFound("; ".join(missing), reason="CATALOG_ENTRY_NOT_FOUND")
    assert persona is not None
    assert arc is not None
    assert topic is not None
    if not p.auto_template:
        template = snapshot.templates.get(p.template_id)
        if template is None:
            raise NotFound(f"template {p.template_id} does not exist", reason="TEMPLATE_NOT_FOUND")
    else:
        template = select_template(snapshot.templates.values(), arc.arc_key, p.tier)
        if template is None:
            raise FailedPrecondition(
                f"no active prompt template for arc {arc.arc_key} (tier {p.tier.value}); "
                "load one with `convgen catalog load`",
                reason="NO_TEMPLATE_FOR_ARC",
                metadata={"arc_key": arc.arc_key, "tier": p.tier.value},
            )
    return ConversationSubject(persona=persona, arc=arc, topic=topic, tier=p.tier), template
