"""The gRPC edge of the generation service: parse requests, call the flow, convert results."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from convgen.blobs import BlobStore
from convgen.catalog import repository as catalog
from convgen.db.database import Connection, Database
from convgen.errors import InvalidArgument, NotFound
from convgen.logging_setup import log_context
from convgen.paging import encode_token, fit_page
from convgen.rpc.server import Context
from convgen.v1 import catalog_pb2, catalog_pb2_grpc, generation_pb2, generation_pb2_grpc
from convgen.validation import require_uuid
from generation_service import converters
from generation_service.generator import ConversationGenerator
from generation_service.request_parsing import (
    PageRequest,
    parse_catalog_page,
    parse_generate,
    parse_list_conversations,
    view_of,
)
from generation_service.store import conversations
from generation_service.store.conversations import ConversationRow

# Time kept back from the caller's deadline so our own answer still reaches it.
DEADLINE_MARGIN_SECONDS = 0.25
Entry = TypeVar("Entry")
Message = TypeVar("Message")


def _deadline(context: Context) -> float | None:
    remaining: float | None = context.time_remaining()
    if remaining is None:
        return None
    return time.monotonic() + max(0.0, remaining - DEADLINE_MARGIN_SECONDS)


class GenerationServicer(generation_pb2_grpc.GenerationServiceServicer):
    """GenerateConversation, GetConversation, ListConversations."""

    def __init__(
        self,
        generator: ConversationGenerator,
        db: Database,
        blobs: BlobStore,
        *,
        max_page_size: int,
        max_message_bytes: int,
    ) -> None:
        self._generator = generator
        self._db = db
        self._blobs = blobs
        self._max_page_size = max_page_size
        self._max_message_bytes = max_message_bytes

    async def GenerateConversation(
        self, request: generation_pb2.GenerateConversationRequest, context: Context
    ) -> generation_pb2.StoredConversation:
        generation_input = parse_generate(request)
        with log_context(request_id=generation_input.request_id):
            row = await self._generator.generate(generation_input, deadline=_deadline(context))
        return converters.stored_conversation(row, self._blobs)

    async def GetConversation(
        self, request: generation_pb2.GetConversationRequest, context: Context
    ) -> generation_pb2.StoredConversation:
        which = request.WhichOneof("key")
        if which is None:
            raise InvalidArgument.for_field("key", "set pk or business_key")
        value = require_uuid(which, request.pk if which == "pk" else request.business_key)
        async with self._db.connection() as conn:
            if which == "pk":
                row = await conversations.get_by_pk(conn, value)
            else:
                row = await conversations.get_by_business_key(conn, value)
        if row is None:
            raise NotFound(f"conversation with {which} {value} does not exist", reason="CONVERSATION_NOT_FOUND")
        full = view_of(request.view) == generation_pb2.CONVERSATION_VIEW_FULL
        return await self._message(row, full=full)

    async def ListConversations(
        self, request: generation_pb2.ListConversationsRequest, context: Context
    ) -> generation_pb2.ListConversationsResponse:
        page = parse_list_conversations(request, self._max_page_size)
        async with self._db.connection() as conn:
            rows = await conversations.list_page(conn, page.filters, after=page.after, limit=page.size + 1)
        candidates = [await self._message(r, full=page.full_view) for r in rows[: page.size]]
        items, kept = fit_page(candidates, self._max_message_bytes)
        token = ""
        if len(rows) > kept:
            last = rows[kept - 1]
            token = encode_token({"t": last.created_at.isoformat(), "id": str(last.id)}, page.filter_key)
        return generation_pb2.ListConversationsResponse(conversations=items, next_page_token=token)

    async def _message(self, row: ConversationRow, *, full: bool) -> generation_pb2.StoredConversation:
        """The StoredConversation of a row, with the conversation itself (from the final blob) in the FULL view."""
        content = await self._blobs.get(row.final_bucket, row.final_key) if full else None
        return converters.stored_conversation(row, self._blobs, content)


class CatalogServicer(catalog_pb2_grpc.CatalogServiceServicer):
    """Lists personas, emotional arcs, training topics and prompt templates (keyset pages by key)."""

    def __init__(self, db: Database, max_page_size: int) -> None:
        self._db = db
        self._max_page_size = max_page_size

    async def _page(
        self,
        request: PageRequest,
        kind: str,
        fetch: Callable[[Connection, str, int], Awaitable[list[Entry]]],
        key: Callable[[Entry], str],
        convert: Callable[[Entry], Message],
    ) -> tuple[list[Message], str]:
        """One page of entries in key order as messages, and the token of the next page ('' after the last)."""
        page = parse_catalog_page(request, kind, self._max_page_size)
        async with self._db.connection() as conn:
            entries = await fetch(conn, page.after, page.size + 1)
        token = encode_token({"k": key(entries[page.size - 1])}, {"kind": kind}) if len(entries) > page.size else ""
        return [convert(e) for e in entries[: page.size]], token

    async def ListPersonas(
        self, request: catalog_pb2.ListPersonasRequest, context: Context
    ) -> catalog_pb2.ListPersonasResponse:
        personas, token = await self._page(
            request, "personas", catalog.list_personas, lambda p: p.persona_key, converters.persona
        )
        return catalog_pb2.ListPersonasResponse(personas=personas, next_page_token=token)

    async def ListEmotionalArcs(
        self, request: catalog_pb2.ListEmotionalArcsRequest, context: Context
    ) -> catalog_pb2.ListEmotionalArcsResponse:
        arcs, token = await self._page(
            request, "arcs", catalog.list_arcs, lambda a: a.arc_key, converters.emotional_arc
        )
        return catalog_pb2.ListEmotionalArcsResponse(emotional_arcs=arcs, next_page_token=token)

    async def ListTrainingTopics(
        self, request: catalog_pb2.ListTrainingTopicsRequest, context: Context
    ) -> catalog_pb2.ListTrainingTopicsResponse:
        topics, token = await self._page(
            request, "topics", catalog.list_topics, lambda t: t.topic_key, converters.training_topic
        )
        return catalog_pb2.ListTrainingTopicsResponse(training_topics=topics, next_page_token=token)

    async def ListTemplates(
        self, request: catalog_pb2.ListTemplatesRequest, context: Context
    ) -> catalog_pb2.ListTemplatesResponse:
        templates, token = await self._page(
            request, "templates", catalog.list_templates, lambda t: t.template_name, converters.prompt_template
        )
        return catalog_pb2.ListTemplatesResponse(templates=templates, next_page_token=token)
