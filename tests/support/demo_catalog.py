"""The demo catalog (convgen/data/catalog.json) as tests and benchmarks use it: its values, the seed's job, and the
ids a database's catalog offers for building jobs of any size."""

from __future__ import annotations

import functools
import itertools
import json
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from convgen.catalog.loader import packaged_catalog_path
from convgen.catalog.models import NIL_UUID, ConversationSubject, EmotionalArc, Persona, Tier, TrainingTopic
from convgen.v1 import batch_pb2, common_pb2, generation_pb2

NIL = str(NIL_UUID)
# The seed's failed combination (its bug #1 item): David Chen / Couple Conflict → Alignment / Essential Estate Planning.
DAVID_CHEN = "aa514346-cd61-42ac-adad-498934975402"
COUPLE_CONFLICT = "33d2ac3e-3f92-44a5-a53d-788fdece2545"
ESTATE_PLANNING = "aee7b6c2-42e2-4ef4-8184-be12abe38eb5"
CRISIS = "6f0f5c1e-2a8b-4c47-9a53-0d1f3b2e7c41"
"""The crisis_to_referral arc: edge-case tier only."""


@functools.cache
def catalog_file() -> dict[str, Any]:
    """The parsed demo catalog file."""
    parsed: dict[str, Any] = json.loads(packaged_catalog_path().read_text(encoding="utf-8"))
    return parsed


# --- catalog values ------------------------------------------------------------------------------------------------


def personas() -> tuple[Persona, ...]:
    """The demo personas."""
    return tuple(Persona(**{**row, "id": uuid.UUID(row["id"])}) for row in catalog_file()["personas"])


def arcs() -> tuple[EmotionalArc, ...]:
    """The demo emotional arcs (5 core, 3 edge)."""
    return tuple(
        EmotionalArc(**{**row, "id": uuid.UUID(row["id"]), "tier": Tier(row["tier"])})
        for row in catalog_file()["emotional_arcs"]
    )


def topics() -> tuple[TrainingTopic, ...]:
    """The demo training topics."""
    return tuple(TrainingTopic(**{**row, "id": uuid.UUID(row["id"])}) for row in catalog_file()["training_topics"])


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


# --- the seed's requests -------------------------------------------------------------------------------------------


def seed_job() -> dict[str, Any]:
    """The seed's failing 8-item job as the catalog file records it (ids, tier, template)."""
    seed: dict[str, Any] = catalog_file()["seed_failing_job"]
    return seed


def seed_combination() -> batch_pb2.Combination:
    """The seed's failing 8-item job: one persona x two arcs x four topics, tier template, auto template."""
    seed = seed_job()
    return batch_pb2.Combination(
        persona_ids=seed["persona_ids"],
        emotional_arc_ids=seed["emotional_arc_ids"],
        training_topic_ids=seed["training_topic_ids"],
        tier=common_pb2.TIER_TEMPLATE,
        template_id=seed["template_id"],
    )


def seed_combination_fields() -> dict[str, Any]:
    """The seed's 8-item job as a combination mapping for ConvgenClient.create_batch_job."""
    seed = seed_job()
    return {key: seed[key] for key in ("persona_ids", "emotional_arc_ids", "training_topic_ids", "tier")}


def seed_job_request(**fields: Any) -> batch_pb2.CreateBatchJobRequest:
    """CreateBatchJobRequest for the seed job, with field overrides."""
    fields.setdefault("name", "seed failing job")
    return batch_pb2.CreateBatchJobRequest(combination=seed_combination(), **fields)


def seed_item_parameters() -> common_pb2.GenerationParameters:
    """The seed job's first parameter set (first persona, arc and topic), tier template, template left unset."""
    seed = seed_job()
    return common_pb2.GenerationParameters(
        persona_id=seed["persona_ids"][0],
        emotional_arc_id=seed["emotional_arc_ids"][0],
        training_topic_id=seed["training_topic_ids"][0],
        tier=common_pb2.TIER_TEMPLATE,
    )


def seed_request(request_id: str = "") -> generation_pb2.GenerateConversationRequest:
    """GenerateConversation for the seed's failed combination, template auto-selected."""
    return generation_pb2.GenerateConversationRequest(
        parameters=common_pb2.GenerationParameters(
            persona_id=DAVID_CHEN,
            emotional_arc_id=COUPLE_CONFLICT,
            training_topic_id=ESTATE_PLANNING,
            tier=common_pb2.TIER_TEMPLATE,
            template_id=NIL,
        ),
        request_id=request_id,
    )


# --- ids of a database's catalog, for jobs of any size -------------------------------------------------------------


@dataclass(frozen=True)
class CatalogIds:
    """Ids in a database's catalog: personas, the arcs served by tier-template templates, topics (key order)."""

    persona_ids: list[str]
    arc_ids: list[str]
    topic_ids: list[str]

    @classmethod
    async def read(cls, conn: asyncpg.Connection[Any]) -> CatalogIds:
        """Reads the ids from the database conn is connected to."""
        personas = await conn.fetch("SELECT id FROM personas ORDER BY persona_key")
        arcs = await conn.fetch(
            """
            SELECT a.id FROM emotional_arcs a
            WHERE EXISTS (SELECT 1 FROM prompt_templates t
                          WHERE t.active AND t.arc_key = a.arc_key AND t.tier = 'template')
            ORDER BY a.arc_key
            """
        )
        topics = await conn.fetch("SELECT id FROM training_topics ORDER BY topic_key")
        return cls(
            persona_ids=[str(r["id"]) for r in personas],
            arc_ids=[str(r["id"]) for r in arcs],
            topic_ids=[str(r["id"]) for r in topics],
        )

    @classmethod
    async def of_database(cls, dsn: str) -> CatalogIds:
        """Reads the ids of the database at dsn."""
        conn = await asyncpg.connect(dsn)
        try:
            return await cls.read(conn)
        finally:
            await conn.close()

    def combination(self, items: int) -> batch_pb2.Combination:
        """A persona × arc × topic combination selecting exactly `items` items (as few topics as possible)."""
        for product in sorted(
            {p * a for p in range(1, len(self.persona_ids) + 1) for a in range(1, len(self.arc_ids) + 1)},
            reverse=True,
        ):
            if items % product:
                continue
            topics = items // product
            if topics > len(self.topic_ids):
                continue
            for p, a in itertools.product(range(len(self.persona_ids), 0, -1), range(len(self.arc_ids), 0, -1)):
                if p * a == product:
                    return batch_pb2.Combination(
                        persona_ids=self.persona_ids[:p],
                        emotional_arc_ids=self.arc_ids[:a],
                        training_topic_ids=self.topic_ids[:topics],
                        tier=common_pb2.TIER_TEMPLATE,
                    )
        raise ValueError(f"{items} items cannot be selected as a combination of this catalog")

    def parameter_sets(self, count: int) -> list[common_pb2.GenerationParameters]:
        """count distinct persona × arc × topic sets (tier template, auto-selected template)."""
        combinations = list(itertools.islice(itertools.product(self.persona_ids, self.arc_ids, self.topic_ids), count))
        if len(combinations) < count:
            raise ValueError(f"the catalog has only {len(combinations)} parameter sets, {count} asked for")
        return [
            common_pb2.GenerationParameters(
                persona_id=persona,
                emotional_arc_id=arc,
                training_topic_id=topic,
                tier=common_pb2.TIER_TEMPLATE,
                template_id=NIL,
            )
            for persona, arc, topic in combinations
        ]
