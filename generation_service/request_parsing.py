"""GenerationService and CatalogService requests parsed into typed values; bad fields are all reported at once."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from convgen.catalog.models import NIL_UUID
from convgen.errors import InvalidArgument
from convgen.paging import decode_token, position_text, position_timestamp, position_uuid
from convgen.rpc.convert import optional_tier, parameters_from_proto
from convgen.v1 import generation_pb2
from convgen.validation import attempt, check_request_id, optional_uuid, page_size, valid
from generation_service.generator import GenerationInput
from generation_service.store.conversations import ConversationFilter

DEFAULT_PAGE_SIZE = 50


@dataclass(frozen=True)
class ConversationPage:
    """A valid ListConversations request."""

    size: int
    filters: ConversationFilter
    full_view: bool
    after: tuple[datetime, uuid.UUID] | None
    filter_key: dict[str, str]


class PageRequest(Protocol):
    """A catalog List request: a page size and a page token."""

    @property
    def page_size(self) -> int: ...
    @property
    def page_token(self) -> str: ...


@dataclass(frozen=True)
class CatalogPage:
    """A valid catalog List request: how many entries, after which key."""

    size: int
    after: str


def parse_generate(request: generation_pb2.GenerateConversationRequest) -> GenerationInput:
    """The parameters, the idempotency key (a fresh one when empty) and the creator."""
    _, parameters, request_id, created_by = valid(
        attempt(_present, "parameters", request.HasField("parameters")),
        attempt(parameters_from_proto, request.parameters, "parameters"),
        attempt(check_request_id, "request_id", request.request_id),
        attempt(optional_uuid, "created_by", request.created_by),
    )
    return GenerationInput(
        parameters=parameters,
        # Without a key there is no idempotency: every call generates.
        request_id=request_id or f"anonymous/{uuid.uuid4()}",
        created_by=created_by or NIL_UUID,
    )


def _present(field: str, present: bool) -> None:
    if not present:
        raise InvalidArgument.for_field(field, "is required")


def view_of(value: int) -> int:
    """A ConversationView number; unknown numbers are an error, unspecified means BASIC."""
    if value not in generation_pb2.ConversationView.values():
        raise InvalidArgument.for_field("view", f"{value} is not a known ConversationView")
    return value


def parse_list_conversations(request: generation_pb2.ListConversationsRequest, max_page_size: int) -> ConversationPage:
    """Page size, filters, view and the position the page token holds."""
    size, persona_id, arc_id, topic_id, tier, created_by, view = valid(
        attempt(page_size, "page_size", request.page_size, default=DEFAULT_PAGE_SIZE, maximum=max_page_size),
        attempt(optional_uuid, "persona_id", request.persona_id),
        attempt(optional_uuid, "emotional_arc_id", request.emotional_arc_id),
        attempt(optional_uuid, "training_topic_id", request.training_topic_id),
        attempt(optional_tier, "tier", request.tier),
        attempt(optional_uuid, "created_by", request.created_by),
        attempt(view_of, request.view),
    )
    filters = ConversationFilter(persona_id, arc_id, topic_id, tier, created_by)
    filter_key = {k: str(v) for k, v in vars(filters).items()}
    position = decode_token("page_token", request.page_token, filter_key)
    after = None
    if position is not None:
        after = (position_timestamp("page_token", position, "t"), position_uuid("page_token", position, "id"))
    return ConversationPage(size, filters, view == generation_pb2.CONVERSATION_VIEW_FULL, after, filter_key)


def parse_catalog_page(request: PageRequest, kind: str, max_page_size: int) -> CatalogPage:
    """Page size and the key the page token continues after (tokens are bound to one kind of entry)."""
    size = page_size("page_size", request.page_size, default=DEFAULT_PAGE_SIZE, maximum=max_page_size)
    position = decode_token("page_token", request.page_token, {"kind": kind})
    return CatalogPage(size, position_text("page_token", position, "k") if position is not None else "")
