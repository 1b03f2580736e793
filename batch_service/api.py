"""The gRPC edge of the batch service: parse requests, run transitions, convert results."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

from batch_service import converters, transitions
from batch_service.domain import JobRow, JobState, job_not_found
from batch_service.engine import BatchEngine
from batch_service.event_feed import JobFeeds
from batch_service.job_log import LogUploader, render
from batch_service.request_parsing import (
    BatchLimits,
    parse_create_job,
    parse_list_items,
    parse_list_jobs,
    parse_retry,
)
from batch_service.store import items, jobs
from batch_service.watch import watch_job
from convgen.catalog import repository as catalog
from convgen.catalog.models import GenerationParameters, Tier
from convgen.catalog.selection import select_template
from convgen.db.database import Connection, Database
from convgen.errors import FailedPrecondition, InvalidArgument, NotFound
from convgen.logging_setup import log_context
from convgen.paging import encode_token, fit_page
from convgen.rpc.convert import blob_location
from convgen.rpc.server import Context
from convgen.v1 import batch_pb2, batch_pb2_grpc
from convgen.validation import require_uuid

# Room kept in a GetBatchJobLog response for everything but the text.
LOG_RESPONSE_HEADROOM = 64 * 1024


class BatchServicer(batch_pb2_grpc.BatchServiceServicer):
    """Every BatchService RPC."""

    def __init__(
        self,
        db: Database,
        engine: BatchEngine,
        feeds: JobFeeds,
        logs: LogUploader,
        limits: BatchLimits,
    ) -> None:
        self._db = db
        self._engine = engine
        self._feeds = feeds
        self._logs = logs
        self._limits = limits

    def _job(self, job: JobRow) -> batch_pb2.BatchJob:
        return converters.batch_job(job, self._logs.locate(job.id))

    async def CreateBatchJob(self, request: batch_pb2.CreateBatchJobRequest, context: Context) -> batch_pb2.BatchJob:
        creation = parse_create_job(request, self._limits)
        await self._check_references(creation.parameters)
        job, created = await transitions.create_job(self._db, creation.job, creation.parameters)
        if created and job.state is JobState.RUNNING:
            self._engine.wake()
        return self._job(job)

    async def _check_references(self, parameters: list[GenerationParameters]) -> None:
        """Every referenced id must exist (NOT_FOUND lists them all); auto-selection must find a template."""
        personas = sorted({p.persona_id for p in parameters})
        arcs = sorted({p.emotional_arc_id for p in parameters})
        topics = sorted({p.training_topic_id for p in parameters})
        templates = sorted({p.template_id for p in parameters if not p.auto_template})
        auto = {(p.emotional_arc_id, p.tier) for p in parameters if p.auto_template}
        async with self._db.connection() as conn:
            missing = await catalog.missing_ids(conn, personas, arcs, topics, templates)
            problems = [f"{kind} {', '.join(str(i) for i in ids)}" for kind, ids in missing.items() if ids]
            if problems:
                raise NotFound(f"unknown ids: {'; '.join(problems)}", reason="CATALOG_ENTRY_NOT_FOUND")
            unserved = await _arcs_without_template(conn, auto) if auto else []
        if unserved:
            raise FailedPrecondition(
                f"no active prompt template serves arc(s) {', '.join(unserved)}: template auto-selection would fail "
                "for their items; load templates (convgen catalog load) or pass a template_id",
                reason="NO_TEMPLATE_FOR_ARC",
            )

    async def _existing_job(self, field: str, value: str) -> JobRow:
        job_id = require_uuid(field, value)
        async with self._db.connection() as conn:
            job = await jobs.get(conn, job_id)
        if job is None:
            raise job_not_found(job_id)
        return job

    async def GetBatchJob(self, request: batch_pb2.GetBatchJobRequest, context: Context) -> batch_pb2.BatchJob:
        return self._job(await self._existing_job("job_id", request.job_id))

    async def ListBatchJobs(
        self, request: batch_pb2.ListBatchJobsRequest, context: Context
    ) -> batch_pb2.ListBatchJobsResponse:
        page = parse_list_jobs(request, self._limits.max_page_size)
        async with self._db.connection() as conn:
            rows = await jobs.list_page(conn, state=page.state, after=page.after, limit=page.size + 1)
        messages, kept = fit_page([self._job(j) for j in rows[: page.size]], self._limits.max_message_bytes)
        token = ""
        if len(rows) > kept:
            last = rows[kept - 1]
            token = encode_token({"t": last.created_at.isoformat(), "id": str(last.id)}, page.filters)
        return batch_pb2.ListBatchJobsResponse(batch_jobs=messages, next_page_token=token)

    async def ListBatchItems(
        self, request: batch_pb2.ListBatchItemsRequest, context: Context
    ) -> batch_pb2.ListBatchItemsResponse:
        page = parse_list_items(request, self._limits.max_page_size)
        await self._existing_job("job_id", request.job_id)
        after = page.after_position(request.page_token)
        async with self._db.connection() as conn:
            rows = await items.list_page(
                conn, page.job_id, status=page.state, after_position=after, limit=page.size + 1
            )
        messages, kept = fit_page([converters.batch_item(i) for i in rows[: page.size]], self._limits.max_message_bytes)
        token = encode_token({"p": rows[kept - 1].position}, page.filters) if len(rows) > kept else ""
        return batch_pb2.ListBatchItemsResponse(items=messages, next_page_token=token)

    async def WatchBatchJob(
        self, request: batch_pb2.WatchBatchJobRequest, context: Context
    ) -> AsyncIterator[batch_pb2.BatchJobEvent]:
        job_id = require_uuid("job_id", request.job_id)
        after = request.after_sequence if request.HasField("after_sequence") else None
        if after is not None and after < 0:
            raise InvalidArgument.for_field("after_sequence", f"must not be negative (got {after})")
        with log_context(job_id=str(job_id)):
            async with contextlib.aclosing(
                watch_job(self._db, self._feeds, self._logs.locate, job_id, after)
            ) as stream:
                async for event in stream:
                    yield event

    async def ProcessNext(
        self, request: batch_pb2.ProcessNextRequest, context: Context
    ) -> batch_pb2.ProcessNextResponse:
        job_id = require_uuid("job_id", request.job_id)
        with log_context(job_id=str(job_id)):
            job, processed = await self._engine.process_next(job_id)
        response = batch_pb2.ProcessNextResponse(
            job=self._job(job), remaining_items=job.counters.remaining, job_finished=job.state.terminal
        )
        if processed is not None:
            response.item.CopyFrom(converters.batch_item(processed.item))
        return response

    async def PauseBatchJob(self, request: batch_pb2.PauseBatchJobRequest, context: Context) -> batch_pb2.BatchJob:
        return self._job(await transitions.pause(self._db, require_uuid("job_id", request.job_id)))

    async def ResumeBatchJob(self, request: batch_pb2.ResumeBatchJobRequest, context: Context) -> batch_pb2.BatchJob:
        job = await transitions.resume(self._db, require_uuid("job_id", request.job_id))
        self._engine.wake()
        return self._job(job)

    async def CancelBatchJob(self, request: batch_pb2.CancelBatchJobRequest, context: Context) -> batch_pb2.BatchJob:
        result = await transitions.cancel(self._db, require_uuid("job_id", request.job_id))
        if result.became_terminal:
            self._logs.job_ended()
        return self._job(result.job)

    async def RetryFailedItems(
        self, request: batch_pb2.RetryFailedItemsRequest, context: Context
    ) -> batch_pb2.RetryFailedItemsResponse:
        retry = parse_retry(request)
        result = await transitions.retry_failed(self._db, retry.job_id, retry.item_ids or None)
        self._engine.wake()
        return batch_pb2.RetryFailedItemsResponse(job=self._job(result.job), requeued_items=len(result.items))

    async def GetBatchJobLog(self, request: batch_pb2.GetBatchJobLogRequest, context: Context) -> batch_pb2.BatchJobLog:
        job = await self._existing_job("job_id", request.job_id)
        text, lines = await render(self._db, job.id)
        limit = self._limits.max_message_bytes - LOG_RESPONSE_HEADROOM
        location = self._logs.locate(job.id)
        if len(text.encode()) > limit:
            # Too big for one message: keep the newest lines and say where the whole log is.
            tail = text.encode()[-limit:].decode(errors="ignore")
            tail = tail[tail.find("\n") + 1 :]
            text = f"[log truncated to its last {len(tail.splitlines())} of {lines} lines; full log: {location.uri}]\n"
            text += tail
        return batch_pb2.BatchJobLog(
            job_id=str(job.id),
            text=text,
            blob=blob_location(location),
            uploaded=job.log_uploaded,
            line_count=lines,
        )


async def _arcs_without_template(conn: Connection, auto: set[tuple[uuid.UUID, Tier]]) -> list[str]:
    """arc_keys of the (arc, tier) pairs for which template auto-selection would find nothing."""
    arc_keys = await catalog.arc_keys(conn, sorted({arc for arc, _ in auto}))
    templates = await catalog.all_templates(conn)
    return sorted({arc_keys[arc] for arc, tier in auto if select_template(templates, arc_keys[arc], tier) is None})
