"""ConvgenClient: typed asyncio access to GenerationService, CatalogService, BatchService and DatasetService."""

# Every call takes a gRPC deadline (sent to the server), not an asyncio timeout.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

import grpc
from google.protobuf import field_mask_pb2

from clients.arguments import (
    NIL_UUID,
    ErrorPolicyLike,
    ItemStateLike,
    JobStateLike,
    TierLike,
    as_combination,
    as_parameters,
    error_policy_value,
    generation_parameters,
    item_state_value,
    job_state_value,
    tier_value,
)
from clients.catalog_index import Catalog
from clients.datasets import (
    ExportFormatLike,
    GroupByLike,
    download_files,
    export_format_value,
    export_selection,
    group_by_value,
)
from clients.errors import ConvgenRpcError
from clients.watch import BatchJobWatch
from convgen.rpc.channel import channel_options
from convgen.v1 import (
    batch_pb2,
    batch_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    common_pb2,
    dataset_pb2,
    dataset_pb2_grpc,
    generation_pb2,
    generation_pb2_grpc,
)

DEFAULT_GENERATION_TARGET = "localhost:50051"
DEFAULT_BATCH_TARGET = "localhost:50052"
DEFAULT_TIMEOUT = 30.0
# One generation is a model call (10-60 s with Claude) plus retries on the server side.
GENERATE_TIMEOUT = 600.0
CLIENT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
_Item = TypeVar("_Item")
_PageT = TypeVar("_PageT", bound="_Page")


class _Page(Protocol):
    @property
    def next_page_token(self) -> str: ...


def client_channel_options(extra: Sequence[tuple[str, Any]] = ()) -> list[tuple[str, Any]]:
    """Options of the channels the client opens; `extra` (the caller's) overrides them."""
    return channel_options(
        CLIENT_MAX_MESSAGE_BYTES,
        [
            # Keep pinging while a watch stream is idle, so a vanished server is noticed (the servers allow it).
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.primary_user_agent", "convgen-client/0.1"),
            *extra,
        ],
    )


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
        self._owned = list(owned_channels)
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        self.default_timeout = default_timeout
        self.generate_timeout = generate_timeout
        self._generation = generation_pb2_grpc.GenerationServiceStub(generation_channel) if generation_channel else None
        self._catalog = catalog_pb2_grpc.CatalogServiceStub(generation_channel) if generation_channel else None
        self._batch = batch_pb2_grpc.BatchServiceStub(batch_channel) if batch_channel else None
        self._datasets = dataset_pb2_grpc.DatasetServiceStub(batch_channel) if batch_channel else None
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
        resolved_options = client_channel_options(options)
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
        self, _exc_type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
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

    def _dataset_stub(self) -> dataset_pb2_grpc.DatasetServiceAsyncStub:
        if self._datasets is None:
            raise _no_target("batch")
        return self._datasets

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

    async def estimate_conversations(
        self,
        parameters: Sequence[common_pb2.GenerationParameters | Mapping[str, Any]],
        *,
        concurrency: int = 0,
        timeout: float | None = None,
    ) -> generation_pb2.EstimateConversationsResponse:
        """Estimates the tokens and cost of generating these conversations, without generating any.

        Args:
            parameters: parameter sets (GenerationParameters or mappings), in the order they would be generated.
            concurrency: conversations generated at once (decides which calls find the prompt prefix cached).
            timeout: deadline in seconds (default default_timeout).
        """
        request = generation_pb2.EstimateConversationsRequest(
            parameters=[as_parameters(p, i) for i, p in enumerate(parameters)], concurrency=concurrency
        )
        return await self._unary(self._generation_stub().EstimateConversations, request, timeout)

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
        max_cost_usd: float | None = None,
        validate_only: bool = False,
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
            max_cost_usd: budget in US dollars: the job pauses (BUDGET_EXHAUSTED) before its spend can pass it.
            validate_only: create nothing; the returned job (without id) carries the estimate of its tokens and cost.
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
            validate_only=validate_only,
            max_cost_usd=max_cost_usd,
        )
        if combination is not None:
            request.combination.CopyFrom(as_combination(combination))
        else:
            assert parameters is not None
            request.parameter_list.items.extend(as_parameters(p, i) for i, p in enumerate(parameters))
        if auto_start is not None:
            request.auto_start = auto_start
        return await self._unary(self._batch_stub().CreateBatchJob, request, timeout)

    async def update_batch_job(
        self,
        job_id: str,
        *,
        name: str | None = None,
        concurrency: int | None = None,
        max_cost_usd: float | None = None,
        clear_budget: bool = False,
        timeout: float | None = None,
    ) -> batch_pb2.BatchJob:
        """Changes a job's name, concurrency or budget (UpdateBatchJob); only the fields given change.

        Args:
            job_id: the job's UUID.
            name: new display name.
            concurrency: new concurrency, 1..256.
            max_cost_usd: new budget in US dollars (raising it lets resume_batch_job continue a job paused with
                BUDGET_EXHAUSTED).
            clear_budget: remove the budget.
            timeout: deadline in seconds (default default_timeout).
        """
        if clear_budget and max_cost_usd is not None:
            raise ConvgenRpcError.invalid_argument("max_cost_usd", "pass a budget or clear_budget, not both")
        job = batch_pb2.BatchJob(id=job_id, name=name or "", concurrency=concurrency or 0, max_cost_usd=max_cost_usd)
        paths = [
            path
            for path, given in (
                ("name", name is not None),
                ("concurrency", concurrency is not None),
                ("max_cost_usd", max_cost_usd is not None or clear_budget),
            )
            if given
        ]
        request = batch_pb2.UpdateBatchJobRequest(batch_job=job, update_mask=field_mask_pb2.FieldMask(paths=paths))
        return await self._unary(self._batch_stub().UpdateBatchJob, request, timeout)

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

    # --- DatasetService (served by the batch service) ------------------------------------------------------------

    async def create_export(
        self,
        job_ids: Sequence[str],
        *,
        format: ExportFormatLike,
        selection: dataset_pb2.ExportSelection | None = None,
        system_prompt: str = "",
        eval_fraction: float = 0.0,
        group_by: GroupByLike = "none",
        seed: int = 0,
        drop_near_duplicates: bool = False,
        near_duplicate_threshold: float | None = None,
        report_only: bool = False,
        include_running: bool = False,
        request_id: str = "",
        timeout: float | None = None,
    ) -> dataset_pb2.Export:
        """Starts a durable export of the jobs' conversations (CreateExport); idempotent on request_id.

        Args:
            job_ids: UUIDs of the batch jobs whose completed items are exported.
            format: 'chat' (OpenAI/TRL messages), 'sharegpt', 'bedrock' (Bedrock Claude) or 'convgen' (lineage).
            selection: instead of job_ids and include_running, a full ExportSelection (filters: tiers, persona /
                arc / topic ids, created window); see clients.datasets.export_selection.
            system_prompt: the system prompt of every line; empty = convgen's advisor prompt.
            eval_fraction: share of conversations (or groups) in eval.jsonl, 0..0.5.
            group_by: 'none', 'persona', 'arc' or 'topic': what never spans both splits.
            seed: seed of the split; the same selection and seed give byte-identical files.
            drop_near_duplicates: keep one conversation per near-duplicate cluster (the earliest).
            near_duplicate_threshold: Jaccard threshold in (0, 1]; None = 0.8.
            report_only: compute the report without writing files.
            include_running: accept jobs that have not ended (their completed items so far).
            request_id: idempotency key.
            timeout: deadline in seconds (default default_timeout).
        """
        request = dataset_pb2.CreateExportRequest(
            request_id=request_id,
            selection=selection or export_selection(job_ids, include_running=include_running),
            format=export_format_value(format),
            system_prompt=system_prompt,
            split=dataset_pb2.ExportSplit(eval_fraction=eval_fraction, group_by=group_by_value(group_by), seed=seed),
            quality_gate=dataset_pb2.QualityGate(drop_near_duplicates=drop_near_duplicates),
            report_only=report_only,
        )
        if near_duplicate_threshold is not None:
            request.quality_gate.near_duplicate_threshold = near_duplicate_threshold
        return await self._unary(self._dataset_stub().CreateExport, request, timeout)

    async def get_export(
        self, export_id: str, *, full: bool = True, timeout: float | None = None
    ) -> dataset_pb2.Export:
        """One export: state, counts, files and (full view) the report and a sample of dropped rows."""
        view = dataset_pb2.EXPORT_VIEW_FULL if full else dataset_pb2.EXPORT_VIEW_BASIC
        request = dataset_pb2.GetExportRequest(export_id=export_id, view=view)
        return await self._unary(self._dataset_stub().GetExport, request, timeout)

    async def list_exports(
        self, *, page_size: int = 0, page_token: str = "", full: bool = False, timeout: float | None = None
    ) -> dataset_pb2.ListExportsResponse:
        """One page of exports, newest first (page_size 1..1000, 0 = 50); full adds each report."""
        view = dataset_pb2.EXPORT_VIEW_FULL if full else dataset_pb2.EXPORT_VIEW_BASIC
        request = dataset_pb2.ListExportsRequest(page_size=page_size, page_token=page_token, view=view)
        return await self._unary(self._dataset_stub().ListExports, request, timeout)

    def iter_exports(self, *, page_size: int = 0, full: bool = False) -> AsyncIterator[dataset_pb2.Export]:
        """Every export, newest first, page after page."""
        return self._walk(
            lambda token: self.list_exports(page_size=page_size, page_token=token, full=full),
            lambda page: page.exports,
        )

    async def read_export_file(
        self, export_id: str, name: str, *, offset: int = 0, timeout: float | None = None
    ) -> AsyncIterator[dataset_pb2.ExportFileChunk]:
        """Streams one file of a succeeded export (train.jsonl, eval.jsonl, manifest.json, report.md) from offset.

        The deadline (default: none) covers the whole stream.
        """
        request = dataset_pb2.ReadExportFileRequest(export_id=export_id, name=name, offset=offset)
        call = self._dataset_stub().ReadExportFile(request, timeout=timeout, metadata=self._metadata)
        try:
            async for chunk in call:
                yield chunk
        except grpc.aio.AioRpcError as error:
            raise ConvgenRpcError.from_call(error) from None
        finally:
            call.cancel()

    async def wait_export(
        self,
        export_id: str,
        *,
        poll_seconds: float = 0.5,
        on_progress: Callable[[dataset_pb2.Export], Any] | None = None,
    ) -> dataset_pb2.Export:
        """Polls GetExport until the export has succeeded or failed; on_progress sees each poll."""
        while True:
            export = await self.get_export(export_id, full=False)
            if on_progress is not None:
                on_progress(export)
            if export.state in (dataset_pb2.EXPORT_STATE_SUCCEEDED, dataset_pb2.EXPORT_STATE_FAILED):
                return await self.get_export(export_id)
            await asyncio.sleep(poll_seconds)

    async def download_export(
        self, export_id: str, directory: str | Path, *, names: Sequence[str] | None = None
    ) -> list[Path]:
        """Downloads a succeeded export's files (all, or the named ones) into directory, each checked against its
        SHA-256; an interrupted download resumes where it stopped. Returns the paths written."""
        export = await self.get_export(export_id, full=False)

        def read(export_id: str, name: str, offset: int) -> AsyncIterator[dataset_pb2.ExportFileChunk]:
            return self.read_export_file(export_id, name, offset=offset)

        return await download_files(export, Path(directory), read, names=names)


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
