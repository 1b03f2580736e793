"""Loads a catalog file (personas, arcs, topics) and the built-in prompt templates, idempotently, in one transaction."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from convgen.catalog import repository
from convgen.catalog.models import EmotionalArc, Persona, PromptTemplate, Tier, TrainingTopic
from convgen.catalog.templates import (
    TemplateDefinition,
    load_builtin_templates,
    validate_template_text,
)
from convgen.db.database import Connection
from convgen.errors import InvalidArgument

_KEY_PATTERN = r"^[a-z0-9_]{1,100}$"


class _Entry(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class PersonaEntry(_Entry):
    """A persona as written in a catalog file."""

    id: uuid.UUID
    persona_key: str = Field(pattern=_KEY_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    archetype: str = Field(min_length=1, max_length=200)
    age: int = Field(ge=0, le=130)
    occupation: str = Field(max_length=200)
    income_range: str = Field(max_length=100)
    communication_style: str = Field(max_length=500)
    emotional_baseline: str = Field(max_length=500)


class ArcEntry(_Entry):
    """An emotional arc as written in a catalog file."""

    id: uuid.UUID
    arc_key: str = Field(pattern=_KEY_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    tier: Tier
    category: str = Field(pattern="^(core|edge)$")
    starting_emotion: str = Field(min_length=1, max_length=200)
    ending_emotion: str = Field(min_length=1, max_length=200)


class TopicEntry(_Entry):
    """A training topic as written in a catalog file."""

    id: uuid.UUID
    topic_key: str = Field(pattern=_KEY_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    category: str = Field(min_length=1, max_length=100)


class CatalogFile(_Entry):
    """The catalog file: personas, emotional arcs and training topics."""

    personas: list[PersonaEntry]
    emotional_arcs: list[ArcEntry]
    training_topics: list[TopicEntry]


@dataclass(frozen=True)
class LoadSummary:
    """How many rows of each kind a load wrote (inserted or updated)."""

    personas: int
    emotional_arcs: int
    training_topics: int
    templates: int


def packaged_catalog_path() -> Path:
    """The demo catalog shipped with convgen."""
    return Path(str(resources.files("convgen.data") / "catalog.json"))


def read_catalog_file(path: Path) -> tuple[CatalogFile, dict[str, Any]]:
    """Parses and validates a catalog file; errors name the file and the offending entry."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidArgument.for_field("file", f"cannot read {path}: {error}") from error
    except json.JSONDecodeError as error:
        raise InvalidArgument.for_field("file", f"{path} is not JSON: {error}") from error
    try:
        return CatalogFile.model_validate(raw), raw
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()[:10])
        raise InvalidArgument.for_field("file", f"{path} is not a valid catalog: {problems}") from error


def template_records(definitions: list[TemplateDefinition]) -> list[PromptTemplate]:
    """Validates template definitions (no placeholder that no parameter fills) and turns them into rows."""
    for d in definitions:
        validate_template_text(d.template_name, d.template_text)
    return [d.to_prompt_template() for d in definitions]


async def load_catalog(
    conn: Connection, catalog: CatalogFile, templates: list[TemplateDefinition] | None = None
) -> LoadSummary:
    """Upserts every entry and template in one transaction; running it again changes nothing."""
    definitions = load_builtin_templates() if templates is None else templates
    records = template_records(definitions)
    async with conn.transaction():
        try:
            for p in catalog.personas:
                await repository.upsert_persona(conn, Persona(**p.model_dump()))
            for a in catalog.emotional_arcs:
                await repository.upsert_arc(conn, EmotionalArc(**a.model_dump()))
            for t in catalog.training_topics:
                await repository.upsert_topic(conn, TrainingTopic(**t.model_dump()))
            for record in records:
                await repository.upsert_template(conn, record)
        except asyncpg.ForeignKeyViolationError as error:
            raise InvalidArgument.for_field(
                "templates", f"a template serves an arc that is not in the catalog: {error.detail or error}"
            ) from error
        except asyncpg.UniqueViolationError as error:
            raise InvalidArgument.for_field(
                "file", f"catalog conflicts with stored entries: {error.detail or error}"
            ) from error
    return LoadSummary(len(catalog.personas), len(catalog.emotional_arcs), len(catalog.training_topics), len(records))
