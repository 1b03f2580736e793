"""The catalog in memory, reloaded when its version (bumped by a trigger on every change) moves on."""

from __future__ import annotations

import asyncio
import uuid

from convgen.catalog import repository
from convgen.catalog.models import EmotionalArc, Persona, TrainingTopic
from convgen.catalog.repository import CatalogSnapshot
from convgen.db.database import Database


class CatalogCache:
    """Serves catalog lookups without a query per request; the version comes with the request's claim."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._snapshot: CatalogSnapshot | None = None
        self._lock = asyncio.Lock()

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
        return snapshot


def lookup(
    snapshot: CatalogSnapshot, persona_id: uuid.UUID, arc_id: uuid.UUID, topic_id: uuid.UUID
) -> tuple[Persona | None, EmotionalArc | None, TrainingTopic | None]:
    """The persona, arc and topic of a request; None for each that does not exist."""
    return snapshot.personas.get(persona_id), snapshot.arcs.get(arc_id), snapshot.topics.get(topic_id)
