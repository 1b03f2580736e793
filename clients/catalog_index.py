"""A client-side index of the catalog: look entries up by id or human key."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import grpc

from clients.arguments import is_uuid
from clients.errors import ConvgenRpcError
from convgen.v1 import catalog_pb2


@dataclass
class Catalog:
    """Every persona, arc, topic and template, with lookups by id or human key."""

    personas: list[catalog_pb2.Persona]
    emotional_arcs: list[catalog_pb2.EmotionalArc]
    training_topics: list[catalog_pb2.TrainingTopic]
    templates: list[catalog_pb2.PromptTemplate]
    _index: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._index = {
            "persona": {k: p for p in self.personas for k in (p.id, p.persona_key)},
            "emotional arc": {k: a for a in self.emotional_arcs for k in (a.id, a.arc_key)},
            "training topic": {k: t for t in self.training_topics for k in (t.id, t.topic_key)},
            "template": {k: t for t in self.templates for k in (t.id, t.template_name)},
        }

    def _find(self, kind: str, key_or_id: str, field_name: str) -> Any:
        found = self._index[kind].get(key_or_id.strip())
        if found is None and is_uuid(key_or_id):
            found = self._index[kind].get(str(uuid.UUID(key_or_id)))
        if found is None:
            known = sorted(k for k in self._index[kind] if not is_uuid(k))
            shown = ", ".join(known[:25]) + (", ..." if len(known) > 25 else "")
            raise ConvgenRpcError.client_side(
                grpc.StatusCode.NOT_FOUND,
                f"{field_name}: no {kind} with id or key {key_or_id!r} (known keys: {shown or 'none'})",
                reason="CATALOG_ENTRY_NOT_FOUND",
            )
        return found

    def persona(self, key_or_id: str, field_name: str = "persona") -> catalog_pb2.Persona:
        """The persona with this id or persona_key."""
        found: catalog_pb2.Persona = self._find("persona", key_or_id, field_name)
        return found

    def emotional_arc(self, key_or_id: str, field_name: str = "arc") -> catalog_pb2.EmotionalArc:
        """The emotional arc with this id or arc_key."""
        found: catalog_pb2.EmotionalArc = self._find("emotional arc", key_or_id, field_name)
        return found

    def training_topic(self, key_or_id: str, field_name: str = "topic") -> catalog_pb2.TrainingTopic:
        """The training topic with this id or topic_key."""
        found: catalog_pb2.TrainingTopic = self._find("training topic", key_or_id, field_name)
        return found

    def template(self, name_or_id: str, field_name: str = "template") -> catalog_pb2.PromptTemplate:
        """The prompt template with this id or template_name."""
        found: catalog_pb2.PromptTemplate = self._find("template", name_or_id, field_name)
        return found

    def label(self, kind: str, entry_id: str) -> str:
        """The human key of an entry id ('persona', 'emotional arc', 'training topic', 'template'), else the id."""
        entry = self._index[kind].get(entry_id)
        if entry is None:
            return entry_id
        for attribute in ("persona_key", "arc_key", "topic_key", "template_name"):
            if hasattr(entry, attribute):
                key: str = getattr(entry, attribute)
                return key
        return entry_id
