"""Domain → proto conversion for DatasetService: an export row into an Export message."""

from __future__ import annotations

from google.protobuf import json_format

from batch_service.datasets.domain import ExportRow, ExportState, Selection
from batch_service.datasets.report import GROUP_BY_TO_PROTO
from batch_service.datasets.request_parsing import FORMAT_TO_PROTO
from convgen.rpc.convert import TIER_TO_PROTO, timestamp
from convgen.v1 import common_pb2, dataset_pb2

STATE_TO_PROTO: dict[ExportState, dataset_pb2.ExportState.ValueType] = {
    ExportState.RUNNING: dataset_pb2.EXPORT_STATE_RUNNING,
    ExportState.SUCCEEDED: dataset_pb2.EXPORT_STATE_SUCCEEDED,
    ExportState.FAILED: dataset_pb2.EXPORT_STATE_FAILED,
}


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
