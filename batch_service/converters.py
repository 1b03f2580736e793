"""Proto ↔ domain conversion for the batch service."""

from __future__ import annotations

from datetime import timedelta

from google.protobuf import duration_pb2

from batch_service.domain import Counters, ErrorPolicy, EventKind, EventRow, ItemRow, ItemState, JobRow, JobState, Usage
from convgen.blobs import BlobRef
from convgen.errors import InvalidArgument
from convgen.rpc.convert import blob_location, parameters_to_proto, timestamp
from convgen.v1 import batch_pb2, common_pb2

JOB_STATE_TO_PROTO: dict[JobState, batch_pb2.BatchJobState.ValueType] = {
    JobState.QUEUED: batch_pb2.BATCH_JOB_STATE_QUEUED,
    JobState.RUNNING: batch_pb2.BATCH_JOB_STATE_RUNNING,
    JobState.PAUSED: batch_pb2.BATCH_JOB_STATE_PAUSED,
    JobState.STOPPING: batch_pb2.BATCH_JOB_STATE_STOPPING,
    JobState.COMPLETED: batch_pb2.BATCH_JOB_STATE_COMPLETED,
    JobState.FAILED: batch_pb2.BATCH_JOB_STATE_FAILED,
    JobState.CANCELLED: batch_pb2.BATCH_JOB_STATE_CANCELLED,
}
JOB_STATE_FROM_PROTO: dict[int, JobState] = {int(v): k for k, v in JOB_STATE_TO_PROTO.items()}

ITEM_STATE_TO_PROTO: dict[ItemState, batch_pb2.BatchItemState.ValueType] = {
    ItemState.QUEUED: batch_pb2.BATCH_ITEM_STATE_QUEUED,
    ItemState.PROCESSING: batch_pb2.BATCH_ITEM_STATE_PROCESSING,
    ItemState.COMPLETED: batch_pb2.BATCH_ITEM_STATE_COMPLETED,
    ItemState.FAILED: batch_pb2.BATCH_ITEM_STATE_FAILED,
    ItemState.CANCELLED: batch_pb2.BATCH_ITEM_STATE_CANCELLED,
}
ITEM_STATE_FROM_PROTO: dict[int, ItemState] = {int(v): k for k, v in ITEM_STATE_TO_PROTO.items()}

POLICY_TO_PROTO: dict[ErrorPolicy, batch_pb2.ErrorPolicy.ValueType] = {
    ErrorPolicy.CONTINUE: batch_pb2.ERROR_POLICY_CONTINUE,
    ErrorPolicy.STOP_ON_FAILURE: batch_pb2.ERROR_POLICY_STOP_ON_FAILURE,
}

_KIND_TO_PROTO: dict[EventKind, batch_pb2.ItemTransitionKind.ValueType] = {
    EventKind.QUEUED: batch_pb2.ITEM_TRANSITION_KIND_QUEUED,
    EventKind.PROCESSING: batch_pb2.ITEM_TRANSITION_KIND_PROCESSING,
    EventKind.COMPLETED: batch_pb2.ITEM_TRANSITION_KIND_COMPLETED,
    EventKind.FAILED: batch_pb2.ITEM_TRANSITION_KIND_FAILED,
    EventKind.RETRYING: batch_pb2.ITEM_TRANSITION_KIND_RETRYING,
    EventKind.CANCELLED: batch_pb2.ITEM_TRANSITION_KIND_CANCELLED,
    EventKind.RELEASED: batch_pb2.ITEM_TRANSITION_KIND_RELEASED,
}


def job_state_filter(field: str, value: int) -> JobState | None:
    """A job state filter: unspecified means any; unknown numbers are an error."""
    if value == batch_pb2.BATCH_JOB_STATE_UNSPECIFIED:
        return None
    state = JOB_STATE_FROM_PROTO.get(value)
    if state is None:
        raise InvalidArgument.for_field(field, f"{value} is not a known BatchJobState")
    return state


def item_state_filter(field: str, value: int) -> ItemState | None:
    """An item state filter: unspecified means any; unknown numbers are an error."""
    if value == batch_pb2.BATCH_ITEM_STATE_UNSPECIFIED:
        return None
    state = ITEM_STATE_FROM_PROTO.get(value)
    if state is None:
        raise InvalidArgument.for_field(field, f"{value} is not a known BatchItemState")
    return state


def error_policy(field: str, value: int) -> ErrorPolicy:
    """An error policy: unspecified means continue."""
    if value in (batch_pb2.ERROR_POLICY_UNSPECIFIED, batch_pb2.ERROR_POLICY_CONTINUE):
        return ErrorPolicy.CONTINUE
    if value == batch_pb2.ERROR_POLICY_STOP_ON_FAILURE:
        return ErrorPolicy.STOP_ON_FAILURE
    raise InvalidArgument.for_field(field, f"{value} is not a known ErrorPolicy")


def usage(u: Usage) -> common_pb2.TokenUsage:
    """A TokenUsage message."""
    return common_pb2.TokenUsage(
        input_tokens=u.input_tokens,
        output_tokens=u.output_tokens,
        cache_creation_input_tokens=u.cache_creation_input_tokens,
        cache_read_input_tokens=u.cache_read_input_tokens,
    )


def counters(c: Counters) -> batch_pb2.BatchJobCounters:
    """A BatchJobCounters message."""
    return batch_pb2.BatchJobCounters(
        total_items=c.total,
        queued_items=c.queued,
        processing_items=c.processing,
        completed_items=c.completed,
        failed_items=c.failed,
        cancelled_items=c.cancelled,
    )


def batch_job(job: JobRow, log: BlobRef) -> batch_pb2.BatchJob:
    """A BatchJob message."""
    c = job.counters
    return batch_pb2.BatchJob(
        id=str(job.id),
        name=job.name,
        state=JOB_STATE_TO_PROTO[job.state],
        total_items=c.total,
        queued_items=c.queued,
        processing_items=c.processing,
        completed_items=c.completed,
        failed_items=c.failed,
        cancelled_items=c.cancelled,
        concurrency=job.concurrency,
        max_attempts=job.max_attempts,
        error_policy=POLICY_TO_PROTO[job.error_policy],
        usage=usage(job.usage),
        cost_usd=float(job.usage.cost_usd),
        created_at=timestamp(job.created_at),
        started_at=timestamp(job.started_at),
        finished_at=timestamp(job.finished_at),
        updated_at=timestamp(job.updated_at),
        request_id=job.request_id or "",
        created_by=str(job.created_by),
        last_sequence=job.last_sequence,
        log_blob=blob_location(log),
        log_uploaded=job.log_uploaded,
    )


def batch_item(item: ItemRow) -> batch_pb2.BatchItem:
    """A BatchItem message: conversation_pk is the FK value (conversations.id), never the business key."""
    return batch_pb2.BatchItem(
        id=str(item.id),
        job_id=str(item.job_id),
        position=item.position,
        parameters=parameters_to_proto(item.parameters),
        state=ITEM_STATE_TO_PROTO[item.status],
        attempts=item.attempts,
        conversation_pk=str(item.conversation_pk) if item.conversation_pk else "",
        conversation_business_key=str(item.conversation_business_key) if item.conversation_business_key else "",
        error_message=item.error_message or "",
        error_code=item.error_code or "",
        started_at=timestamp(item.started_at),
        finished_at=timestamp(item.finished_at),
        usage=usage(item.usage),
        cost_usd=float(item.usage.cost_usd),
    )


def event(e: EventRow) -> batch_pb2.BatchJobEvent:
    """A BatchJobEvent for a stored event."""
    message = batch_pb2.BatchJobEvent(
        sequence=e.sequence,
        time=timestamp(e.created_at),
        counters=counters(e.counters),
        job_state=JOB_STATE_TO_PROTO[e.job_state],
    )
    if e.kind is EventKind.JOB:
        message.job.CopyFrom(
            batch_pb2.JobStateChange(
                previous_state=(
                    JOB_STATE_TO_PROTO[e.previous_job_state]
                    if e.previous_job_state
                    else batch_pb2.BATCH_JOB_STATE_UNSPECIFIED
                ),
                state=JOB_STATE_TO_PROTO[e.job_state],
                reason=e.message,
            )
        )
        return message
    transition = batch_pb2.ItemTransition(
        item_id=str(e.item_id),
        position=e.position or 0,
        kind=_KIND_TO_PROTO[e.kind],
        state=ITEM_STATE_TO_PROTO[e.item_state] if e.item_state else batch_pb2.BATCH_ITEM_STATE_UNSPECIFIED,
        attempt=e.attempt or 0,
        conversation_pk=str(e.conversation_pk) if e.conversation_pk else "",
        conversation_business_key=str(e.conversation_business_key) if e.conversation_business_key else "",
        error_message=e.error_message or "",
        error_code=e.error_code or "",
    )
    if e.retry_delay_ms is not None:
        delay = duration_pb2.Duration()
        delay.FromTimedelta(timedelta(milliseconds=e.retry_delay_ms))
        transition.retry_delay.CopyFrom(delay)
    message.item.CopyFrom(transition)
    return message


def snapshot(job: JobRow, log: BlobRef, sequence: int) -> batch_pb2.BatchJobEvent:
    """The first message of a watch stream."""
    return batch_pb2.BatchJobEvent(
        sequence=sequence,
        time=timestamp(job.updated_at),
        counters=counters(job.counters),
        job_state=JOB_STATE_TO_PROTO[job.state],
        snapshot=batch_job(job, log),
    )
