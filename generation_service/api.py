"""The gRPC edge of the generation service: validate requests, call the flow, convert results."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import grpc

from convgen.blobs import BlobStore
from convgen.catalog import repository as catalog
from convgen.db.database import Database
from convgen.errors import InvalidArgument, NotFound
from convgen.logging_setup import log_context
from convgen.paging import decode_token, encode_token, fit_page, position_text, position_timestamp, position_uuid
from convgen.rpc.convert import tier_from_proto
from convgen.v1 import catalog_pb2, catalog_pb2_grpc, common_pb2, generation_pb2, generation_pb2_grpc
from convgen.validation import (
    MAX_REPORTED,
    NIL_UUID,
    FieldChecks,
    check_request_id,
    optional_uuid,
    page_size,
    require_uuid,
)
from generation_service import converters
from generation_service.estimates import ConversationEstimator, ConversationRef
from generation_service.generator import ConversationGenerator, GenerationInput
from generation_service.store import conversations
from generation_service.store.conversations import ConversationFilter, ConversationRow

Context = grpc.aio.ServicerContext[Any, Any]
DEFAULT_PAGE_SIZE = 50
# Time kept back from the caller's deadline so our own answer still reaches it.
DEADLINE_MARGIN_SECONDS = 0.25


def parse_generation_parameters(checks: FieldChecks, params: common_pb2.GenerationParameters, prefix: str) -> Any:
    """Validates a GenerationParameters message; returns (persona, arc, topic, tier, template) or Nones."""
    return (
        checks.check(require_uuid, f"{prefix}.persona_id", params.persona_id),
        checks.check(require_uuid, f"{prefix}.emotional_arc_id", params.emotional_arc_id),
        checks.check(require_uuid, f"{prefix}.training_topic_id", params.training_topic_id),
        checks.check(tier_from_proto, f"{prefix}.tier", params.tier, required=True),
        checks.check(optional_uuid, f"{prefix}.template_id", params.template_id),
    )


def view_of(value: int) -> int:
    """A ConversationView number; unknown numbers are an error, unspecified means BASIC."""
    if value not in generation_pb2.ConversationView.values():
        raise InvalidArgument.for_field("view", f"{value} is not a known ConversationView")
    return value


def _deadline(context: Context) -> float | None:
    remaining: float | None = context.time_remaining()
    if remaining is None:
        return None
    return time.monotonic() + max(0.0, remaining - DEADLINE_MARGIN_SECONDS)


class GenerationServicer(generation_pb2_grpc.GenerationServiceServicer):
    """GenerateConversation, GetConversation, ListConversations, EstimateConversations."""

    def __init__(
        self,
        generator: ConversationGenerator,
        estimator: ConversationEstimator,
        db: Database,
        blobs: BlobStore,
        *,
        max_page_size: int,
        max_message_bytes: int,
    ) -> None:
        self._generator = generator
        self._estimator = estimator
        self._db = db
        self._blobs = blobs
        self._max_page_size = max_page_size
        self._max_message_bytes = max_message_bytes

    async def GenerateConversation(
        self, request: generation_pb2.GenerateConversationRequest, context: Context
    ) -> generation_pb2.StoredConversation:
        checks = FieldChecks()
        if not request.HasField("parameters"):
            checks.add("parameters", "is required")
        persona_id, arc_id, topic_id, tier, template_id = parse_generation_parameters(
            checks, request.parameters, "parameters"
        )
        request_id = checks.check(check_request_id, "request_id", request.request_id)
        created_by = checks.check(optional_uuid, "created_by", request.created_by)
        checks.raise_if_any()
        generation_input = GenerationInput(
            persona_id=persona_id,
            emotional_arc_id=arc_id,
            training_topic_id=topic_id,
            tier=tier,
            template_id=template_id,
            # Without a key there is no idempotency: every call generates.
            request_id=request_id or f"anonymous/{uuid.uuid4()}",
            created_by=created_by or NIL_UUID,
        )
        with log_context(request_id=generation_input.request_id):
            row = await self._generator.generate(generation_input, deadline=_deadline(context))
        return converters.stored_conversation(row, self._blobs)

    async def GetConversation(
        self, request: generation_pb2.GetConversationRequest, context: Context
    ) -> generation_pb2.StoredConversation:
        which = request.WhichOneof("key")
        if which is None:
            raise InvalidArgument.for_field("key", "set pk or business_key")
        value = require_uuid(which, getattr(request, which))
        async with self._db.connection() as conn:
            if which == "pk":
                row = await conversations.get_by_pk(conn, value)
            else:
                row = await conversations.get_by_business_key(conn, value)
        if row is None:
            raise NotFound(f"conversation with {which} {value} does not exist", reason="CONVERSATION_NOT_FOUND")
        content = await self._content(row) if view_of(request.view) == generation_pb2.CONVERSATION_VIEW_FULL else None
        return converters.stored_conversation(row, self._blobs, content)

    async def ListConversations(
        self, request: generation_pb2.ListConversationsRequest, context: Context
    ) -> generation_pb2.ListConversationsResponse:
        checks = FieldChecks()
        size = checks.check(
            page_size, "page_size", request.page_size, default=DEFAULT_PAGE_SIZE, maximum=self._max_page_size
        )
        filters = ConversationFilter(
            persona_id=checks.check(optional_uuid, "persona_id", request.persona_id),
            emotional_arc_id=checks.check(optional_uuid, "emotional_arc_id", request.emotional_arc_id),
            training_topic_id=checks.check(optional_uuid, "training_topic_id", request.training_topic_id),
            tier=checks.check(tier_from_proto, "tier", request.tier, required=False),
            created_by=checks.check(optional_uuid, "created_by", request.created_by),
        )
        view = checks.check(view_of, request.view)
        checks.raise_if_any()
        assert size is not None
        filter_key = {k: str(v) for k, v in vars(filters).items()}
        position = decode_token("page_token", request.page_token, filter_key)
        after = None
        if position is not None:
            after = (
                position_timestamp("page_token", position, "t"),
                position_uuid("page_token", position, "id"),
            )
        async with self._db.connection() as conn:
            rows = await conversations.list_page(conn, filters, after=after, limit=size + 1)
        full = view == generation_pb2.CONVERSATION_VIEW_FULL
        candidates = [
            converters.stored_conversation(r, self._blobs, await self._content(r) if full else None)
            for r in rows[:size]
        ]
        items, kept = fit_page(candidates, self._max_message_bytes)
        token = ""
        if len(rows) > kept:
            last = rows[kept - 1]
            token = encode_token({"t": last.created_at.isoformat(), "id": str(last.id)}, filter_key)
        return generation_pb2.ListConversationsResponse(conversations=items, next_page_token=token)

    async def EstimateConversations(
        self, request: generation_pb2.EstimateConversationsRequest, context: Context
    ) -> generation_pb2.EstimateConversationsResponse:
        checks = FieldChecks()
        if not request.parameters:
            checks.add("parameters", "is empty: list at least one parameter set")
        if request.concurrency < 0:
            checks.add("concurrency", f"must not be negative (got {request.concurrency})")
        refs: list[ConversationRef] = []
        for index, params in enumerate(request.parameters):
            persona, arc, topic, tier, template = parse_generation_parameters(checks, params, f"parameters[{index}]")
            if len(checks.violations) > MAX_REPORTED:
                break
            if persona and arc and topic and tier:
                refs.append(ConversationRef(persona, arc, topic, tier, template))
        checks.raise_if_any()
        estimate = await self._estimator.estimate(refs, concurrency=max(1, request.concurrency))
        return generation_pb2.EstimateConversationsResponse(
            estimate=converters.cost_estimate(estimate), reservation_usd=[float(r) for r in estimate.reservations]
        )

    async def _content(self, row: ConversationRow) -> dict[str, Any]:
        data = await self._blobs.get(row.final_bucket, row.final_key)
        document: dict[str, Any] = json.loads(data)
        return document


class CatalogServicer(catalog_pb2_grpc.CatalogServiceServicer):
    """Lists personas, emotional arcs, training topics and prompt templates (keyset pages by key)."""

    def __init__(self, db: Database, max_page_size: int) -> None:
        self._db = db
        self._max_page_size = max_page_size

    def _page(self, request: Any, kind: str) -> tuple[int, str]:
        size = page_size("page_size", request.page_size, default=DEFAULT_PAGE_SIZE, maximum=self._max_page_size)
        position = decode_token("page_token", request.page_token, {"kind": kind})
        after = position_text("page_token", position, "k") if position is not None else ""
        return size, after

    @staticmethod
    def _next(items: list[Any], size: int, key: str, kind: str) -> tuple[list[Any], str]:
        if len(items) <= size:
            return items, ""
        page = items[:size]
        return page, encode_token({"k": getattr(page[-1], key)}, {"kind": kind})

    async def ListPersonas(
        self, request: catalog_pb2.ListPersonasRequest, context: Context
    ) -> catalog_pb2.ListPersonasResponse:
        size, after = self._page(request, "personas")
        async with self._db.connection() as conn:
            rows = await catalog.list_personas(conn, after_key=after, limit=size + 1)
        page, token = self._next(rows, size, "persona_key", "personas")
        return catalog_pb2.ListPersonasResponse(personas=[converters.persona(p) for p in page], next_page_token=token)

    async def ListEmotionalArcs(
        self, request: catalog_pb2.ListEmotionalArcsRequest, context: Context
    ) -> catalog_pb2.ListEmotionalArcsResponse:
        size, after = self._page(request, "arcs")
        async with self._db.connection() as conn:
            rows = await catalog.list_arcs(conn, after_key=after, limit=size + 1)
        page, token = self._next(rows, size, "arc_key", "arcs")
        return catalog_pb2.ListEmotionalArcsResponse(
            emotional_arcs=[converters.emotional_arc(a) for a in page], next_page_token=token
        )

    async def ListTrainingTopics(
        self, request: catalog_pb2.ListTrainingTopicsRequest, context: Context
    ) -> catalog_pb2.ListTrainingTopicsResponse:
        size, after = self._page(request, "topics")
        async with self._db.connection() as conn:
            rows = await catalog.list_topics(conn, after_key=after, limit=size + 1)
        page, token = self._next(rows, size, "topic_key", "topics")
        return catalog_pb2.ListTrainingTopicsResponse(
            training_topics=[converters.training_topic(t) for t in page], next_page_token=token
        )

    async def ListTemplates(
        self, request: catalog_pb2.ListTemplatesRequest, context: Context
    ) -> catalog_pb2.ListTemplatesResponse:
        size, after = self._page(request, "templates")
        async with self._db.connection() as conn:
            rows = await catalog.list_templates(conn, after_name=after, limit=size + 1)
        page, token = self._next(rows, size, "template_name", "templates")
        return catalog_pb2.ListTemplatesResponse(
            templates=[converters.prompt_template(t) for t in page], next_page_token=token
        )
