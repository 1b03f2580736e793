"""Helpers for client and CLI tests: the seed selection, database reads, template switches."""

from __future__ import annotations

import json
import uuid
from typing import Any

from convgen.catalog.loader import packaged_catalog_path
from tests.support.postgres import fetch

SEED = json.loads(packaged_catalog_path().read_text())["seed_failing_job"]
# The seed's second arc: turning its templates off makes its 4 items fail at template selection.
FAILING_ARC_KEY = "couple_conflict_to_alignment"


def seed_combination() -> dict[str, Any]:
    """The seed's 8-item job as a combination mapping for ConvgenClient.create_batch_job."""
    return {
        "persona_ids": SEED["persona_ids"],
        "emotional_arc_ids": SEED["emotional_arc_ids"],
        "training_topic_ids": SEED["training_topic_ids"],
        "tier": SEED["tier"],
    }


async def event_sequences(dsn: str, job_id: str) -> list[tuple[int, str]]:
    """(sequence, kind) of every stored event of a job, in order."""
    rows = await fetch(
        dsn,
        "SELECT sequence, kind FROM batch_job_events WHERE batch_job_id = $1 ORDER BY sequence",
        uuid.UUID(job_id),
    )
    return [(row["sequence"], row["kind"]) for row in rows]


async def set_arc_templates_active(dsn: str, arc_key: str, active: bool) -> None:
    """Turns every prompt template of an arc on or off."""
    await fetch(dsn, "UPDATE prompt_templates SET active = $2 WHERE arc_key = $1", arc_key, active)
