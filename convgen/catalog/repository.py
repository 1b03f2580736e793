"""All SQL for the catalog tables: personas, emotional_arcs, training_topics, prompt_templates."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from convgen.catalog.models import EmotionalArc, Persona, PromptTemplate, Tier, TrainingTopic
from convgen.db.database import Connection

# --- row mapping -------------------------------------------------------------------------------------------------


def _persona(row: asyncpg.Record) -> Persona:
    return Persona(
        id=row["id"],
        persona_key=row["persona_key"],
        name=row["name"],
        archetype=row["archetype"],
        age=row["age"],
        occupation=row["occupation"],
        income_range=row["income_range"],
        communication_style=row["communication_style"],
        emotional_baseline=row["emotional_baseline"],
    )


def _arc(row: asyncpg.Record) -> EmotionalArc:
    return EmotionalArc(
        id=row["id"],
        arc_key=row["arc_key"],
        name=row["name"],
        tier=Tier(row["tier"]),
        category=row["category"],
        starting_emotion=row["starting_emotion"],
        ending_emotion=row["ending_emotion"],
    )


def _topic(row: asyncpg.Record) -> TrainingTopic:
    return TrainingTopic(
        id=row["id"],
        topic_key=row["topic_key"],
        name=row["name"],
        category=row["category"],
    )


def _template(row: asyncpg.Record) -> PromptTemplate:
    return PromptTemplate(
        id=row["id"],
        template_name=row["template_name"],
        tier=Tier(row["tier"]),
        arc_key=row["arc_key"],
        template_text=row["template_text"],
        placeholders=tuple(row["placeholders"]),
        active=row["active"],
    )


# --- personas ----------------------------------------------------------------------------------------------------


async def upsert_persona(conn: Connection, p: Persona) -> None:
    """Inserts or updates a persona by id."""
    await conn.execute(
        """
        INSERT INTO personas (id, persona_key, name, archetype, age, occupation, income_range,
                              communication_style, emotional_baseline)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        ON CONFLICT (id) DO UPDATE SET
            persona_key = EXCLUDED.persona_key, name = EXCLUDED.name, archetype = EXCLUDED.archetype,
            age = EXCLUDED.age, occupation = EXCLUDED.occupation, income_range = EXCLUDED.income_range,
            communication_style = EXCLUDED.communication_style, emotional_baseline = EXCLUDED.emotional_baseline,
            updated_at = now()
        """,
        p.id,
        p.persona_key,
        p.name,
        p.archetype,
        p.age,
        p.occupation,
        p.income_range,
        p.communication_style,
        p.emotional_baseline,
    )


async def list_personas(conn: Connection, after_key: str, limit: int) -> list[Persona]:
    """Personas ordered by persona_key, after a key (keyset page)."""
    rows = await conn.fetch(
        "SELECT * FROM personas WHERE persona_key > $1 ORDER BY persona_key LIMIT $2", after_key, limit
    )
    return [_persona(r) for r in rows]


# --- emotional arcs ----------------------------------------------------------------------------------------------


async def upsert_arc(conn: Connection, a: EmotionalArc) -> None:
    """Inserts or updates an emotional arc by id."""
    await conn.execute(
        """
        INSERT INTO emotional_arcs (id, arc_key, name, tier, category, starting_emotion, ending_emotion)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (id) DO UPDATE SET
            arc_key = EXCLUDED.arc_key, name = EXCLUDED.name, tier = EXCLUDED.tier, category = EXCLUDED.category,
            starting_emotion = EXCLUDED.starting_emotion, ending_emotion = EXCLUDED.ending_emotion, updated_at = now()
        """,
        a.id,
        a.arc_key,
        a.name,
        a.tier.value,
        a.category,
        a.starting_emotion,
        a.ending_emotion,
    )


async def list_arcs(conn: Connection, after_key: str, limit: int) -> list[EmotionalArc]:
    """Arcs ordered by arc_key, after a key (keyset page)."""
    rows = await conn.fetch(
        "SELECT * FROM emotional_arcs WHERE arc_key > $1 ORDER BY arc_key LIMIT $2", after_key, limit
    )
    return [_arc(r) for r in rows]


# --- training topics ---------------------------------------------------------------------------------------------


async def upsert_topic(conn: Connection, t: TrainingTopic) -> None:
    """Inserts or updates a training topic by id."""
    await conn.execute(
        """
        INSERT INTO training_topics (id, topic_key, name, category) VALUES ($1, $2, $3, $4)
        ON CONFLICT (id) DO UPDATE SET
            topic_key = EXCLUDED.topic_key, name = EXCLUDED.name, category = EXCLUDED.category, updated_at = now()
        """,
        t.id,
        t.topic_key,
        t.name,
        t.category,
    )


async def list_topics(conn: Connection, after_key: str, limit: int) -> list[TrainingTopic]:
    """Topics ordered by topic_key, after a key (keyset page)."""
    rows = await conn.fetch(
        "SELECT * FROM training_topics WHERE topic_key > $1 ORDER BY topic_key LIMIT $2", after_key, limit
    )
    return [_topic(r) for r in rows]


# --- across the four: which ids of a selection do not exist ------------------------------------------------------


async def missing_ids(
    conn: Connection,
    persona_ids: Sequence[uuid.UUID],
    arc_ids: Sequence[uuid.UUID],
    topic_ids: Sequence[uuid.UUID],
    template_ids: Sequence[uuid.UUID],
) -> dict[str, list[uuid.UUID]]:
    """For each kind, the given ids that do not exist (in the order given)."""
    row = await conn.fetchrow(
        """
        SELECT
          ARRAY(SELECT x FROM unnest($1::uuid[]) WITH ORDINALITY u(x, n)
                WHERE NOT EXISTS (SELECT 1 FROM personas WHERE id = x) ORDER BY n) AS personas,
          ARRAY(SELECT x FROM unnest($2::uuid[]) WITH ORDINALITY u(x, n)
                WHERE NOT EXISTS (SELECT 1 FROM emotional_arcs WHERE id = x) ORDER BY n) AS emotional_arcs,
          ARRAY(SELECT x FROM unnest($3::uuid[]) WITH ORDINALITY u(x, n)
                WHERE NOT EXISTS (SELECT 1 FROM training_topics WHERE id = x) ORDER BY n) AS training_topics,
          ARRAY(SELECT x FROM unnest($4::uuid[]) WITH ORDINALITY u(x, n)
                WHERE NOT EXISTS (SELECT 1 FROM prompt_templates WHERE id = x) ORDER BY n) AS prompt_templates
        """,
        list(persona_ids),
        list(arc_ids),
        list(topic_ids),
        list(template_ids),
    )
    assert row is not None
    return {key: list(row[key]) for key in ("personas", "emotional_arcs", "training_topics", "prompt_templates")}


# --- prompt templates --------------------------------------------------------------------------------------------


async def upsert_template(conn: Connection, t: PromptTemplate) -> None:
    """Inserts or updates a template by id."""
    await conn.execute(
        """
        INSERT INTO prompt_templates (id, template_name, tier, arc_key, template_text, placeholders, active)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (id) DO UPDATE SET
            template_name = EXCLUDED.template_name, tier = EXCLUDED.tier, arc_key = EXCLUDED.arc_key,
            template_text = EXCLUDED.template_text, placeholders = EXCLUDED.placeholders, active = EXCLUDED.active,
            updated_at = now()
        """,
        t.id,
        t.template_name,
        t.tier.value,
        t.arc_key,
        t.template_text,
        list(t.placeholders),
        t.active,
    )


async def list_templates(conn: Connection, after_name: str, limit: int) -> list[PromptTemplate]:
    """Templates ordered by template_name, after a name (keyset page)."""
    rows = await conn.fetch(
        "SELECT * FROM prompt_templates WHERE template_name > $1 ORDER BY template_name LIMIT $2", after_name, limit
    )
    return [_template(r) for r in rows]


async def all_templates(conn: Connection) -> list[PromptTemplate]:
    """Every template, active or not (the catalog holds dozens)."""
    return [_template(r) for r in await conn.fetch("SELECT * FROM prompt_templates")]


async def arc_keys(conn: Connection, arc_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The arc_key of each given arc that exists."""
    rows = await conn.fetch("SELECT id, arc_key FROM emotional_arcs WHERE id = ANY($1::uuid[])", list(arc_ids))
    return {r["id"]: r["arc_key"] for r in rows}


# --- the whole catalog, for in-process caches ----------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogSnapshot:
    """Every catalog entry at one catalog version."""

    version: int
    personas: dict[uuid.UUID, Persona]
    arcs: dict[uuid.UUID, EmotionalArc]
    topics: dict[uuid.UUID, TrainingTopic]
    templates: dict[uuid.UUID, PromptTemplate]


async def snapshot(conn: Connection) -> CatalogSnapshot:
    """Reads the whole catalog consistently (one repeatable-read transaction)."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        version = await conn.fetchval("SELECT version FROM catalog_version WHERE id = 1")
        personas = [_persona(r) for r in await conn.fetch("SELECT * FROM personas")]
        arcs = [_arc(r) for r in await conn.fetch("SELECT * FROM emotional_arcs")]
        topics = [_topic(r) for r in await conn.fetch("SELECT * FROM training_topics")]
        templates = await all_templates(conn)
    return CatalogSnapshot(
        version=version,
        personas={p.id: p for p in personas},
        arcs={a.id: a for a in arcs},
        topics={t.id: t for t in topics},
        templates={t.id: t for t in templates},
    )
