"""The reference job of issue 12: 5 personas × 5 arcs × 40 topics = 1,000 items at concurrency 32, on the demo
catalog extended with the personas and topics it lacks."""

from __future__ import annotations

import json
import uuid

from convgen.catalog import repository
from convgen.catalog.loader import packaged_catalog_path
from convgen.catalog.models import Persona, TrainingTopic
from convgen.db.database import Database
from convgen.v1 import batch_pb2, common_pb2

PERSONAS = 5
TOPICS = 40
CONCURRENCY = 32
# Fixed, so that the reference catalog is the same in every test database.
_NAMESPACE = uuid.UUID("0c8a5b1e-7d2f-4e39-9a61-3b5c2d4e6f70")
_CATEGORIES = ("retirement", "debt", "estate", "insurance", "investment", "cash_flow", "education", "career")


async def extend_catalog(db: Database) -> tuple[list[str], list[str], list[str]]:
    """Adds personas and topics up to the reference job's; returns its persona, core arc and topic ids."""
    demo = json.loads(packaged_catalog_path().read_text())
    personas = [p["id"] for p in demo["personas"]]
    topics = [t["id"] for t in demo["training_topics"]]
    arcs = [a["id"] for a in demo["emotional_arcs"] if a["tier"] == "template"]
    async with db.connection() as conn:
        for n in range(len(personas), PERSONAS):
            persona = Persona(
                id=uuid.uuid5(_NAMESPACE, f"persona-{n}"),
                persona_key=f"reference_persona_{n}",
                name=f"Reference Client {n}",
                archetype="The Careful Planner",
                age=30 + 5 * n,
                occupation="Engineer",
                income_range="$90k-$120k",
                communication_style="thoughtful, asks for the numbers",
                emotional_baseline="steady but anxious about the future",
            )
            await repository.upsert_persona(conn, persona)
            personas.append(str(persona.id))
        for n in range(len(topics), TOPICS):
            topic = TrainingTopic(
                id=uuid.uuid5(_NAMESPACE, f"topic-{n}"),
                topic_key=f"reference_topic_{n}",
                name=f"Reference Topic {n}",
                category=_CATEGORIES[n % len(_CATEGORIES)],
            )
            await repository.upsert_topic(conn, topic)
            topics.append(str(topic.id))
    return personas[:PERSONAS], arcs, topics[:TOPICS]


def reference_request(ids: tuple[list[str], list[str], list[str]], **fields: object) -> batch_pb2.CreateBatchJobRequest:
    """CreateBatchJob for the reference job (combination order: persona, arc, topic)."""
    personas, arcs, topics = ids
    return batch_pb2.CreateBatchJobRequest(
        name=str(fields.pop("name", "reference job")),
        combination=batch_pb2.Combination(
            persona_ids=personas, emotional_arc_ids=arcs, training_topic_ids=topics, tier=common_pb2.TIER_TEMPLATE
        ),
        concurrency=CONCURRENCY,
        **fields,  # type: ignore[arg-type]
    )


def warm_up_request(ids: tuple[list[str], list[str], list[str]]) -> batch_pb2.CreateBatchJobRequest:
    """Five conversations, one per core arc's template: earlier conversations whose output sizes estimates use."""
    personas, arcs, topics = ids
    return batch_pb2.CreateBatchJobRequest(
        name="earlier conversations",
        combination=batch_pb2.Combination(
            persona_ids=personas[:1],
            emotional_arc_ids=arcs,
            training_topic_ids=topics[-1:],
            tier=common_pb2.TIER_TEMPLATE,
        ),
        concurrency=5,
    )
