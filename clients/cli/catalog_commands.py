"""`convgen catalog list`: personas, emotional arcs, training topics and prompt templates."""

from __future__ import annotations

import argparse
from typing import Any

from clients.catalog_index import Catalog
from clients.cli.common import connection_parent, with_client
from clients.cli.output import Output, tier_name, to_dict
from clients.client import ConvgenClient

KINDS = ("personas", "arcs", "topics", "templates")


def register_list(catalog_commands: Any) -> None:
    """Adds `catalog list` under the catalog command (next to `catalog load`)."""
    parser = catalog_commands.add_parser(
        "list",
        parents=[connection_parent()],
        help="list personas, emotional arcs, training topics and prompt templates",
    )
    parser.add_argument("kind", nargs="?", choices=KINDS, help="only this kind (default: all four)")
    parser.set_defaults(handler=with_client(_list))


async def _list(args: argparse.Namespace, client: ConvgenClient, out: Output) -> int:
    catalog = await client.catalog()
    kinds = [args.kind] if args.kind else list(KINDS)
    if out.json_mode:
        out.json({kind: [to_dict(entry) for entry in _entries(catalog, kind)] for kind in kinds})
        return 0
    for kind in kinds:
        _print_kind(out, catalog, kind)
    return 0


def _entries(catalog: Catalog, kind: str) -> list[Any]:
    entries: dict[str, list[Any]] = {
        "personas": list(catalog.personas),
        "arcs": list(catalog.emotional_arcs),
        "topics": list(catalog.training_topics),
        "templates": list(catalog.templates),
    }
    return entries[kind]


def _print_kind(out: Output, catalog: Catalog, kind: str) -> None:
    if kind == "personas":
        out.table(
            ["persona_key", "name", "archetype", "age", "occupation", "income", "id"],
            [(p.persona_key, p.name, p.archetype, p.age, p.occupation, p.income_range, p.id) for p in catalog.personas],
            title=f"Personas ({len(catalog.personas)})",
            wide=["persona_key", "id"],
        )
    elif kind == "arcs":
        out.table(
            ["arc_key", "name", "tier", "category", "start → end", "id"],
            [
                (a.arc_key, a.name, tier_name(a.tier), a.category, f"{a.starting_emotion} → {a.ending_emotion}", a.id)
                for a in catalog.emotional_arcs
            ],
            title=f"Emotional arcs ({len(catalog.emotional_arcs)})",
            wide=["arc_key", "id"],
        )
    elif kind == "topics":
        out.table(
            ["topic_key", "name", "category", "id"],
            [(t.topic_key, t.name, t.category, t.id) for t in catalog.training_topics],
            title=f"Training topics ({len(catalog.training_topics)})",
            wide=["topic_key", "id"],
        )
    else:
        out.table(
            ["template_name", "tier", "arc_key", "active", "placeholders", "id"],
            [
                (t.template_name, tier_name(t.tier), t.arc_key, "yes" if t.active else "no", len(t.placeholders), t.id)
                for t in catalog.templates
            ],
            title=f"Prompt templates ({len(catalog.templates)})",
            wide=["template_name", "id"],
        )
