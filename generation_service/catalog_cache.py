"""The catalog in memory, reloaded when its version (bumped by a trigger on every change) moves on."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from convgen.catalog import repository
from convgen.catalog.models import ConversationSubject, EmotionalArc, Persona, PromptTemplate, Tier, TrainingTopic
from convgen.catalog.repository import CatalogSnapshot
from convgen.db.database import Database
from convgen.errors import FailedPrecondition, NotFound
from convgen.validation import NIL_UUID


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


def select_template(snapshot: CatalogSnapshot, arc_key: str, tier: Tier) -> PromptTemplate | None:
    """Auto-selection: an active template of the arc and tier, else one of the arc alone; by name."""
    candidates = sorted(
        (t for t in snapshot.templates.values() if t.active and t.arc_key == arc_key),
        key=lambda t: (t.tier != tier, t.template_name),
    )
    return candidates[0] if candidates else None


def resolve(
    snapshot: CatalogSnapshot,
    *,
    persona_id: uuid.UUID,
    arc_id: uuid.UUID,
    topic_id: uuid.UUID,
    tier: Tier,
    template_id: uuid.UUID | None,
) -> tuple[ConversationSubject, PromptTemplate]:
    """Finds persona, arc, topic and the template (explicit, or auto-selected by arc and tier)."""
    persona, arc, topic = lookup(snapshot, persona_id, arc_id, topic_id)
    missing = [
        f"{kind} {value} does not exist"
        for kind, value, found in (
            ("persona", persona_id, persona),
            ("emotional_arc", arc_id, arc),
            ("training_topic", topic_id, topic),
        )
        if found is None
    ]
    if missing:
        raise NotFound("; ".join(missing), reason="CATALOG_ENTRY_NOT_FOUND")
    assert persona is not None
    assert arc is not None
    assert topic is not None
    if template_id is not None and template_id != NIL_UUID:
        template = snapshot.templates.get(template_id)
        if template is None:
            raise NotFound(f"template {template_id} does not exist", reason="TEMPLATE_NOT_FOUND")
    else:
        template = select_template(snapshot, arc.arc_key, tier)
        if template is None:
            raise FailedPrecondition(
                f"no active prompt template for arc {arc.arc_key} (tier {tier.value}); "
                "load one with `convgen catalog load`",
                reason="NO_TEMPLATE_FOR_ARC",
                metadata={"arc_key": arc.arc_key, "tier": tier.value},
            )
    return ConversationSubject(persona=persona, arc=arc, topic=topic, tier=tier), template
