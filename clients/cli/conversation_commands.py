"""`convgen conversation get|list`: stored conversations by primary key or business key."""

from __future__ import annotations

import argparse
from typing import Any

import grpc

from clients.arguments import is_uuid
from clients.cli.common import with_client
from clients.cli.output import Output, cost_text, tier_name, usage_text, when
from clients.client import ConvgenClient
from clients.errors import ConvgenRpcError
from convgen.v1 import generation_pb2


def register(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Adds `conversation get` and `conversation list`."""
    conversation = commands.add_parser("conversation", help="read stored conversations")
    sub = conversation.add_subparsers(dest="conversation_command", required=True, metavar="SUBCOMMAND")
    get = sub.add_parser("get", parents=parents, help="one conversation by primary key or business key")
    get.add_argument("key", metavar="PK_OR_BUSINESS_KEY", help="conversations.id, or conversations.conversation_id")
    get.add_argument("--content", action="store_true", help="also print the turns")
    get.set_defaults(handler=with_client(_get))

    listing = sub.add_parser("list", parents=parents, help="stored conversations, newest first")
    listing.add_argument("--persona", help="only this persona (key or id)")
    listing.add_argument("--arc", help="only this emotional arc (key or id)")
    listing.add_argument("--topic", help="only this training topic (key or id)")
    listing.add_argument("--limit", type=int, default=20, help="at most this many (default 20; 0 = all)")
    listing.set_defaults(handler=with_client(_list))


async def fetch_conversation(client: ConvgenClient, key: str, *, full: bool) -> generation_pb2.StoredConversation:
    """The conversation whose primary key is key, else the one whose business key is key."""
    if not is_uuid(key):
        raise ConvgenRpcError.invalid_argument("key", f"{key!r} is not a UUID (a primary key or a business key)")
    try:
        return await client.get_conversation(pk=key, full=full)
    except ConvgenRpcError as error:
        if error.code != grpc.StatusCode.NOT_FOUND:
            raise
    try:
        return await client.get_conversation(business_key=key, full=full)
    except ConvgenRpcError as error:
        if error.code != grpc.StatusCode.NOT_FOUND:
            raise
        raise ConvgenRpcError(
            error.code, f"no conversation has primary key or business key {key}", error.details
        ) from None


def show_conversation(out: Output, c: generation_pb2.StoredConversation, *, content: bool = False) -> None:
    """The conversation's keys, parameters, blobs, usage and cost (and its turns when content is set)."""
    status = generation_pb2.ProcessingStatus.Name(c.processing_status).removeprefix("PROCESSING_STATUS_").lower()
    pairs: list[tuple[str, Any]] = [
        ("pk", c.pk),
        ("business key", c.business_key),
        ("status", status),
        ("persona", c.persona_key or c.parameters.persona_id),
        ("arc", c.arc_key or c.parameters.emotional_arc_id),
        ("topic", c.topic_key or c.parameters.training_topic_id),
        ("tier", tier_name(c.parameters.tier)),
        ("template", c.template_name or c.parameters.template_id),
        ("turns", c.turn_count),
        ("model", c.model),
        ("raw blob", c.raw_blob.uri),
        ("final blob", c.final_blob.uri),
        ("usage", usage_text(c.usage)),
        (
            "cost",
            f"unknown: model {c.model} is not in price table {c.price_version}"
            if c.cost_unknown
            else f"${c.cost_usd:.6f} ({cost_text(c.cost_breakdown)}; {c.service_tier} tier, prices {c.price_version})",
        ),
        ("created", when(c.created_at, c.HasField("created_at"))),
        ("request id", c.request_id or "-"),
    ]
    pairs.extend(("warning", w) for w in c.validation_warnings)
    out.fields(pairs, title="Conversation")
    if content and c.HasField("content"):
        meta = c.content.metadata
        out.text(f"client: {meta.client_persona}")
        out.text(f"context: {meta.session_context}")
        out.text(f"phase: {meta.conversation_phase}; expected outcome: {meta.expected_outcome or '-'}")
        for turn in c.content.turns:
            emotion = turn.emotional_context
            out.text(
                f"\n[{turn.turn_number}] {turn.role} ({emotion.primary_emotion} {emotion.intensity:.1f})",
                style="bold",
            )
            out.text(turn.content)


async def _get(args: argparse.Namespace, client: ConvgenClient, out: Output) -> int:
    conversation = await fetch_conversation(client, args.key, full=args.content)
    if out.json_mode:
        out.json(conversation)
    else:
        show_conversation(out, conversation, content=args.content)
    return 0


async def _list(args: argparse.Namespace, client: ConvgenClient, out: Output) -> int:
    catalog = await client.catalog() if (args.persona or args.arc or args.topic) else None
    filters = {
        "persona_id": catalog.persona(args.persona, "--persona").id if catalog and args.persona else "",
        "emotional_arc_id": catalog.emotional_arc(args.arc, "--arc").id if catalog and args.arc else "",
        "training_topic_id": catalog.training_topic(args.topic, "--topic").id if catalog and args.topic else "",
    }
    found: list[generation_pb2.StoredConversation] = []
    page_size = min(args.limit, 1000) if args.limit > 0 else 1000
    async for conversation in client.iter_conversations(page_size=page_size, **filters):
        found.append(conversation)
        if 0 < args.limit <= len(found):
            break
    if out.json_mode:
        out.json(generation_pb2.ListConversationsResponse(conversations=found))
        return 0
    out.table(
        ["created", "pk", "business key", "persona", "arc", "topic", "turns", "cost"],
        [
            (
                when(c.created_at),
                c.pk,
                c.business_key,
                c.persona_key,
                c.arc_key,
                c.topic_key,
                c.turn_count,
                f"${c.cost_usd:.4f}",
            )
            for c in found
        ],
        title=f"Conversations ({len(found)})",
        wide=["pk", "business key"],
    )
    return 0
