"""BatchService requests parsed into typed values at the edge; a request's bad fields are all reported at once."""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from batch_service import converters
from batch_service.domain import ItemState, JobState, NewJob
from convgen.catalog.models import NIL_UUID, GenerationParameters
from convgen.errors import InvalidArgument
from convgen.paging import decode_token, position_int, position_timestamp, position_uuid
from convgen.rpc.convert import parameters_from_proto, tier_from_proto
from convgen.v1 import batch_pb2, common_pb2
from convgen.validation import (
    MAX_NAME_LENGTH,
    attempt,
    check_request_id,
    check_text,
    optional_uuid,
    page_size,
    require_uuid,
    valid,
    valid_list,
    violation_count,
)

DEFAULT_JOB_PAGE = 50
DEFAULT_ITEM_PAGE = 100
MAX_ATTEMPTS_LIMIT = 20
# A parameter list stops being checked once the request has this many violations (a status lists only a few).
MAX_VIOLATIONS_SCANNED = 20


@dataclass(frozen=True)
class BatchLimits:
    """Bounds and defaults of job requests, from the settings."""

    max_items: int
    default_concurrency: int
    max_concurrency: int
    default_max_attempts: int
    max_page_size: int
    max_message_bytes: int


@dataclass(frozen=True)
class JobCreation:
    """A valid CreateBatchJob request: the job row to insert and its items' parameters in position order."""

    job: NewJob
    parameters: list[GenerationParameters]


@dataclass(frozen=True)
class JobPage:
    """A valid ListBatchJobs request."""

    size: int
    state: JobState | None
    after: tuple[datetime, uuid.UUID] | None
    filters: dict[str, str]


@dataclass(frozen=True)
class ItemPage:
    """The fields of a valid ListBatchItems request; its page token is read once the job is known to exist."""

    job_id: uuid.UUID
    size: int
    state: ItemState | None
    filters: dict[str, str]

    def after_position(self, page_token: str) -> int:
        """The position the page token continues after (-1 for the first page)."""
        position = decode_token("page_token", page_token, self.filters)
        return position_int("page_token", position, "p") if position is not None else -1


@dataclass(frozen=True)
class ItemRetry:
    """A valid RetryFailedItems request; no item ids means every failed item of the job."""

    job_id: uuid.UUID
    item_ids: list[uuid.UUID]


def parse_create_job(request: batch_pb2.CreateBatchJobRequest, limits: BatchLimits) -> JobCreation:
    """The job and its items' parameters; InvalidArgument names every bad field."""
    fields = (
        attempt(check_text, "name", request.name, max_length=MAX_NAME_LENGTH),
        attempt(check_request_id, "request_id", request.request_id),
        attempt(optional_uuid, "created_by", request.created_by),
        attempt(_bounded, "concurrency", request.concurrency, limits.default_concurrency, limits.max_concurrency),
        attempt(_bounded, "max_attempts", request.max_attempts, limits.default_max_attempts, MAX_ATTEMPTS_LIMIT),
        attempt(converters.error_policy, "error_policy", request.error_policy),
    )
    selection = attempt(_selection, request, limits.max_items, MAX_VIOLATIONS_SCANNED - violation_count(fields))
    name, request_id, created_by, concurrency, max_attempts, policy, parameters = valid(*fields, selection)
    auto_start = request.auto_start if request.HasField("auto_start") else True
    job = NewJob(
        name=name or f"batch {datetime.now(UTC).strftime('%Y-%m-%d %H:%M:%S UTC')}",
        request_id=request_id or None,
        created_by=created_by or NIL_UUID,
        state=JobState.RUNNING if auto_start else JobState.QUEUED,
        error_policy=policy,
        concurrency=concurrency,
        max_attempts=max_attempts,
        total_items=len(parameters),
    )
    return JobCreation(job, parameters)


def _bounded(field: str, value: int, default: int, maximum: int) -> int:
    if value == 0:
        return default
    if not 1 <= value <= maximum:
        raise InvalidArgument.for_field(
            field, f"must be between 1 and {maximum} (got {value}); 0 means the default {default}"
        )
    return value


def _selection(
    request: batch_pb2.CreateBatchJobRequest, max_items: int, scan_budget: int
) -> list[GenerationParameters]:
    which = request.WhichOneof("selection")
    if which == "combination":
        return _combination(request.combination, max_items)
    if which == "parameter_list":
        return _parameter_list(request.parameter_list.items, max_items, scan_budget)
    raise InvalidArgument.for_field("selection", "set combination or parameter_list")


def _combination(c: batch_pb2.Combination, max_items: int) -> list[GenerationParameters]:
    count = len(c.persona_ids) * len(c.emotional_arc_ids) * len(c.training_topic_ids)
    persona_ids, arc_ids, topic_ids, tier, template_id, _ = valid(
        attempt(_id_list, "combination.persona_ids", c.persona_ids, max_items),
        attempt(_id_list, "combination.emotional_arc_ids", c.emotional_arc_ids, max_items),
        attempt(_id_list, "combination.training_topic_ids", c.training_topic_ids, max_items),
        attempt(tier_from_proto, "combination.tier", c.tier),
        attempt(optional_uuid, "combination.template_id", c.template_id),
        attempt(_within_limit, count, max_items),
    )
    return [
        GenerationParameters(persona, arc, topic, tier, template_id or NIL_UUID)
        for persona, arc, topic in itertools.product(persona_ids, arc_ids, topic_ids)
    ]


def _id_list(field: str, values: Sequence[str], max_items: int) -> list[uuid.UUID]:
    """The ids of one combination list: not empty, not longer than a job, each a UUID, none twice."""
    if not values:
        raise InvalidArgument.for_field(field, "is empty: select at least one")
    if len(values) > max_items:
        raise InvalidArgument.for_field(field, f"has {len(values)} ids; at most {max_items} items fit in a job")
    results = [attempt(require_uuid, f"{field}[{i}]", v) for i, v in enumerate(values)]
    seen = Counter(r for r in results if isinstance(r, uuid.UUID))
    duplicates = sorted(str(i) for i, n in seen.items() if n > 1)
    if duplicates:
        shown = ", ".join(duplicates[:5]) + (f" and {len(duplicates) - 5} more" if len(duplicates) > 5 else "")
        results.append(InvalidArgument.for_field(field, f"lists {shown} more than once"))
    return valid_list(results)


def _within_limit(count: int, max_items: int) -> None:
    if count > max_items:
        raise InvalidArgument.for_field(
            "combination", f"selects {count} items; the limit is {max_items} (BATCH_MAX_ITEMS)"
        )


def _parameter_list(
    entries: Sequence[common_pb2.GenerationParameters], max_items: int, scan_budget: int
) -> list[GenerationParameters]:
    if not entries:
        raise InvalidArgument.for_field("parameter_list.items", "is empty: list at least one parameter set")
    if len(entries) > max_items:
        raise InvalidArgument.for_field(
            "parameter_list.items", f"has {len(entries)} entries; the limit is {max_items} (BATCH_MAX_ITEMS)"
        )
    results: list[GenerationParameters | InvalidArgument] = []
    violations = 0
    for index, entry in enumerate(entries):
        result = attempt(parameters_from_proto, entry, f"parameter_list.items[{index}]")
        results.append(result)
        violations += violation_count([result])
        if violations > scan_budget:
            break
    return valid_list(results)


def parse_list_jobs(request: batch_pb2.ListBatchJobsRequest, max_page_size: int) -> JobPage:
    """Page size, state filter and the position the page token holds."""
    size, state = valid(
        attempt(page_size, "page_size", request.page_size, default=DEFAULT_JOB_PAGE, maximum=max_page_size),
        attempt(converters.job_state_filter, "state", request.state),
    )
    filters = {"state": state.value if state else ""}
    position = decode_token("page_token", request.page_token, filters)
    after = None
    if position is not None:
        after = (position_timestamp("page_token", position, "t"), position_uuid("page_token", position, "id"))
    return JobPage(size, state, after, filters)


def parse_list_items(request: batch_pb2.ListBatchItemsRequest, max_page_size: int) -> ItemPage:
    """Job id, page size and state filter."""
    job_id, size, state = valid(
        attempt(require_uuid, "job_id", request.job_id),
        attempt(page_size, "page_size", request.page_size, default=DEFAULT_ITEM_PAGE, maximum=max_page_size),
        attempt(converters.item_state_filter, "state", request.state),
    )
    return ItemPage(job_id, size, state, {"job": str(job_id), "state": state.value if state else ""})


def parse_retry(request: batch_pb2.RetryFailedItemsRequest) -> ItemRetry:
    """The job id and the distinct item ids, in the order given."""
    job_id, item_ids = valid(
        attempt(require_uuid, "job_id", request.job_id),
        attempt(_ids, "item_ids", request.item_ids),
    )
    return ItemRetry(job_id, list(dict.fromkeys(item_ids)))


def _ids(field: str, values: Sequence[str]) -> list[uuid.UUID]:
    return valid_list(attempt(require_uuid, f"{field}[{i}]", v) for i, v in enumerate(values))
