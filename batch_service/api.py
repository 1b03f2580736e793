"""The gRPC edge of the batch service: validate requests, run transitions, convert results."""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc

from batch_service import converters, transitions
from batch_service.domain import ItemParameters, JobState
from batch_service.engine import BatchEngine
from batch_service.event_feed import JobFeeds
from batch_service.job_log import LogUploader, render
from batch_service.store import items, jobs
from batch_service.store.jobs import NewJob
from batch_service.watch import watch_job
from convgen.catalog import repository as catalog
from convgen.catalog.models import Tier
from convgen.db.database import Database
from convgen.errors import FailedPrecondition, InvalidArgument, NotFound
from convgen.logging_setup import log_context
from convgen.paging import decode_token, encode_token, fit_page, position_int, position_timestamp, position_uuid
from convgen.rpc.convert import blob_location, tier_from_proto
from convgen.v1 import batch_pb2, batch_pb2_grpc, common_pb2
from convgen.validation import (
    MAX_NAME_LENGTH,
    NIL_UUID,
    FieldChecks,
    check_request_id,
    check_text,
    optional_uuid,
    page_size,
    require_uuid,
)

Context = grpc.aio.ServicerContext[Any, Any]
DEFAULT_JOB_PAGE = 50
DEFAULT_ITEM_PAGE = 100
MAX_ATTEMPTS_LIMIT = 20
# Room kept in a GetBatchJobLog response for everything but the text.
LOG_RESPONSE_HEADROOM = 64 * 1024


@dataclass(frozen=True)
class BatchLimits:
    """Bounds and defaults of job requests, from the settings."""

    max_items: int
    default_concurrency: int
    max_concurrency: int
    default_max_attempts: int
    max_page_size: int
    max_message_bytes: int


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

    def _job(self, job: Any) -> batch_pb2.BatchJob:
        return converters.batch_job(job, self._logs.locate(job.id))

    async def CreateBatchJob(self, request: batch_pb2.CreateBatchJobRequest, context: Context) -> batch_pb2.BatchJob:
        checks = FieldChecks()
        name = checks.check(check_text, "name", request.name, max_length=MAX_NAME_LENGTH)
        request_id = checks.check(check_request_id, "request_id", request.request_id)
        created_by = checks.check(optional_uuid, "created_by", request.created_by)
        concurrency = self._bounded(
            checks, "concurrency", request.concurrency, self._limits.default_concurrency, self._limits.max_concurrency
        )
        max_attempts = self._bounded(
            checks, "max_attempts", request.max_attempts, self._limits.default_max_attempts, MAX_ATTEMPTS_LIMIT
        )
        policy = checks.check(converters.error_policy, "error_policy", request.error_policy)
        parameters = self._selection(checks, request)
        checks.raise_if_any()
        assert parameters is not None
        assert policy is not None
        await self._check_references(parameters)
        auto_start = request.auto_start if request.HasField("auto_start") else True
        new = NewJob(
            name=name or f"batch {datetime.now(UTC).strftime('%Y-%m-%d %H:%M:%S UTC')}",
            request_id=request_id or None,
            created_by=created_by or NIL_UUID,
            state=JobState.RUNNING if auto_start else JobState.QUEUED,
            error_policy=policy,
            concurrency=concurrency,
            max_attempts=max_attempts,
            total_items=len(parameters),
        )
        job, created = await transitions.create_job(self._db, new, parameters)
        if created and job.state is JobState.RUNNING:
            self._engine.wake()
        return self._job(job)

    @staticmethod
    def _bounded(checks: FieldChecks, field: str, value: int, default: int, maximum: int) -> int:
        if value == 0:
            return default
        if not 1 <= value <= maximum:
            checks.add(field, f"must be between 1 and {maximum} (got {value}); 0 means the default {default}")
        return value

    def _selection(self, checks: FieldChecks, request: batch_pb2.CreateBatchJobRequest) -> list[ItemParameters] | None:
        which = request.WhichOneof("selection")
        if which == "combination":
            return self._combination(checks, request.combination)
        if which == "parameter_list":
            return self._parameter_list(checks, request.parameter_list.items)
        checks.add("selection", "set combination or parameter_list")
        return None

    def _combination(self, checks: FieldChecks, c: batch_pb2.Combination) -> list[ItemParameters] | None:
        lists = {
            "combination.persona_ids": c.persona_ids,
            "combination.emotional_arc_ids": c.emotional_arc_ids,
            "combination.training_topic_ids": c.training_topic_ids,
        }
        parsed: dict[str, list[uuid.UUID]] = {}
        for field, values in lists.items():
            if not values:
                checks.add(field, "is empty: select at least one")
                continue
            if len(values) > self._limits.max_items:
                checks.add(field, f"has {len(values)} ids; at most {self._limits.max_items} items fit in a job")
                continue
            ids = [checks.check(require_uuid, f"{field}[{i}]", v) for i, v in enumerate(values)]
            valid = [i for i in ids if i is not None]
            duplicates = sorted(str(i) for i, n in Counter(valid).items() if n > 1)
            if duplicates:
                shown = ", ".join(duplicates[:5]) + (f" and {len(duplicates) - 5} more" if len(duplicates) > 5 else "")
                checks.add(field, f"lists {shown} more than once")
            parsed[field] = valid
        tier = checks.check(tier_from_proto, "combination.tier", c.tier, required=True)
        template = checks.check(optional_uuid, "combination.template_id", c.template_id)
        count = len(c.persona_ids) * len(c.emotional_arc_ids) * len(c.training_topic_ids)
        if count > self._limits.max_items:
            checks.add("combination", f"selects {count} items; the limit is {self._limits.max_items} (BATCH_MAX_ITEMS)")
        if checks.violations or tier is None:
            return None
        return [
            ItemParameters(persona, arc, topic, tier, template or NIL_UUID)
            for persona, arc, topic in itertools.product(
                parsed["combination.persona_ids"],
                parsed["combination.emotional_arc_ids"],
                parsed["combination.training_topic_ids"],
            )
        ]

    def _parameter_list(
        self, checks: FieldChecks, entries: Sequence[common_pb2.GenerationParameters]
    ) -> list[ItemParameters] | None:
        if not entries:
            checks.add("parameter_list.items", "is empty: list at least one parameter set")
            return None
        if len(entries) > self._limits.max_items:
            checks.add(
                "parameter_list.items",
                f"has {len(entries)} entries; the limit is {self._limits.max_items} (BATCH_MAX_ITEMS)",
            )
            return None
        result: list[ItemParameters] = []
        for index, entry in enumerate(entries):
            prefix = f"parameter_list.items[{index}]"
            persona = checks.check(require_uuid, f"{prefix}.persona_id", entry.persona_id)
            arc = checks.check(require_uuid, f"{prefix}.emotional_arc_id", entry.emotional_arc_id)
            topic = checks.check(require_uuid, f"{prefix}.training_topic_id", entry.training_topic_id)
            tier = checks.check(tier_from_proto, f"{prefix}.tier", entry.tier, required=True)
            template = checks.check(optional_uuid, f"{prefix}.template_id", entry.template_id)
            if len(checks.violations) > 20:
                break
            if persona and arc and topic and isinstance(tier, Tier):
                result.append(ItemParameters(persona, arc, topic, tier, template or NIL_UUID))
        return result

    async def _check_references(self, parameters: list[ItemParameters]) -> None:
        """Every referenced id must exist (NOT_FOUND lists them all); auto-selected arcs need a template."""
        personas = sorted({p.persona_id for p in parameters})
        arcs = sorted({p.emotional_arc_id for p in parameters})
        topics = sorted({p.training_topic_id for p in parameters})
        templates = sorted({p.template_id for p in parameters if p.template_id != NIL_UUID})
        auto_arcs = sorted({p.emotional_arc_id for p in parameters if p.template_id == NIL_UUID})
        async with self._db.connection() as conn:
            missing = await catalog.missing_ids(conn, personas, arcs, topics, templates)
            unserved = await catalog.arcs_without_templates(conn, auto_arcs) if auto_arcs else []
        problems = [f"{kind} {', '.join(str(i) for i in ids)}" for kind, ids in missing.items() if ids]
        if problems:
            raise NotFound(f"unknown ids: {'; '.join(problems)}", reason="CATALOG_ENTRY_NOT_FOUND")
        if unserved:
            raise FailedPrecondition(
                f"no active prompt template serves arc(s) {', '.join(unserved)}: template auto-selection would fail "
                "for their items; load templates (convgen catalog load) or pass a template_id",
                reason="NO_TEMPLATE_FOR_ARC",
            )

    async def _existing_job(self, field: str, value: str) -> Any:
        job_id = require_uuid(field, value)
        async with self._db.connection() as conn:
            job = await jobs.get(conn, job_id)
        if job is None:
            raise NotFound(f"batch job {job_id} does not exist", reason="BATCH_JOB_NOT_FOUND")
        return job

    async def GetBatchJob(self, request: batch_pb2.GetBatchJobRequest, context: Context) -> batch_pb2.BatchJob:
        return self._job(await self._existing_job("job_id", request.job_id))

    async def ListBatchJobs(
        self, request: batch_pb2.ListBatchJobsRequest, context: Context
    ) -> batch_pb2.ListBatchJobsResponse:
        checks = FieldChecks()
        size = checks.check(
            page_size, "page_size", request.page_size, default=DEFAULT_JOB_PAGE, maximum=self._limits.max_page_size
        )
        state = checks.check(converters.job_state_filter, "state", request.state)
        checks.raise_if_any()
        assert size is not None
        filters = {"state": state.value if state else ""}
        position = decode_token("page_token", request.page_token, filters)
        after = None
        if position is not None:
            after = (
                position_timestamp("page_token", position, "t"),
                position_uuid("page_token", position, "id"),
            )
        async with self._db.connection() as conn:
            rows = await jobs.list_page(conn, state=state, after=after, limit=size + 1)
        messages, kept = fit_page([self._job(j) for j in rows[:size]], self._limits.max_message_bytes)
        token = ""
        if len(rows) > kept:
            last = rows[kept - 1]
            token = encode_token({"t": last.created_at.isoformat(), "id": str(last.id)}, filters)
        return batch_pb2.ListBatchJobsResponse(batch_jobs=messages, next_page_token=token)

    async def ListBatchItems(
        self, request: batch_pb2.ListBatchItemsRequest, context: Context
    ) -> batch_pb2.ListBatchItemsResponse:
        checks = FieldChecks()
        job_id = checks.check(require_uuid, "job_id", request.job_id)
        size = checks.check(
            page_size, "page_size", request.page_size, default=DEFAULT_ITEM_PAGE, maximum=self._limits.max_page_size
        )
        state = checks.check(converters.item_state_filter, "state", request.state)
        checks.raise_if_any()
        assert size is not None
        assert job_id is not None
        await self._existing_job("job_id", request.job_id)
        filters = {"job": str(job_id), "state": state.value if state else ""}
        position = decode_token("page_token", request.page_token, filters)
        after = position_int("page_token", position, "p") if position is not None else -1
        async with self._db.connection() as conn:
            rows = await items.list_page(conn, job_id, status=state, after_position=after, limit=size + 1)
        messages, kept = fit_page([converters.batch_item(i) for i in rows[:size]], self._limits.max_message_bytes)
        token = encode_token({"p": rows[kept - 1].position}, filters) if len(rows) > kept else ""
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
        checks = FieldChecks()
        job_id = checks.check(require_uuid, "job_id", request.job_id)
        item_ids = [checks.check(require_uuid, f"item_ids[{i}]", v) for i, v in enumerate(request.item_ids)]
        checks.raise_if_any()
        assert job_id is not None
        unique = list(dict.fromkeys(i for i in item_ids if i is not None))
        result = await transitions.retry_failed(self._db, job_id, unique or None)
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
