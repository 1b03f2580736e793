"""ConvgenClient: typed asyncio access to GenerationService, CatalogService and BatchService."""

# Every call takes a gRPC deadline (sent to the server), not an asyncio timeout.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, TypeAlias, TypeVar

import grpc

from clients.errors import ConvgenRpcError
from convgen.v1 import (
    batch_pb2,
    batch_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    common_pb2,
    generation_pb2,
    generation_pb2_grpc,
)

DEFAULT_GENERATION_TARGET = "localhost:50051"
DEFAULT_BATCH_TARGET = "localhost:50052"
DEFAULT_TIMEOUT = 30.0
# One generation is a model call (10-60 s with Claude) plus retries on the server side.
GENERATE_TIMEOUT = 600.0
NIL_UUID = "00000000-0000-0000-0000-000000000000"
# A watch stream open this long before it failed counts as healthy: its failure starts a fresh reconnect budget.
HEALTHY_STREAM_SECONDS = 30.0

# Enum arguments: the generated value (an int) or its name, full (TIER_EDGE_CASE) or short (edge_case).
TierLike: TypeAlias = int | str
JobStateLike: TypeAlias = int | str
ItemStateLike: TypeAlias = int | str
ErrorPolicyLike: TypeAlias = int | str

TERMINAL_JOB_STATES = frozenset(
    {batch_pb2.BATCH_JOB_STATE_COMPLETED, batch_pb2.BATCH_JOB_STATE_FAILED, batch_pb2.BATCH_JOB_STATE_CANCELLED}
)
# Codes with which a watch stream ends when the connection, the server or a proxy goes away: worth resuming.
RESUMABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.ABORTED})
# Resumable too when the transport made them up (a reset stream): convgen's own statuses always carry ErrorInfo.
TRANSPORT_CODES = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
_Item = TypeVar("_Item")
_PageT = TypeVar("_PageT", bound="_Page")


class _Page(Protocol):
    @property
    def next_page_token(self) -> str: ...


def channel_options(extra: Sequence[tuple[str, Any]] = ()) -> list[tuple[str, Any]]:
    """Options of the channels the client opens: large messages, keepalive, quick reconnects."""
    options: dict[str, Any] = {
        "grpc.max_receive_message_length": 16 * 1024 * 1024,
        "grpc.max_send_message_length": 16 * 1024 * 1024,
        "grpc.keepalive_time_ms": 30_000,
        "grpc.keepalive_timeout_ms": 10_000,
        # Keep pinging while a watch stream is idle, so a vanished server is noticed (the servers allow it).
        "grpc.http2.max_pings_without_data": 0,
        "grpc.initial_reconnect_backoff_ms": 200,
        "grpc.min_reconnect_backoff_ms": 200,
        "grpc.max_reconnect_backoff_ms": 5_000,
        "grpc.primary_user_agent": "convgen-client/0.1",
    }
    options.update(dict(extra))
    return list(options.items())


def _enum(enum: Any, prefix: str, field_name: str, value: int | str, aliases: Mapping[str, str] | None = None) -> int:
    """An enum number from its number, full name or short lower-case name (e.g. 'edge_case', 'edge-case')."""
    if isinstance(value, int):
        if value not in enum.values():
            raise ConvgenRpcError.invalid_argument(field_name, f"{value} is not a valid {enum.DESCRIPTOR.name}")
        return value
    name = value.strip().lower().replace("-", "_")
    name = (aliases or {}).get(name, name)
    full = name.upper() if name.upper().startswith(prefix) else prefix + name.upper()
    names: list[str] = list(enum.keys())
    if full not in names or full.endswith("_UNSPECIFIED"):
        choices = ", ".join(k.removeprefix(prefix).lower() for k in names if not k.endswith("_UNSPECIFIED"))
        raise ConvgenRpcError.invalid_argument(field_name, f"{value!r} is not one of {choices}")
    number: int = enum.Value(full)
    return number


def tier_value(value: TierLike, field_name: str = "tier") -> common_pb2.Tier.ValueType:
    """A Tier from TIER_* or 'template' / 'scenario' / 'edge_case'."""
    return common_pb2.Tier.ValueType(_enum(common_pb2.Tier, "TIER_", field_name, value))


def job_state_value(value: JobStateLike, field_name: str = "state") -> batch_pb2.BatchJobState.ValueType:
    """A BatchJobState from BATCH_JOB_STATE_* or 'queued' / 'running' (or 'processing') / 'failed' / ..."""
    number = _enum(batch_pb2.BatchJobState, "BATCH_JOB_STATE_", field_name, value, {"processing": "running"})
    return batch_pb2.BatchJobState.ValueType(number)


def item_state_value(value: ItemStateLike, field_name: str = "state") -> batch_pb2.BatchItemState.ValueType:
    """A BatchItemState from BATCH_ITEM_STATE_* or 'queued' / 'processing' / 'completed' / 'failed' / 'cancelled'."""
    number = _enum(batch_pb2.BatchItemState, "BATCH_ITEM_STATE_", field_name, value, {"running": "processing"})
    return batch_pb2.BatchItemState.ValueType(number)


def error_policy_value(value: ErrorPolicyLike, field_name: str = "error_policy") -> batch_pb2.ErrorPolicy.ValueType:
    """An ErrorPolicy from ERROR_POLICY_* or 'continue' / 'stop_on_failure'."""
    number = _enum(batch_pb2.ErrorPolicy, "ERROR_POLICY_", field_name, value, {"stop": "stop_on_failure"})
    return batch_pb2.ErrorPolicy.ValueType(number)


def generation_parameters(
    *,
    persona_id: str,
    emotional_arc_id: str,
    training_topic_id: str,
    tier: TierLike,
    template_id: str = "",
    field_name: str = "parameters",
) -> common_pb2.GenerationParameters:
    """One parameter set; an empty template_id auto-selects a template by arc and tier."""
    return common_pb2.GenerationParameters(
        persona_id=persona_id,
        emotional_arc_id=emotional_arc_id,
        training_topic_id=training_topic_id,
        tier=tier_value(tier, f"{field_name}.tier"),
        template_id=template_id,
    )


def _as_parameters(value: common_pb2.GenerationParameters | Mapping[str, Any], index: int) -> Any:
    if isinstance(value, common_pb2.GenerationParameters):
        return value
    return generation_parameters(field_name=f"parameters[{index}]", **dict(value))


def _as_combination(value: batch_pb2.Combination | Mapping[str, Any]) -> batch_pb2.Combination:
    if isinstance(value, batch_pb2.Combination):
        return value
    fields = dict(value)
    tier = fields.pop("tier", None)
    combination = batch_pb2.Combination(**fields)
    if tier is not None:
        combination.tier = tier_value(tier, "combination.tier")
    return combination


def is_uuid(value: str) -> bool:
    """True when value parses as a UUID."""
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


@dataclass
class Catalog:
    """Every persona, arc, topic and template, with lookups by id or human key."""

    personas: list[catalog_pb2.Persona]
    emotional_arcs: list[catalog_pb2.EmotionalArc]
    training_topics: list[catalog_pb2.TrainingTopic]
    templates: list[catalog_pb2.PromptTemplate]
    _index: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._index = {
            "persona": {k: p for p in self.personas for k in (p.id, p.persona_key)},
            "emotional arc": {k: a for a in self.emotional_arcs for k in (a.id, a.arc_key)},
            "training topic": {k: t for t in self.training_topics for k in (t.id, t.topic_key)},
            "template": {k: t for t in self.templates for k in (t.id, t.template_name)},
        }

    def _find(self, kind: str, key_or_id: str, field_name: str) -> Any:
        found = self._index[kind].get(key_or_id.strip())
        if found is None and is_uuid(key_or_id):
            found = self._index[kind].get(str(uuid.UUID(key_or_id)))
        if found is None:
            known = sorted(k for k in self._index[kind] if not is_uuid(k))
            shown = ", ".join(known[:25]) + (", ..." if len(known) > 25 else "")
            raise ConvgenRpcError.client_side(
                grpc.StatusCode.NOT_FOUND,
                f"{field_name}: no {kind} with id or key {key_or_id!r} (known keys: {shown or 'none'})",
                reason="CATALOG_ENTRY_NOT_FOUND",
            )
        return found

    def persona(self, key_or_id: str, field_name: str = "persona") -> catalog_pb2.Persona:
        """The persona with this id or persona_key."""
        found: catalog_pb2.Persona = self._find("persona", key_or_id, field_name)
        return found

    def emotional_arc(self, key_or_id: str, field_name: str = "arc") -> catalog_pb2.EmotionalArc:
        """The emotional arc with this id or arc_key."""
        found: catalog_pb2.EmotionalArc = self._find("emotional arc", key_or_id, field_name)
        return found

    def training_topic(self, key_or_id: str, field_name: str = "topic") -> catalog_pb2.TrainingTopic:
        """The training topic with this id or topic_key."""
        found: catalog_pb2.TrainingTopic = self._find("training topic", key_or_id, field_name)
        return found

    def template(self, name_or_id: str, field_name: str = "template") -> catalog_pb2.PromptTemplate:
        """The prompt template with this id or template_name."""
        found: catalog_pb2.PromptTemplate = self._find("template", name_or_id, field_name)
        return found

    def label(self, kind: str, entry_id: str) -> str:
        """The human key of an entry id ('persona', 'emotional arc', 'training topic', 'template'), else the id."""
        entry = self._index[kind].get(entry_id)
        if entry is None:
            return entry_id
        for attribute in ("persona_key", "arc_key", "topic_key", "template_name"):
            if hasattr(entry, attribute):
                key: str = getattr(entry, attribute)
                return key
        return entry_id


class ConvgenClient:
    """Async client of the convgen services: one channel per target, bearer token on every call."""

    def __init__(
        self,
        *,
        generation_channel: grpc.aio.Channel | None,
        batch_channel: grpc.aio.Channel | None,
        token: str | None = None,
        owned_channels: Sequence[grpc.aio.Channel] = (),
        default_timeout: float | None = DEFAULT_TIMEOUT,
        generate_timeout: float | None = GENERATE_TIMEOUT,
    ) -> None:
        """Prefer connect() or from_channels(); owned_channels are the ones close() closes."""
        self._generation_channel = generation_channel
        self._batch_channel = batch_channel
        self._owned = list(owned_channels)
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        self.default_timeout = default_timeout
        self.generate_timeout = generate_timeout
        self._generation = generation_pb2_grpc.GenerationServiceStub(generation_channel) if generation_channel else None
        self._catalog = catalog_pb2_grpc.CatalogServiceStub(generation_channel) if generation_channel else None
        self._batch = batch_pb2_grpc.BatchServiceStub(batch_channel) if batch_channel else None
        self._catalog_cache: Catalog | None = None

    # --- construction -------------------------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        generation_target: str | None = None,
        batch_target: str | None = None,
        *,
        token: str | None = None,
        tls: bool = False,
        tls_ca_file: str | Path | None = None,
        root_certificates: bytes | None = None,
        tls_cert_file: str | Path | None = None,
        tls_key_file: str | Path | None = None,
        certificate_chain: bytes | None = None,
        private_key: bytes | None = None,
        options: Sequence[tuple[str, Any]] = (),
        default_timeout: float | None = DEFAULT_TIMEOUT,
        generate_timeout: float | None = GENERATE_TIMEOUT,
    ) -> ConvgenClient:
        """Opens channels to the generation target (which also hosts CatalogService) and the batch target.

        Args:
            generation_target: host:port (or any gRPC target) of the generation service; None = localhost:50051.
            batch_target: target of the batch service; None = localhost:50052. Equal targets share one channel.
            token: bearer token sent as 'authorization: Bearer <token>' on every call.
            tls: use TLS with the system's root certificates (implied by any of the certificate arguments).
            tls_ca_file / root_certificates: CA (PEM file or bytes) the servers' certificates chain to.
            tls_cert_file / certificate_chain and tls_key_file / private_key: client certificate for mutual TLS.
            options: extra gRPC channel options, overriding the client's defaults.
            default_timeout: deadline in seconds of calls that do not pass one (None: no deadline).
            generate_timeout: deadline of generate_conversation and process_next calls.
        """
        credentials = _credentials(
            tls=tls,
            ca=_read(tls_ca_file, "tls_ca_file") or root_certificates,
            cert=_read(tls_cert_file, "tls_cert_file") or certificate_chain,
            key=_read(tls_key_file, "tls_key_file") or private_key,
        )
        resolved_options = channel_options(options)
        generation_target = generation_target or DEFAULT_GENERATION_TARGET
        batch_target = batch_target or DEFAULT_BATCH_TARGET

        def open_channel(target: str) -> grpc.aio.Channel:
            if credentials is None:
                return grpc.aio.insecure_channel(target, options=resolved_options)
            return grpc.aio.secure_channel(target, credentials, options=resolved_options)

        generation_channel = open_channel(generation_target)
        batch_channel = generation_channel if batch_target == generation_target else open_channel(batch_target)
        owned = [generation_channel] if batch_channel is generation_channel else [generation_channel, batch_channel]
        return cls(
            generation_channel=generation_channel,
            batch_channel=batch_channel,
            token=token,
            owned_channels=owned,
            default_timeout=default_timeout,
            generate_timeout=generate_timeout,
        )

    @classmethod
    def from_channels(
        cls,
        generation_channel: grpc.aio.Channel | None = None,
        batch_channel: grpc.aio.Channel | None = None,
        *,
        token: str | None = None,
        default_timeout: float | None = DEFAULT_TIMEOUT,
        generate_timeout: float | None = GENERATE_TIMEOUT,
    ) -> ConvgenClient:
        """A client on existing channels; close() leaves them open."""
        return cls(
            generation_channel=generation_channel,
            batch_channel=batch_channel,
            token=token,
            default_timeout=default_timeout,
            generate_timeout=generate_timeout,
        )

    async def close(self) -> None:
        """Closes the channels this client opened (not the ones given to from_channels)."""
        owned, self._owned = self._owned, []
        for channel in owned:
            await channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- plumbing -----------------------------------------------------------------------------------------------

    async def _unary(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[_Request, _Response],
        request: _Request,
        timeout: float | None,
        *,
        long: bool = False,
    ) -> _Response:
        """Calls with the given deadline, else the default one (generate_timeout for long calls)."""
        default = self.generate_timeout if long else self.default_timeout
        deadline = default if timeout is None else timeout
        try:
            return await method(request, timeout=deadline, metadata=self._metadata)
        except grpc.aio.AioRpcError as error:
            raise ConvgenRpcError.from_call(error) from None

    def _generation_stub(self) -> generation_pb2_grpc.GenerationServiceAsyncStub:
        if self._generation is None:
            raise _no_target("generation")
        return self._generation

    def _catalog_stub(self) -> catalog_pb2_grpc.CatalogServiceAsyncStub:
        if self._catalog is None:
            raise _no_target("generation")
        return self._catalog

    def _batch_stub(self) -> batch_pb2_grpc.BatchServiceAsyncStub:
        if self._batch is None:
            raise _no_target("batch")
        return self._batch

    @staticmethod
    async def _walk(
        fetch: Callable[[str], Awaitable[_PageT]], items: Callable[[_PageT], Iterable[_Item]]
    ) -> AsyncIterator[_Item]:
        token = ""
        while True:
            page = await fetch(token)
            for item in items(page):
                yield item
            token = page.next_page_token
            if not token:
                return

    # --- GenerationService --------------------------------------------------------------------------------------

    async def generate_conversation(
        self,
        *,
        persona_id: str,
        emotional_arc_id: str,
        training_topic_id: str,
        tier: TierLike,
        template_id: str = "",
        request_id: str = "",
        created_by: str = "",
        timeout: float | None = None,
    ) -> generation_pb2.StoredConversation:
        """Generates, validates and stores one conversation (GenerateConversation).

        Args:
            persona_id, emotional_arc_id, training_topic_id: catalog UUIDs (see resolve_* for human keys).
            tier: Tier value or 'template' / 'scenario' / 'edge_case'.
            template_id: prompt template UUID; empty (or the nil UUID) auto-selects by arc and tier.
            request_id: idempotency key; a repeat returns the stored conversation without a second model call.
            created_by: UUID of the user; empty means "system".
            timeout: deadline in seconds (default generate_timeout, 600 s).
        """
        request = generation_pb2.GenerateConversationRequest(
            parameters=generation_parameters(
                persona_id=persona_id,
                emotional_arc_id=emotional_arc_id,
                training_topic_id=training_topic_id,
                tier=tier,
                template_id=template_id,
            ),
            request_id=request_id,
            created_by=created_by,
        )
        stub = self._generation_stub()
        return await self._unary(stub.GenerateConversation, request, timeout, long=True)

    async def get_conversation(
        self,
        *,
        pk: str | None = None,
        business_key: str | None = None,
        full: bool = False,
        timeout: float | None = None,
    ) -> generation_pb2.StoredConversation:
        """Returns one stored conversation by primary key or business key (exactly one of them).

        Args:
            pk: conversations.id.
            business_key: conversations.conversation_id (the key used in blob paths).
            full: include the conversation content (FULL view); else metadata, blobs and usage only.
            timeout: deadline in seconds (default default_timeout).
        """
        if (pk is None) == (business_key is None):
            raise ConvgenRpcError.invalid_argument("key", "pass exactly one of pk or business_key")
        view = generation_pb2.CONVERSATION_VIEW_FULL if full else generation_pb2.CONVERSATION_VIEW_BASIC
        if pk is not None:
            request = generation_pb2.GetConversationRequest(pk=pk, view=view)
        else:
            request = generation_pb2.GetConversationRequest(business_key=business_key or "", view=view)
        return await self._unary(self._generation_stub().GetConversation, request, timeout)

    async def list_conversations(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        persona_id: str = "",
        emotional_arc_id: str = "",
        training_topic_id: str = "",
        tier: TierLike | None = None,
        created_by: str = "",
        full: bool = False,
        timeout: float | None = None,
    ) -> generation_pb2.ListConversationsResponse:
        """One page of stored conversations, newest first; empty filters match everything.

        Args:
            page_size: 1..1000 (0 = the server's default, 50).
            page_token: next_page_token of the previous page; empty for the first.
            persona_id, emotional_arc_id, training_topic_id, tier, created_by: optional filters.
            full: include each conversation's content.
            timeout: deadline in seconds (default default_timeout).
        """
        request = generation_pb2.ListConversationsRequest(
            page_size=page_size,
            page_token=page_token,
            persona_id=persona_id,
            emotional_arc_id=emotional_arc_id,
            training_topic_id=training_topic_id,
            tier=tier_value(tier) if tier is not None else common_pb2.TIER_UNSPECIFIED,
            created_by=created_by,
            view=generation_pb2.CONVERSATION_VIEW_FULL if full else generation_pb2.CONVERSATION_VIEW_BASIC,
        )
        return await self._unary(self._generation_stub().ListConversations, request, timeout)

    def iter_conversations(
        self, *, page_size: int = 0, **filters: Any
    ) -> AsyncIterator[generation_pb2.StoredConversation]:
        """Every conversation matching the filters of list_conversations, page after page."""

        async def fetch(token: str) -> generation_pb2.ListConversationsResponse:
            return await self.list_conversations(page_size=page_size, page_token=token, **filters)

        return self._walk(fetch, lambda page: page.conversations)

    # --- CatalogService -----------------------------------------------------------------------------------------

    async def list_personas(
        self, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> catalog_pb2.ListPersonasResponse:
        """One page of personas ordered by persona_key (page_size 1..1000, 0 = 50)."""
        request = catalog_pb2.ListPersonasRequest(page_size=page_size, page_token=page_token)
        return await self._unary(self._catalog_stub().ListPersonas, request, timeout)

    async def list_emotional_arcs(
        self, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> catalog_pb2.ListEmotionalArcsResponse:
        """One page of emotional arcs ordered by arc_key (page_size 1..1000, 0 = 50)."""
        request = catalog_pb2.ListEmotionalArcsRequest(page_size=page_size, page_token=page_token)
        return await self._unary(self._catalog_stub().ListEmotionalArcs, request, timeout)

    async def list_training_topics(
        self, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> catalog_pb2.ListTrainingTopicsResponse:
        """One page of training topics ordered by topic_key (page_size 1..1000, 0 = 50)."""
        request = catalog_pb2.ListTrainingTopicsRequest(page_size=page_size, page_token=page_token)
        return await self._unary(self._catalog_stub().ListTrainingTopics, request, timeout)

    async def list_templates(
        self, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> catalog_pb2.ListTemplatesResponse:
        """One page of prompt templates ordered by template_name (page_size 1..1000, 0 = 50)."""
        request = catalog_pb2.ListTemplatesRequest(page_size=page_size, page_token=page_token)
        return await self._unary(self._catalog_stub().ListTemplates, request, timeout)

    def iter_personas(self, *, page_size: int = 0) -> AsyncIterator[catalog_pb2.Persona]:
        """Every persona, page after page."""
        return self._walk(
            lambda token: self.list_personas(page_size=page_size, page_token=token), lambda page: page.personas
        )

    def iter_emotional_arcs(self, *, page_size: int = 0) -> AsyncIterator[catalog_pb2.EmotionalArc]:
        """Every emotional arc, page after page."""
        return self._walk(
            lambda token: self.list_emotional_arcs(page_size=page_size, page_token=token),
            lambda page: page.emotional_arcs,
        )

    def iter_training_topics(self, *, page_size: int = 0) -> AsyncIterator[catalog_pb2.TrainingTopic]:
        """Every training topic, page after page."""
        return self._walk(
            lambda token: self.list_training_topics(page_size=page_size, page_token=token),
            lambda page: page.training_topics,
        )

    def iter_templates(self, *, page_size: int = 0) -> AsyncIterator[catalog_pb2.PromptTemplate]:
        """Every prompt template, page after page."""
        return self._walk(
            lambda token: self.list_templates(page_size=page_size, page_token=token), lambda page: page.templates
        )

    async def catalog(self, *, refresh: bool = False) -> Catalog:
        """The whole catalog (cached after the first call unless refresh is set), for key lookups."""
        if self._catalog_cache is None or refresh:
            personas, arcs, topics, templates = await asyncio.gather(
                _collect(self.iter_personas(page_size=1000)),
                _collect(self.iter_emotional_arcs(page_size=1000)),
                _collect(self.iter_training_topics(page_size=1000)),
                _collect(self.iter_templates(page_size=1000)),
            )
            self._catalog_cache = Catalog(personas, arcs, topics, templates)
        return self._catalog_cache

    async def resolve_persona_id(self, key_or_id: str) -> str:
        """The persona UUID for a persona_key such as pragmatic_optimist (or a UUID, checked to exist)."""
        return (await self.catalog()).persona(key_or_id).id

    async def resolve_emotional_arc_id(self, key_or_id: str) -> str:
        """The emotional arc UUID for an arc_key such as couple_conflict_to_alignment (or a UUID)."""
        return (await self.catalog()).emotional_arc(key_or_id).id

    async def resolve_training_topic_id(self, key_or_id: str) -> str:
        """The training topic UUID for a topic_key such as estate_planning_basics (or a UUID)."""
        return (await self.catalog()).training_topic(key_or_id).id

    async def resolve_template_id(self, name_or_id: str) -> str:
        """The prompt template UUID for a template_name (or a UUID); the nil UUID passes through."""
        if name_or_id in ("", NIL_UUID):
            return name_or_id
        return (await self.catalog()).template(name_or_id).id

    # --- BatchService -------------------------------------------------------------------------------------------

    async def create_batch_job(
        self,
        *,
        combination: batch_pb2.Combination | Mapping[str, Any] | None = None,
        parameters: Sequence[common_pb2.GenerationParameters | Mapping[str, Any]] | None = None,
        name: str = "",
        concurrency: int = 0,
        max_attempts: int = 0,
        error_policy: ErrorPolicyLike | None = None,
        auto_start: bool | None = None,
        created_by: str = "",
        request_id: str = "",
        timeout: float | None = None,
    ) -> batch_pb2.BatchJob:
        """Creates a job and its items in one transaction (CreateBatchJob); idempotent on request_id.

        Args:
            combination: persona x arc x topic product: a Combination, or a mapping with persona_ids,
                emotional_arc_ids, training_topic_ids, tier ('template' etc.) and optional template_id.
            parameters: instead of combination, an explicit list of parameter sets (GenerationParameters or
                mappings with persona_id, emotional_arc_id, training_topic_id, tier, template_id), one item each.
            name: display name (default: made from the time).
            concurrency: items processed at once, 1..256 (0 = server default 8).
            max_attempts: attempts per item for transient failures, 1..20 (0 = server default 3).
            error_policy: 'continue' (default) or 'stop_on_failure' (or an ErrorPolicy value).
            auto_start: start at once (default True); False leaves the job queued until resume or process_next.
            created_by: UUID of the user; empty means "system".
            request_id: idempotency key; a repeat returns the job created for it.
            timeout: deadline in seconds (default default_timeout).
        """
        if (combination is None) == (parameters is None):
            raise ConvgenRpcError.invalid_argument("selection", "pass exactly one of combination or parameters")
        request = batch_pb2.CreateBatchJobRequest(
            name=name,
            request_id=request_id,
            concurrency=concurrency,
            max_attempts=max_attempts,
            created_by=created_by,
            error_policy=error_policy_value(error_policy)
            if error_policy is not None
            else batch_pb2.ERROR_POLICY_UNSPECIFIED,
        )
        if combination is not None:
            request.combination.CopyFrom(_as_combination(combination))
        else:
            assert parameters is not None
            request.parameter_list.items.extend(_as_parameters(p, i) for i, p in enumerate(parameters))
        if auto_start is not None:
            request.auto_start = auto_start
        return await self._unary(self._batch_stub().CreateBatchJob, request, timeout)

    async def get_batch_job(self, job_id: str, *, timeout: float | None = None) -> batch_pb2.BatchJob:
        """One job with its counters, usage, cost and log location."""
        request = batch_pb2.GetBatchJobRequest(job_id=job_id)
        return await self._unary(self._batch_stub().GetBatchJob, request, timeout)

    async def list_batch_jobs(
        self,
        *,
        state: JobStateLike | None = None,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> batch_pb2.ListBatchJobsResponse:
        """One page of jobs, newest first.

        Args:
            state: only jobs in this state ('queued', 'running', 'paused', 'completed', 'failed', ...).
            page_size: 1..1000 (0 = 50).
            page_token: next_page_token of the previous page.
            timeout: deadline in seconds (default default_timeout).
        """
        request = batch_pb2.ListBatchJobsRequest(
            page_size=page_size,
            page_token=page_token,
            state=job_state_value(state) if state is not None else batch_pb2.BATCH_JOB_STATE_UNSPECIFIED,
        )
        return await self._unary(self._batch_stub().ListBatchJobs, request, timeout)

    def iter_batch_jobs(
        self, *, state: JobStateLike | None = None, page_size: int = 0
    ) -> AsyncIterator[batch_pb2.BatchJob]:
        """Every job (in a state, if given), newest first, page after page."""
        return self._walk(
            lambda token: self.list_batch_jobs(state=state, page_size=page_size, page_token=token),
            lambda page: page.batch_jobs,
        )

    async def list_batch_items(
        self,
        job_id: str,
        *,
        state: ItemStateLike | None = None,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> batch_pb2.ListBatchItemsResponse:
        """One page of a job's items in position order.

        Args:
            job_id: UUID of the job.
            state: only items in this state ('queued', 'processing', 'completed', 'failed', 'cancelled').
            page_size: 1..1000 (0 = 100).
            page_token: next_page_token of the previous page.
            timeout: deadline in seconds (default default_timeout).
        """
        request = batch_pb2.ListBatchItemsRequest(
            job_id=job_id,
            page_size=page_size,
            page_token=page_token,
            state=item_state_value(state) if state is not None else batch_pb2.BATCH_ITEM_STATE_UNSPECIFIED,
        )
        return await self._unary(self._batch_stub().ListBatchItems, request, timeout)

    def iter_batch_items(
        self, job_id: str, *, state: ItemStateLike | None = None, page_size: int = 0
    ) -> AsyncIterator[batch_pb2.BatchItem]:
        """Every item of a job (in a state, if given) in position order, page after page."""
        return self._walk(
            lambda token: self.list_batch_items(job_id, state=state, page_size=page_size, page_token=token),
            lambda page: page.items,
        )

    def watch_batch_job(
        self,
        job_id: str,
        *,
        after_sequence: int | None = None,
        max_reconnects: int = 10,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
    ) -> BatchJobWatch:
        """Streams the job's events until its terminal event, resuming transparently after a dropped stream.

        The first event is the snapshot (the job as it is now); then one event per item transition and job state
        change. When the stream fails (UNAVAILABLE, a server restart) or ends before the terminal event, the
        watch reconnects with after_sequence = the last sequence seen, skips the resumed stream's snapshot and
        goes on: no event is yielded twice or lost.

        Args:
            job_id: UUID of the job.
            after_sequence: replay every event after this sequence (after the snapshot); None = only new events.
            max_reconnects: reconnects in a row without a new event before giving up with ConvgenRpcError.
            backoff_initial / backoff_max: first and longest wait (seconds) between reconnects; doubles, jittered.

        Use as `async for event in client.watch_batch_job(job_id)`, or `async with` to close it early.
        """
        return BatchJobWatch(
            self._batch_stub(),
            self._metadata,
            job_id,
            after_sequence=after_sequence,
            max_reconnects=max_reconnects,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
        )

    async def process_next(self, job_id: str, *, timeout: float | None = None) -> batch_pb2.ProcessNextResponse:
        """Claims and processes one queued item synchronously (deadline default generate_timeout)."""
        request = batch_pb2.ProcessNextRequest(job_id=job_id)
        return await self._unary(self._batch_stub().ProcessNext, request, timeout, long=True)

    async def pause_batch_job(self, job_id: str, *, timeout: float | None = None) -> batch_pb2.BatchJob:
        """Stops new claims for a queued or running job; in-flight items finish."""
        request = batch_pb2.PauseBatchJobRequest(job_id=job_id)
        return await self._unary(self._batch_stub().PauseBatchJob, request, timeout)

    async def resume_batch_job(self, job_id: str, *, timeout: float | None = None) -> batch_pb2.BatchJob:
        """Starts a queued job or continues a paused one."""
        request = batch_pb2.ResumeBatchJobRequest(job_id=job_id)
        return await self._unary(self._batch_stub().ResumeBatchJob, request, timeout)

    async def cancel_batch_job(self, job_id: str, *, timeout: float | None = None) -> batch_pb2.BatchJob:
        """Cancels a job: queued items at once, in-flight ones when they finish (STOPPING meanwhile)."""
        request = batch_pb2.CancelBatchJobRequest(job_id=job_id)
        return await self._unary(self._batch_stub().CancelBatchJob, request, timeout)

    async def retry_failed_items(
        self, job_id: str, *, item_ids: Sequence[str] = (), timeout: float | None = None
    ) -> batch_pb2.RetryFailedItemsResponse:
        """Re-queues the job's failed items (all, or the listed item UUIDs) and runs the job again."""
        request = batch_pb2.RetryFailedItemsRequest(job_id=job_id, item_ids=list(item_ids))
        return await self._unary(self._batch_stub().RetryFailedItems, request, timeout)

    async def get_batch_job_log(self, job_id: str, *, timeout: float | None = None) -> batch_pb2.BatchJobLog:
        """The job's log text and where its blob is uploaded (batch-logs/{job_id}/log.txt)."""
        request = batch_pb2.GetBatchJobLogRequest(job_id=job_id)
        return await self._unary(self._batch_stub().GetBatchJobLog, request, timeout)


class BatchJobWatch:
    """An async iterator of a job's BatchJobEvents that survives dropped streams; see watch_batch_job."""

    def __init__(
        self,
        stub: batch_pb2_grpc.BatchServiceAsyncStub,
        metadata: tuple[tuple[str, str], ...],
        job_id: str,
        *,
        after_sequence: int | None,
        max_reconnects: int,
        backoff_initial: float,
        backoff_max: float,
    ) -> None:
        self.job_id = job_id
        self._stub = stub
        self._metadata = metadata
        self._initial_after = after_sequence
        self._max_reconnects = max_reconnects
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._call: grpc.aio.UnaryStreamCall[batch_pb2.WatchBatchJobRequest, batch_pb2.BatchJobEvent] | None = None
        self._stream_snapshot_seen = False
        self._snapshot_delivered = False
        self._finished = False
        self._failures = 0
        self._opened_at = 0.0
        self._last_error: ConvgenRpcError | None = None
        self._rng = random.Random()  # noqa: S311 - jitter, not cryptography
        self.last_sequence: int | None = None
        """Sequence of the last event yielded (for the snapshot: its resume point)."""
        self.snapshot: batch_pb2.BatchJob | None = None
        """The job as of the latest snapshot received (the first stream's, then each resumed stream's)."""
        self.reconnects = 0
        """How many times the stream was reopened."""

    def __aiter__(self) -> BatchJobWatch:
        return self

    async def __aenter__(self) -> BatchJobWatch:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancels the open stream, if any; the iterator then ends."""
        self._finished = True
        self._drop_call()

    def _drop_call(self) -> None:
        call, self._call = self._call, None
        if call is not None and not call.done():
            call.cancel()

    async def __anext__(self) -> batch_pb2.BatchJobEvent:
        while not self._finished:
            if self._call is None:
                await self._open()
            assert self._call is not None
            try:
                message = await self._call.read()
            except grpc.aio.AioRpcError as error:
                self._call = None
                await self._failed(ConvgenRpcError.from_call(error))
                continue
            if message is grpc.aio.EOF:
                self._call = None
                if self._caught_up():
                    self._finished = True
                    break
                await self._failed(
                    ConvgenRpcError.client_side(
                        grpc.StatusCode.UNAVAILABLE,
                        f"watch of batch job {self.job_id} ended before the job's terminal event",
                        reason="WATCH_STREAM_ENDED_EARLY",
                    ),
                    resumable=True,
                )
                continue
            assert isinstance(message, batch_pb2.BatchJobEvent)
            event = self._accept(message)
            if event is not None:
                return event
        self._drop_call()
        raise StopAsyncIteration

    async def _open(self) -> None:
        if self._failures:
            delay = min(self._backoff_max, self._backoff_initial * 2 ** (self._failures - 1))
            await asyncio.sleep(delay * (0.5 + self._rng.random() / 2))
            self.reconnects += 1
        request = batch_pb2.WatchBatchJobRequest(job_id=self.job_id)
        resume_from = self.last_sequence if self._snapshot_delivered else self._initial_after
        if resume_from is not None:
            request.after_sequence = resume_from
        self._stream_snapshot_seen = False
        self._opened_at = time.monotonic()
        self._call = self._stub.WatchBatchJob(request, metadata=self._metadata)

    async def _failed(self, error: ConvgenRpcError, *, resumable: bool | None = None) -> None:
        """Records a failed stream; raises when it is not worth resuming or the reconnect budget is spent."""
        if resumable is None:
            resumable = error.code in RESUMABLE_CODES or (error.code in TRANSPORT_CODES and not error.reason)
        if time.monotonic() - self._opened_at > HEALTHY_STREAM_SECONDS:
            self._failures = 0
        self._failures += 1
        self._last_error = error
        if not resumable or self._failures > self._max_reconnects:
            self._finished = True
            if resumable:
                raise ConvgenRpcError(
                    error.code,
                    f"watch of batch job {self.job_id} gave up after {self._failures - 1} reconnects "
                    f"(last sequence {self.last_sequence}): {error.message}",
                    error.details,
                ) from None
            raise error

    def _accept(self, event: batch_pb2.BatchJobEvent) -> batch_pb2.BatchJobEvent | None:
        """The event to yield, or None for a resumed stream's snapshot and anything already yielded."""
        if event.HasField("snapshot"):
            first_of_stream = not self._stream_snapshot_seen
            self._stream_snapshot_seen = True
            self.snapshot = event.snapshot
            if not first_of_stream or self._snapshot_delivered:
                return None
            self._snapshot_delivered = True
            self.last_sequence = event.sequence
            return event
        if not self._snapshot_delivered:
            # Events come only after a snapshot; a stream that skips it is treated as a fresh one.
            self._snapshot_delivered = True
        if self.last_sequence is not None and event.sequence <= self.last_sequence:
            return None
        self.last_sequence = event.sequence
        self._failures = 0
        if event.HasField("job") and event.job.state in TERMINAL_JOB_STATES:
            self._finished = True
        return event

    def _caught_up(self) -> bool:
        """True when a stream ended cleanly because there is nothing more to come: the job is terminal."""
        snapshot = self.snapshot
        if snapshot is None or not self._stream_snapshot_seen or snapshot.state not in TERMINAL_JOB_STATES:
            return False
        return self.last_sequence is not None and snapshot.last_sequence <= self.last_sequence


def _no_target(which: str) -> ConvgenRpcError:
    return ConvgenRpcError.client_side(
        grpc.StatusCode.FAILED_PRECONDITION,
        f"this client has no channel to the {which} service (pass {which}_target or {which}_channel)",
        reason="NO_TARGET",
    )


def _read(path: str | Path | None, field_name: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ConvgenRpcError.invalid_argument(field_name, f"cannot read {path}: {error}") from None


def _credentials(
    *, tls: bool, ca: bytes | None, cert: bytes | None, key: bytes | None
) -> grpc.ChannelCredentials | None:
    if (cert is None) != (key is None):
        raise ConvgenRpcError.invalid_argument("tls_cert_file", "a client certificate needs its key, and vice versa")
    if not (tls or ca or cert):
        return None
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


async def _collect(items: AsyncIterator[_Item]) -> list[_Item]:
    return [item async for item in items]


__all__ = [
    "DEFAULT_BATCH_TARGET",
    "DEFAULT_GENERATION_TARGET",
    "GENERATE_TIMEOUT",
    "NIL_UUID",
    "TERMINAL_JOB_STATES",
    "BatchJobWatch",
    "Catalog",
    "ConvgenClient",
    "error_policy_value",
    "generation_parameters",
    "item_state_value",
    "job_state_value",
    "tier_value",
]
