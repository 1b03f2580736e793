"""The gRPC edge of DatasetService: check requests before writing anything, read and list exports, stream files."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc

from batch_service.datasets import converters
from batch_service.datasets.domain import ExportRow, ExportSpec, ExportState, Selection
from batch_service.datasets.request_parsing import (
    parse_create_export,
    parse_get_export,
    parse_list_exports,
    parse_read_file,
)
from batch_service.datasets.runner import ExportRunner
from batch_service.domain import JobState
from batch_service.store import export_selection, exports
from convgen.blobs import BlobStore
from convgen.catalog import repository as catalog
from convgen.db.database import Connection, Database
from convgen.errors import FailedPrecondition, NotFound, OutOfRange
from convgen.paging import encode_token, fit_page
from convgen.v1 import dataset_pb2, dataset_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]
CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class DatasetLimits:
    """Bounds of DatasetService requests, from the settings."""

    max_page_size: int
    max_message_bytes: int


class DatasetServicer(dataset_pb2_grpc.DatasetServiceServicer):
    """Every DatasetService RPC."""

    def __init__(self, db: Database, blobs: BlobStore, runner: ExportRunner, limits: DatasetLimits) -> None:
        self._db = db
        self._blobs = blobs
        self._runner = runner
        self._limits = limits

    async def CreateExport(self, request: dataset_pb2.CreateExportRequest, context: Context) -> dataset_pb2.Export:
        creation = parse_create_export(request)
        request_id, spec = creation.request_id, creation.spec
        async with self._db.connection() as conn:
            if request_id is not None:
                existing = await exports.get_by_request_id(conn, request_id)
                if existing is not None:
                    return converters.export(existing, full=True)
            await _check_references(conn, spec)
            selected = await export_selection.count_selected(conn, spec.selection)
            if selected == 0:
                raise await _empty_selection(conn, spec)
            created = await exports.insert(conn, request_id=request_id, spec=spec, selected=selected)
            if created is None:
                assert request_id is not None
                # Another call with the same request_id won the race: its export is the answer.
                created = await exports.get_by_request_id(conn, request_id)
                assert created is not None
        self._runner.wake()
        return converters.export(created, full=True)

    async def _existing(self, export_id: uuid.UUID) -> ExportRow:
        async with self._db.connection() as conn:
            row = await exports.get(conn, export_id)
        if row is None:
            raise NotFound(f"export {export_id} does not exist", reason="EXPORT_NOT_FOUND")
        return row

    async def GetExport(self, request: dataset_pb2.GetExportRequest, context: Context) -> dataset_pb2.Export:
        export_id, full = parse_get_export(request)
        return converters.export(await self._existing(export_id), full=full)

    async def ListExports(
        self, request: dataset_pb2.ListExportsRequest, context: Context
    ) -> dataset_pb2.ListExportsResponse:
        page = parse_list_exports(request, self._limits.max_page_size)
        size, full, after, filters = page.size, page.full, page.after, page.filters
        async with self._db.connection() as conn:
            rows = await exports.list_page(conn, after=after, limit=size + 1)
        messages, kept = fit_page(
            [converters.export(r, full=full) for r in rows[:size]], self._limits.max_message_bytes
        )
        token = ""
        if len(rows) > kept:
            last = rows[kept - 1]
            token = encode_token({"t": last.created_at.isoformat(), "id": str(last.id)}, filters)
        return dataset_pb2.ListExportsResponse(exports=messages, next_page_token=token)

    async def ReadExportFile(
        self, request: dataset_pb2.ReadExportFileRequest, context: Context
    ) -> AsyncIterator[dataset_pb2.ExportFileChunk]:
        read = parse_read_file(request)
        row = await self._existing(read.export_id)
        if row.state is not ExportState.SUCCEEDED:
            raise FailedPrecondition(
                f"export {row.id} is {row.state.value}; its files can be read once it has succeeded",
                reason="EXPORT_NOT_SUCCEEDED",
            )
        found = next((f for f in row.files if f.name == read.name), None)
        if found is None:
            raise NotFound(
                f"export {row.id} has no file {read.name}"
                + (" (it is a report-only export)" if row.spec.report_only else ""),
                reason="EXPORT_FILE_NOT_FOUND",
            )
        if read.offset > found.bytes:
            raise OutOfRange(f"offset {read.offset} is past the end of {found.name} ({found.bytes} bytes)")
        offset = read.offset
        async for chunk in self._blobs.read_chunks(found.bucket, found.key, offset=offset, chunk_size=CHUNK_BYTES):
            yield dataset_pb2.ExportFileChunk(data=chunk, offset=offset, total_bytes=found.bytes)
            offset += len(chunk)


async def _check_references(conn: Connection, spec: ExportSpec) -> None:
    """Every job must exist (NOT_FOUND lists all) and be terminal unless include_running; filter ids must exist."""
    selection = spec.selection
    states = await export_selection.job_states(conn, selection.job_ids)
    unknown = [str(j) for j in selection.job_ids if j not in states]
    if unknown:
        raise NotFound(f"unknown batch job ids: {', '.join(unknown)}", reason="BATCH_JOB_NOT_FOUND")
    running = [f"{j} ({states[j]})" for j in selection.job_ids if not JobState(states[j]).terminal]
    if running and not selection.include_running:
        raise FailedPrecondition(
            f"batch jobs still running: {', '.join(running)}; wait for them to end, or set "
            "selection.include_running to export their completed items so far",
            reason="JOBS_NOT_FINISHED",
        )
    missing = await catalog.missing_ids(
        conn, selection.persona_ids, selection.emotional_arc_ids, selection.training_topic_ids, []
    )
    problems = [f"{kind} {', '.join(str(i) for i in ids)}" for kind, ids in missing.items() if ids]
    if problems:
        raise NotFound(f"unknown filter ids: {'; '.join(problems)}", reason="CATALOG_ENTRY_NOT_FOUND")


async def _empty_selection(conn: Connection, spec: ExportSpec) -> FailedPrecondition:
    """Why the selection matches nothing: the jobs have no completed item, or the filters exclude them all."""
    unfiltered = Selection(job_ids=spec.selection.job_ids)
    completed = await export_selection.count_selected(conn, unfiltered)
    if completed == 0:
        reason = "the jobs have no completed item with a stored conversation"
    else:
        reason = f"the filters (tiers, ids, created window) exclude all {completed} conversations of the jobs"
    return FailedPrecondition(f"the selection matches no conversation: {reason}", reason="EMPTY_SELECTION")
