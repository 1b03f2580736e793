"""Proto ↔ domain conversion for DatasetService: the request into an ExportSpec, an export row into Export."""

from __future__ import annotations

import math
import uuid
from collections import Counter
from datetime import UTC, datetime

from google.protobuf import json_format, timestamp_pb2

from batch_service.datasets.domain import (
    DEFAULT_NEAR_DUPLICATE_THRESHOLD,
    MAX_EVAL_FRACTION,
    ExportFormat,
    ExportRow,
    ExportSpec,
    ExportState,
    GroupBy,
    Selection,
)
from batch_service.datasets.formats import DEFAULT_SYSTEM_PROMPT
from batch_service.datasets.report import GROUP_BY_TO_PROTO
from convgen.catalog.models import Tier
from convgen.errors import InvalidArgument
from convgen.rpc.convert import TIER_TO_PROTO, tier_from_proto, timestamp
from convgen.v1 import common_pb2, dataset_pb2
from convgen.validation import FieldChecks, check_request_id, check_text, require_uuid

MAX_JOB_IDS = 100
MAX_FILTER_IDS = 1000
MAX_SYSTEM_PROMPT_CHARS = 100_000

FORMAT_TO_PROTO: dict[ExportFormat, dataset_pb2.ExportFormat.ValueType] = {
    ExportFormat.CHAT_MESSAGES: dataset_pb2.EXPORT_FORMAT_CHAT_MESSAGES,
    ExportFormat.SHAREGPT: dataset_pb2.EXPORT_FORMAT_SHAREGPT,
    ExportFormat.BEDROCK_CLAUDE: dataset_pb2.EXPORT_FORMAT_BEDROCK_CLAUDE,
    ExportFormat.CONVGEN: dataset_pb2.EXPORT_FORMAT_CONVGEN,
}
FORMAT_FROM_PROTO: dict[int, ExportFormat] = {int(v): k for k, v in FORMAT_TO_PROTO.items()}
GROUP_BY_FROM_PROTO: dict[int, GroupBy] = {int(v): k for k, v in GROUP_BY_TO_PROTO.items()}
STATE_TO_PROTO: dict[ExportState, dataset_pb2.ExportState.ValueType] = {
    ExportState.RUNNING: dataset_pb2.EXPORT_STATE_RUNNING,
    ExportState.SUCCEEDED: dataset_pb2.EXPORT_STATE_SUCCEEDED,
    ExportState.FAILED: dataset_pb2.EXPORT_STATE_FAILED,
}
# Timestamps PostgreSQL and Python can both hold.
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(9999, 1, 1, tzinfo=UTC)


def export_view(field: str, value: int, *, default: int) -> bool:
    """True for the FULL view; unspecified takes the RPC's default; unknown numbers are an error."""
    if value == dataset_pb2.EXPORT_VIEW_UNSPECIFIED:
        value = default
    if value not in (dataset_pb2.EXPORT_VIEW_BASIC, dataset_pb2.EXPORT_VIEW_FULL):
        raise InvalidArgument.for_field(field, f"{value} is not a known ExportView")
    return value == dataset_pb2.EXPORT_VIEW_FULL


def _uuid_list(checks: FieldChecks, field: str, values: list[str], limit: int) -> tuple[uuid.UUID, ...]:
    if len(values) > limit:
        checks.add(field, f"has {len(values)} ids; at most {limit} are accepted")
        return ()
    parsed = [checks.check(require_uuid, f"{field}[{i}]", v) for i, v in enumerate(values)]
    valid = [p for p in parsed if p is not None]
    repeated = sorted(str(p) for p, n in Counter(valid).items() if n > 1)
    if repeated:
        checks.add(field, f"lists {', '.join(repeated[:5])} more than once")
    return tuple(valid)


def _time(checks: FieldChecks, field: str, value: timestamp_pb2.Timestamp) -> datetime | None:
    try:
        moment = value.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        checks.add(field, "is not a representable time")
        return None
    if not _EARLIEST <= moment < _LATEST:
        checks.add(field, f"must be between {_EARLIEST.date()} and {_LATEST.date()}")
        return None
    return moment


def _fraction(checks: FieldChecks, value: float) -> float:
    if not math.isfinite(value) or not 0.0 <= value <= MAX_EVAL_FRACTION:
        checks.add("split.eval_fraction", f"must be within [0, {MAX_EVAL_FRACTION}] (got {value})")
    return value


def _threshold(checks: FieldChecks, gate: dataset_pb2.QualityGate) -> float:
    if not gate.HasField("near_duplicate_threshold"):
        return DEFAULT_NEAR_DUPLICATE_THRESHOLD
    value = gate.near_duplicate_threshold
    if not math.isfinite(value) or not 0.0 < value <= 1.0:
        checks.add("quality_gate.near_duplicate_threshold", f"must be within (0, 1] (got {value})")
    return value


def _selection(checks: FieldChecks, s: dataset_pb2.ExportSelection) -> Selection:
    if not s.job_ids:
        checks.add("selection.job_ids", "is empty: name at least one batch job")
    job_ids = _uuid_list(checks, "selection.job_ids", list(s.job_ids), MAX_JOB_IDS)
    tiers: list[Tier] = []
    for index, value in enumerate(s.tiers):
        tier = checks.check(tier_from_proto, f"selection.tiers[{index}]", value, required=True)
        if tier is not None and tier not in tiers:
            tiers.append(tier)
    after = _time(checks, "selection.created_after", s.created_after) if s.HasField("created_after") else None
    before = _time(checks, "selection.created_before", s.created_before) if s.HasField("created_before") else None
    if after is not None and before is not None and after >= before:
        checks.add("selection.created_before", "must be later than created_after")
    return Selection(
        job_ids=job_ids,
        tiers=tuple(tiers),
        persona_ids=_uuid_list(checks, "selection.persona_ids", list(s.persona_ids), MAX_FILTER_IDS),
        emotional_arc_ids=_uuid_list(checks, "selection.emotional_arc_ids", list(s.emotional_arc_ids), MAX_FILTER_IDS),
        training_topic_ids=_uuid_list(
            checks, "selection.training_topic_ids", list(s.training_topic_ids), MAX_FILTER_IDS
        ),
        created_after=after,
        created_before=before,
        include_running=s.include_running,
    )


def create_request(request: dataset_pb2.CreateExportRequest) -> tuple[str | None, ExportSpec]:
    """(request_id or None, the spec) of a CreateExport request; one INVALID_ARGUMENT names every bad field."""
    checks = FieldChecks()
    request_id = checks.check(check_request_id, "request_id", request.request_id)
    selection = _selection(checks, request.selection)
    export_format = FORMAT_FROM_PROTO.get(request.format)
    if request.format == dataset_pb2.EXPORT_FORMAT_UNSPECIFIED:
        checks.add("format", "is required (chat messages, ShareGPT, Bedrock Claude or convgen)")
    elif export_format is None:
        checks.add("format", f"{request.format} is not a known ExportFormat")
    prompt = checks.check(check_text, "system_prompt", request.system_prompt, max_length=MAX_SYSTEM_PROMPT_CHARS)
    eval_fraction = _fraction(checks, request.split.eval_fraction)
    group_by = GroupBy.NONE
    if request.split.group_by != dataset_pb2.SPLIT_GROUP_BY_UNSPECIFIED:
        found = GROUP_BY_FROM_PROTO.get(request.split.group_by)
        if found is None:
            checks.add("split.group_by", f"{request.split.group_by} is not a known SplitGroupBy")
        else:
            group_by = found
    threshold = _threshold(checks, request.quality_gate)
    checks.raise_if_any()
    assert export_format is not None
    return request_id or None, ExportSpec(
        selection=selection,
        format=export_format,
        system_prompt=prompt or DEFAULT_SYSTEM_PROMPT,
        eval_fraction=eval_fraction,
        group_by=group_by,
        seed=request.split.seed,
        drop_near_duplicates=request.quality_gate.drop_near_duplicates,
        near_duplicate_threshold=threshold,
        report_only=request.report_only,
    )


def _selection_message(s: Selection) -> dataset_pb2.ExportSelection:
    message = dataset_pb2.ExportSelection(
        job_ids=[str(i) for i in s.job_ids],
        tiers=[TIER_TO_PROTO[t] for t in s.tiers],
        persona_ids=[str(i) for i in s.persona_ids],
        emotional_arc_ids=[str(i) for i in s.emotional_arc_ids],
        training_topic_ids=[str(i) for i in s.training_topic_ids],
        include_running=s.include_running,
    )
    after, before = timestamp(s.created_after), timestamp(s.created_before)
    if after is not None:
        message.created_after.CopyFrom(after)
    if before is not None:
        message.created_before.CopyFrom(before)
    return message


def export(row: ExportRow, *, full: bool) -> dataset_pb2.Export:
    """An Export message (the report and the dropped sample only in the FULL view)."""
    spec = row.spec
    message = dataset_pb2.Export(
        id=str(row.id),
        request_id=row.request_id or "",
        state=STATE_TO_PROTO[row.state],
        selection=_selection_message(spec.selection),
        format=FORMAT_TO_PROTO[spec.format],
        system_prompt=spec.system_prompt,
        split=dataset_pb2.ExportSplit(
            eval_fraction=spec.eval_fraction, group_by=GROUP_BY_TO_PROTO[spec.group_by], seed=spec.seed
        ),
        quality_gate=dataset_pb2.QualityGate(
            drop_near_duplicates=spec.drop_near_duplicates, near_duplicate_threshold=spec.near_duplicate_threshold
        ),
        report_only=spec.report_only,
        counts=dataset_pb2.ExportCounts(
            selected=row.selected,
            processed=row.processed,
            exported_train=row.exported_train,
            exported_eval=row.exported_eval,
            dropped=row.dropped,
            dropped_by_reason=row.dropped_by_reason,
        ),
        files=[
            dataset_pb2.ExportFile(
                name=f.name,
                blob=common_pb2.BlobLocation(bucket=f.bucket, key=f.key, uri=f.uri),
                bytes=f.bytes,
                rows=f.rows,
                sha256=f.sha256,
                content_type=f.content_type,
            )
            for f in row.files
        ],
        error_code=row.error_code or "",
        error_message=row.error_message or "",
        runs=row.runs,
        created_at=timestamp(row.created_at),
        started_at=timestamp(row.started_at),
        finished_at=timestamp(row.finished_at),
    )
    if full:
        if row.report is not None:
            json_format.ParseDict(row.report, message.report, ignore_unknown_fields=True)
        message.dropped_sample.extend(
            dataset_pb2.DroppedRow(business_key=str(d.business_key), pk=str(d.pk), reason=d.reason)
            for d in row.dropped_sample
        )
    return message
