"""The bad-input world: the services on their own database with jobs in every state, the RPCs and the codes each
may answer, and sending one request. Shared by the bad-input suites.

Scale the number of generated requests with BAD_INPUT_SCALE (default 1; e.g. 10 for a long run).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from convgen.v1 import batch_pb2, catalog_pb2, common_pb2, generation_pb2
from tests.bad_input import strategies as s
from tests.support.postgres import fetch
from tests.support.services import Services, assert_serving

SCALE = float(os.environ.get("BAD_INPUT_SCALE", "1"))
CALL_TIMEOUT = 30.0
IA = grpc.StatusCode.INVALID_ARGUMENT
NF = grpc.StatusCode.NOT_FOUND
FP = grpc.StatusCode.FAILED_PRECONDITION
OOR = grpc.StatusCode.OUT_OF_RANGE
RE = grpc.StatusCode.RESOURCE_EXHAUSTED
OK = grpc.StatusCode.OK


@dataclass(frozen=True)
class Rpc:
    """One RPC: where it lives and which codes its documentation allows besides OK."""

    service: str
    name: str
    codes: frozenset[grpc.StatusCode]
    streaming: bool = False


def _rpc(service: str, name: str, *codes: grpc.StatusCode, streaming: bool = False) -> Rpc:
    # RESOURCE_EXHAUSTED is always possible: gRPC itself refuses a request over GRPC_MAX_MESSAGE_BYTES.
    return Rpc(service, name, frozenset({*codes, RE}), streaming)


RPCS: dict[str, Rpc] = {
    rpc.name: rpc
    for rpc in [
        _rpc("catalog", "ListPersonas", IA),
        _rpc("catalog", "ListEmotionalArcs", IA),
        _rpc("catalog", "ListTrainingTopics", IA),
        _rpc("catalog", "ListTemplates", IA),
        _rpc("generation", "GenerateConversation", IA, NF, FP),
        _rpc("generation", "GetConversation", IA, NF),
        _rpc("generation", "ListConversations", IA),
        _rpc("generation", "EstimateConversations", IA, NF, FP),
        _rpc("batch", "CreateBatchJob", IA, NF, FP),
        _rpc("batch", "UpdateBatchJob", IA, NF, FP),
        _rpc("batch", "GetBatchJob", IA, NF),
        _rpc("batch", "ListBatchJobs", IA),
        _rpc("batch", "ListBatchItems", IA, NF),
        _rpc("batch", "WatchBatchJob", IA, NF, OOR, streaming=True),
        _rpc("batch", "ProcessNext", IA, NF, FP),
        _rpc("batch", "PauseBatchJob", IA, NF, FP),
        _rpc("batch", "ResumeBatchJob", IA, NF, FP),
        _rpc("batch", "CancelBatchJob", IA, NF, FP),
        _rpc("batch", "RetryFailedItems", IA, NF, FP),
        _rpc("batch", "GetBatchJobLog", IA, NF),
    ]
}


# --- the services and the jobs they hold --------------------------------------------------------------------------


@dataclass(repr=False)
class World:
    """Running services on their own database, the placeholder values, and the request tally."""

    services: Services
    dsn: str
    data_dir: Path
    known: dict[str, str]
    tally: s.Tally

    def __repr__(self) -> str:
        return f"World({self.data_dir.name}, {self.tally.total} requests so far)"

    def stub(self, service: str) -> Any:
        """The stub of a service by short name."""
        if service == "catalog":
            return self.services.catalog_stub
        if service == "generation":
            return self.services.generation_stub
        return self.services.batch_stub


async def make_job(services: Services, dsn: str, state: str, *, items: int = 1) -> batch_pb2.BatchJob:
    """A job in the given state, made deterministically (the engine never picks it up by itself).

    running: its only item is leased to a worker that does not exist (lease far in the future), so no worker
    claims or recovers it and the job stays running; stopping is that job cancelled. failed: an edge-case item whose
    arc has no active template when ProcessNext runs it (a permanent FAILED_PRECONDITION from generation).
    """
    stub = services.batch_stub
    arc, tier = (
        (s.CRISIS_ARC, common_pb2.TIER_EDGE_CASE) if state == "failed" else (s.SEED_ARC, common_pb2.TIER_TEMPLATE)
    )
    request = batch_pb2.CreateBatchJobRequest(
        name=f"bad-input {state}",
        auto_start=False,
        combination=batch_pb2.Combination(
            persona_ids=[s.SEED_PERSONA],
            emotional_arc_ids=[arc],
            training_topic_ids=s.TOPIC_IDS[: 1 if state in {"completed", "failed", "running", "stopping"} else items],
            tier=tier,
        ),
    )
    job = await stub.CreateBatchJob(request)
    if state == "paused":
        job = await stub.PauseBatchJob(batch_pb2.PauseBatchJobRequest(job_id=job.id))
    elif state == "cancelled":
        job = await stub.CancelBatchJob(batch_pb2.CancelBatchJobRequest(job_id=job.id))
    elif state == "completed":
        job = (await stub.ProcessNext(batch_pb2.ProcessNextRequest(job_id=job.id))).job
    elif state == "failed":
        await fetch(dsn, "UPDATE prompt_templates SET active = false WHERE arc_key = 'crisis_to_referral'")
        try:
            job = (await stub.ProcessNext(batch_pb2.ProcessNextRequest(job_id=job.id))).job
        finally:
            await fetch(dsn, "UPDATE prompt_templates SET active = true WHERE arc_key = 'crisis_to_referral'")
    elif state in {"running", "stopping"}:
        await fetch(
            dsn,
            """
            WITH leased AS (
                UPDATE batch_items SET status = 'processing', attempts = 1, lease_owner = 'bad-input-ghost-worker',
                       lease_expires_at = now() + interval '1 day', started_at = now()
                WHERE batch_job_id = $1 RETURNING id)
            UPDATE batch_jobs SET state = 'running', started_at = now(), updated_at = now(),
                   queued_items = queued_items - (SELECT count(*) FROM leased),
                   processing_items = processing_items + (SELECT count(*) FROM leased)
            WHERE id = $1
            """,
            uuid.UUID(job.id),
        )
        if state == "stopping":
            job = await stub.CancelBatchJob(batch_pb2.CancelBatchJobRequest(job_id=job.id))
    job = await stub.GetBatchJob(batch_pb2.GetBatchJobRequest(job_id=job.id))
    expected = batch_pb2.BatchJobState.Value(f"BATCH_JOB_STATE_{state.upper()}")
    assert job.state == expected, f"setup made a {batch_pb2.BatchJobState.Name(job.state)} job, not {state}"
    made: batch_pb2.BatchJob = job
    return made


async def items_of(services: Services, job_id: str) -> list[batch_pb2.BatchItem]:
    """All items of a job."""
    response = await services.batch_stub.ListBatchItems(batch_pb2.ListBatchItemsRequest(job_id=job_id))
    return list(response.items)


async def build_world(services: Services, dsn: str, data_dir: Path, tally: s.Tally) -> World:
    """Jobs in every state, their items, stored conversations and real page tokens, as placeholder values."""
    known: dict[str, str] = {}
    for state in s.JOB_STATES:
        job = await make_job(services, dsn, state, items=3)
        known[f"@job:{state}"] = job.id
        for item in await items_of(services, job.id):
            known.setdefault(f"@item:{s.ITEM_STATES[item.state - 1]}", item.id)
    assert set(s.ITEM_PLACEHOLDERS) - {"@item:processing"} <= set(known), known
    generation = services.generation_stub
    stored = []
    for n in range(2):
        stored.append(
            await generation.GenerateConversation(
                generation_pb2.GenerateConversationRequest(
                    parameters=common_pb2.GenerationParameters(
                        persona_id=s.SEED_PERSONA,
                        emotional_arc_id=s.SEED_ARC,
                        training_topic_id=s.TOPIC_IDS[n],
                        tier=common_pb2.TIER_TEMPLATE,
                    ),
                    request_id=f"bad-input-world-{n}",
                )
            )
        )
    known["@conversation:pk"] = stored[0].pk
    known["@conversation:business_key"] = stored[0].business_key
    catalog = services.catalog_stub
    batch = services.batch_stub
    tokens = {
        "personas": (await catalog.ListPersonas(catalog_pb2.ListPersonasRequest(page_size=1))).next_page_token,
        "arcs": (await catalog.ListEmotionalArcs(catalog_pb2.ListEmotionalArcsRequest(page_size=1))).next_page_token,
        "topics": (
            await catalog.ListTrainingTopics(catalog_pb2.ListTrainingTopicsRequest(page_size=1))
        ).next_page_token,
        "templates": (await catalog.ListTemplates(catalog_pb2.ListTemplatesRequest(page_size=1))).next_page_token,
        "conversations": (
            await generation.ListConversations(generation_pb2.ListConversationsRequest(page_size=1))
        ).next_page_token,
        "jobs": (await batch.ListBatchJobs(batch_pb2.ListBatchJobsRequest(page_size=1))).next_page_token,
        "items": (
            await batch.ListBatchItems(batch_pb2.ListBatchItemsRequest(job_id=known["@job:queued"], page_size=1))
        ).next_page_token,
    }
    for kind, token in tokens.items():
        assert token, f"no second page of {kind}"
        known[f"@token:{kind}"] = token
    return World(services, dsn, data_dir, known, tally)


def print_report(request: pytest.FixtureRequest, text: str) -> None:
    """Prints to the terminal past pytest's output capture (the tally is meant to be read and quoted)."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    if capture is None or reporter is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.ensure_newline()
        reporter.write_line(text)


async def assert_healthy(world: World) -> None:
    """Both services answer SERVING to grpc.health.v1 and serve a valid request of each service."""
    await assert_serving(world.services)
    personas = await world.services.catalog_stub.ListPersonas(catalog_pb2.ListPersonasRequest(), timeout=10)
    assert len(personas.personas) == len(s.PERSONA_IDS)
    if "@job:queued" in world.known:
        job_id = world.known["@job:queued"]
        job = await world.services.batch_stub.GetBatchJob(batch_pb2.GetBatchJobRequest(job_id=job_id), timeout=10)
        assert job.id == job_id
    if "@conversation:pk" in world.known:
        stored = await world.services.generation_stub.GetConversation(
            generation_pb2.GetConversationRequest(pk=world.known["@conversation:pk"]), timeout=10
        )
        assert stored.request_id == "bad-input-world-0"


# --- sending ----------------------------------------------------------------------------------------------------


async def send(world: World, rpc: Rpc, request: Message) -> s.Answer:
    """Sends one request; a server stream is read to its first message (or error) and then cancelled."""
    method = getattr(world.stub(rpc.service), rpc.name)
    try:
        if rpc.streaming:
            call = method(request, timeout=CALL_TIMEOUT)
            try:
                first = await call.read()
            finally:
                call.cancel()
            return s.Answer(OK, response=first)
        return s.Answer(OK, response=await method(request, timeout=CALL_TIMEOUT))
    except grpc.aio.AioRpcError as error:
        return s.Answer.of_error(error)
