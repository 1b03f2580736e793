"""DatasetService requests parsed into typed values at the edge; a request's bad fields are all reported at once."""

from __future__ import annotations

import math
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from batch_service.datasets.domain import (
    DEFAULT_NEAR_DUPLICATE_THRESHOLD,
    MAX_EVAL_FRACTION,
    ExportFormat,
    ExportSpec,
    GroupBy,
    Selection,
)
from batch_service.datasets.files import FILE_NAMES
from batch_service.datasets.formats import DEFAULT_SYSTEM_PROMPT
from batch_service.datasets.report import GROUP_BY_TO_PROTO
from convgen.catalog.models import Tier
from convgen.errors import InvalidArgument
from convgen.paging import decode_token, position_timestamp, position_uuid
from convgen.rpc.convert import tier_from_proto
from convgen.v1 import dataset_pb2
from convgen.validation import attempt, check_request_id, check_text, page_size, require_uuid, valid, valid_list

MAX_JOB_IDS = 100
MAX_FILTER_IDS = 1000
MAX_SYSTEM_PROMPT_CHARS = 100_000
DEFAULT_EXPORT_PAGE = 50

FORMAT_TO_PROTO: dict[ExportFormat, dataset_pb2.ExportFormat.ValueType] = {
    ExportFormat.CHAT_MESSAGES: dataset_pb2.EXPORT_FORMAT_CHAT_MESSAGES,
    ExportFormat.SHAREGPT: dataset_pb2.EXPORT_FORMAT_SHAREGPT,
    ExportFormat.BEDROCK_CLAUDE: dataset_pb2.EXPORT_FORMAT_BEDROCK_CLAUDE,
    ExportFormat.CONVGEN: dataset_pb2.EXPORT_FORMAT_CONVGEN,
}
FORMAT_FROM_PROTO: dict[int, ExportFormat] = {int(v): k for k, v in FORMAT_TO_PROTO.items()}
GROUP_BY_FROM_PROTO: dict[int, GroupBy] = {int(v): k for k, v in GROUP_BY_TO_PROTO.items()}
# Timestamps PostgreSQL and Python can both hold.
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(9999, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ExportCreation:
    """A valid CreateExport request: its idempotency key (or None) and the spec to store."""

    request_id: str | None
    spec: ExportSpec


@dataclass(frozen=True)
class ExportPage:
    """A valid ListExports request."""

    size: int
    full: bool
    after: tuple[datetime, uuid.UUID] | None
    filters: dict[str, str]


@dataclass(frozen=True)
class FileRead:
    """A valid ReadExportFile request."""

    export_id: uuid.UUID
    name: str
    offset: int


def parse_create_export(request: dataset_pb2.CreateExportRequest) -> ExportCreation:
    """The idempotency key and the spec; InvalidArgument names every bad field."""
    quality = request.quality_gate
    request_id, selection, export_format, prompt, fraction, group_by, threshold = valid(
        attempt(check_request_id, "request_id", request.request_id),
        attempt(_selection, request.selection),
        attempt(_format, "format", request.format),
        attempt(check_text, "system_prompt", request.system_prompt, max_length=MAX_SYSTEM_PROMPT_CHARS),
        attempt(_eval_fraction, "split.eval_fraction", request.split.eval_fraction),
        attempt(_group_by, "split.group_by", request.split.group_by),
        attempt(
            _threshold,
            "quality_gate.near_duplicate_threshold",
            quality.near_duplicate_threshold if quality.HasField("near_duplicate_threshold") else None,
        ),
    )
    spec = ExportSpec(
        selection=selection,
        format=export_format,
        system_prompt=prompt or DEFAULT_SYSTEM_PROMPT,
        eval_fraction=fraction,
        group_by=group_by,
        seed=request.split.seed,
        drop_near_duplicates=quality.drop_near_duplicates,
        near_duplicate_threshold=threshold,
        report_only=request.report_only,
    )
    return ExportCreation(request_id or None, spec)


def parse_get_export(request: dataset_pb2.GetExportRequest) -> tuple[uuid.UUID, bool]:
    """The export id and whether the FULL view is asked for (the default)."""
    return valid(
        attempt(require_uuid, "export_id", request.export_id),
        attempt(export_view, "view", request.view, default=dataset_pb2.EXPORT_VIEW_FULL),
    )


def parse_list_exports(request: dataset_pb2.ListExportsRequest, max_page_size: int) -> ExportPage:
    """Page size, view (BASIC by default) and the position the page token holds."""
    size, full = valid(
        attempt(page_size, "page_size", request.page_size, default=DEFAULT_EXPORT_PAGE, maximum=max_page_size),
        attempt(export_view, "view", request.view, default=dataset_pb2.EXPORT_VIEW_BASIC),
    )
    filters = {"view": "full" if full else "basic"}
    position = decode_token("page_token", request.page_token, filters)
    after = None
    if position is not None:
        after = (position_timestamp("page_token", position, "t"), position_uuid("page_token", position, "id"))
    return ExportPage(size, full, after, filters)


def parse_read_file(request: dataset_pb2.ReadExportFileRequest) -> FileRead:
    """The export id, a known file name and a non-negative offset."""
    export_id, name, offset = valid(
        attempt(require_uuid, "export_id", request.export_id),
        attempt(_file_name, "name", request.name),
        attempt(_offset, "offset", request.offset),
    )
    return FileRead(export_id, name, offset)


def export_view(field: str, value: int, *, default: int) -> bool:
    """True for the FULL view; unspecified takes the RPC's default; unknown numbers are an error."""
    if value == dataset_pb2.EXPORT_VIEW_UNSPECIFIED:
        value = default
    if value not in (dataset_pb2.EXPORT_VIEW_BASIC, dataset_pb2.EXPORT_VIEW_FULL):
        raise InvalidArgument.for_field(field, f"{value} is not a known ExportView")
    return value == dataset_pb2.EXPORT_VIEW_FULL


def _file_name(field: str, value: str) -> str:
    if value not in FILE_NAMES:
        raise InvalidArgument.for_field(field, f"{value[:60]!r} is not an export file; one of {', '.join(FILE_NAMES)}")
    return value


def _offset(field: str, value: int) -> int:
    if value < 0:
        raise InvalidArgument.for_field(field, f"must not be negative (got {value})")
    return value


def _format(field: str, value: int) -> ExportFormat:
    if value == dataset_pb2.EXPORT_FORMAT_UNSPECIFIED:
        raise InvalidArgument.for_field(field, "is required (chat messages, ShareGPT, Bedrock Claude or convgen)")
    found = FORMAT_FROM_PROTO.get(value)
    if found is None:
        raise InvalidArgument.for_field(field, f"{value} is not a known ExportFormat")
    return found


def _eval_fraction(field: str, value: float) -> float:
    if not math.isfinite(value) or not 0.0 <= value <= MAX_EVAL_FRACTION:
        raise InvalidArgument.for_field(field, f"must be within [0, {MAX_EVAL_FRACTION}] (got {value})")
    return value


def _group_by(field: str, value: int) -> GroupBy:
    if value == dataset_pb2.SPLIT_GROUP_BY_UNSPECIFIED:
        return GroupBy.NONE
    found = GROUP_BY_FROM_PROTO.get(value)
    if found is None:
        raise InvalidArgument.for_field(field, f"{value} is not a known SplitGroupBy")
    return found


def _threshold(field: str, value: float | None) -> float:
    if value is None:
        return DEFAULT_NEAR_DUPLICATE_THRESHOLD
    if not math.isfinite(value) or not 0.0 < value <= 1.0:
        raise InvalidArgument.for_field(field, f"must be within (0, 1] (got {value})")
    return value


def _selection(s: dataset_pb2.ExportSelection) -> Selection:
    job_ids, tiers, persona_ids, arc_ids, topic_ids, after, before = valid(
        attempt(_job_ids, "selection.job_ids", s.job_ids),
        attempt(_tiers, "selection.tiers", s.tiers),
        attempt(_id_list, "selection.persona_ids", s.persona_ids, MAX_FILTER_IDS),
        attempt(_id_list, "selection.emotional_arc_ids", s.emotional_arc_ids, MAX_FILTER_IDS),
        attempt(_id_list, "selection.training_topic_ids", s.training_topic_ids, MAX_FILTER_IDS),
        attempt(_time, "selection.created_after", s.created_after if s.HasField("created_after") else None),
        attempt(_time, "selection.created_before", s.created_before if s.HasField("created_before") else None),
    )
    if after is not None and before is not None and after >= before:
        raise InvalidArgument.for_field("selection.created_before", "must be later than created_after")
    return Selection(
        job_ids=job_ids,
        tiers=tiers,
        persona_ids=persona_ids,
        emotional_arc_ids=arc_ids,
        training_topic_ids=topic_ids,
        created_after=after,
        created_before=before,
        include_running=s.include_running,
    )


def _job_ids(field: str, values: Sequence[str]) -> tuple[uuid.UUID, ...]:
    if not values:
        raise InvalidArgument.for_field(field, "is empty: name at least one batch job")
    return _id_list(field, values, MAX_JOB_IDS)


def _id_list(field: str, values: Sequence[str], limit: int) -> tuple[uuid.UUID, ...]:
    """UUIDs, at most limit of them, none twice."""
    if len(values) > limit:
        raise InvalidArgument.for_field(field, f"has {len(values)} ids; at most {limit} are accepted")
    results = [attempt(require_uuid, f"{field}[{i}]", v) for i, v in enumerate(values)]
    repeated = sorted(str(i) for i, n in Counter(r for r in results if isinstance(r, uuid.UUID)).items() if n > 1)
    if repeated:
        results.append(InvalidArgument.for_field(field, f"lists {', '.join(repeated[:5])} more than once"))
    return tuple(valid_list(results))


def _tiers(field: str, values: Sequence[int]) -> tuple[Tier, ...]:
    tiers = valid_list(attempt(tier_from_proto, f"{field}[{i}]", v) for i, v in enumerate(values))
    return tuple(dict.fromkeys(tiers))


def _time(field: str, value: timestamp_pb2.Timestamp | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = value.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument.for_field(field, "is not a representable time") from None
    if not _EARLIEST <= moment < _LATEST:
        raise InvalidArgument.for_field(field, f"must be between {_EARLIEST.date()} and {_LATEST.date()}")
    return moment
