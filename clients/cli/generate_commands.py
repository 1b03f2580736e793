"""`convgen generate`: one conversation from a persona, an arc and a topic (ids or human keys)."""

from __future__ import annotations

import argparse
from typing import Any

from clients.arguments import NIL_UUID, tier_value
from clients.cli.common import with_client
from clients.cli.conversation_commands import show_conversation
from clients.cli.output import Output
from clients.client import ConvgenClient

TIER_CHOICES = ("template", "scenario", "edge_case")


def register(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Adds `generate`."""
    parser = commands.add_parser(
        "generate",
        parents=parents,
        help="generate one conversation",
        description="Generates, validates and stores one conversation. Catalog entries are ids or human keys "
        "(e.g. --persona pragmatic_optimist); see `convgen catalog list`.",
    )
    parser.add_argument("--persona", required=True, help="persona key or id")
    parser.add_argument("--arc", required=True, help="emotional arc key or id")
    parser.add_argument("--topic", required=True, help="training topic key or id")
    parser.add_argument("--tier", choices=TIER_CHOICES, help="prompt tier (default: the arc's tier)")
    parser.add_argument("--template", help="prompt template name or id (default: auto-selected by arc and tier)")
    parser.add_argument("--request-id", default="", help="idempotency key: a repeat returns the same conversation")
    parser.add_argument("--created-by", default="", help="UUID of the user (default: system)")
    parser.set_defaults(handler=with_client(_generate))


async def _generate(args: argparse.Namespace, client: ConvgenClient, out: Output) -> int:
    catalog = await client.catalog()
    persona = catalog.persona(args.persona, "--persona")
    arc = catalog.emotional_arc(args.arc, "--arc")
    topic = catalog.training_topic(args.topic, "--topic")
    template_id = catalog.template(args.template, "--template").id if args.template else NIL_UUID
    conversation = await client.generate_conversation(
        persona_id=persona.id,
        emotional_arc_id=arc.id,
        training_topic_id=topic.id,
        tier=tier_value(args.tier, "--tier") if args.tier else arc.tier,
        template_id=template_id,
        request_id=args.request_id,
        created_by=args.created_by,
        timeout=args.timeout,
    )
    if out.json_mode:
        out.json(conversation)
    else:
        show_conversation(out, conversation)
    return 0
