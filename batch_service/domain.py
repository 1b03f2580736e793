"""The batch domain: job and item states, counters and usage with their arithmetic, and the rows the store returns."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from convgen.catalog.models import GenerationParameters
from convgen.errors import NotFound


class JobState(StrEnum):
    """Lifecycle of a job; the value is what the database stores."""

    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """True for completed, failed and cancelled."""
        return self in TERMINAL_JOB_STATES


TERMINAL_JOB_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})


class ItemState(StrEnum):
    """Lifecycle of an item; the value is what batch_items.status stores."""

    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ErrorPolicy(StrEnum):
    """What a job does at an item's permanent failure."""

    CONTINUE = "continue"
    STOP_ON_FAILURE = "stop_on_failure"


class EventKind(StrEnum):
    """What a job event records: a job state change or one kind of item transition."""

    JOB = "job"
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    RETRYING = "retrying"
    CANCELLED = "cancelled"
    RELEASED = "released"


@dataclass(frozen=True)
class Counters:
    """A job's item counts."""

    total: int
    queued: int
    processing: int
    completed: int
    failed: int
    cancelled: int

    @property
    def remaining(self) -> int:
        """Items not yet terminal."""
        return self.queued + self.processing


@dataclass(frozen=True)
class CounterDelta:
    """Increments to a job's item counters (negative to decrement)."""

    queued: int = 0
    processing: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0

    def __add__(self, other: CounterDelta) -> CounterDelta:
        return CounterDelta(
            self.queued + other.queued,
            self.processing + other.processing,
            self.completed + other.completed,
            self.failed + other.failed,
            self.cancelled + other.cancelled,
        )

    def __neg__(self) -> CounterDelta:
        return CounterDelta(-self.queued, -self.processing, -self.completed, -self.failed, -self.cancelled)

    def applied_to(self, c: Counters) -> Counters:
        """The counters after this delta."""
        return Counters(
            total=c.total,
            queued=c.queued + self.queued,
            processing=c.processing + self.processing,
            completed=c.completed + self.completed,
            failed=c.failed + self.failed,
            cancelled=c.cancelled + self.cancelled,
        )


@dataclass(frozen=True)
class Usage:
    """Token and cost totals."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cost_usd: Decimal = Decimal(0)

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_creation_input_tokens + other.cache_creation_input_tokens,
            self.cache_read_input_tokens + other.cache_read_input_tokens,
            self.cost_usd + other.cost_usd,
        )


@dataclass(frozen=True)
class NewJob:
    """A job to create."""

    name: str
    request_id: str | None
    created_by: uuid.UUID
    state: JobState
    error_policy: ErrorPolicy
    concurrency: int
    max_attempts: int
    total_items: int


@dataclass(frozen=True)
class Completion:
    """An item finished with a stored conversation: its keys and what it cost."""

    item_id: uuid.UUID
    # What batch_items.conversation_id holds; the business key is for events and logs only.
    conversation_pk: uuid.UUID
    conversation_business_key: uuid.UUID
    usage: Usage


@dataclass(frozen=True)
class JobRow:
    """A batch_jobs row."""

    id: uuid.UUID
    name: str
    request_id: str | None
    created_by: uuid.UUID
    state: JobState
    stop_target: JobState | None
    error_policy: ErrorPolicy
    concurrency: int
    max_attempts: int
    counters: Counters
    usage: Usage
    last_sequence: int
    terminal_sequence: int
    log_uploaded_sequence: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime

    @property
    def log_uploaded(self) -> bool:
        """True when the log of the latest terminal state is in the blob store."""
        return self.state.terminal and self.log_uploaded_sequence >= self.terminal_sequence > 0


@dataclass(frozen=True)
class ItemRow:
    """A batch_items row; conversation_business_key is set only where the conversation is known (see it)."""

    id: uuid.UUID
    job_id: uuid.UUID
    position: int
    parameters: GenerationParameters
    status: ItemState
    run: int
    attempts: int
    error_code: str | None
    error_message: str | None
    conversation_pk: uuid.UUID | None
    # Filled by the reads that join conversations (items.get, items.list_page) and by transitions.complete_items;
    # the other statements return the item alone and leave it None.
    conversation_business_key: uuid.UUID | None
    usage: Usage
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def request_id(self) -> str:
        """The idempotency key of this item's generation: stable across crashes, new per retry run."""
        return f"batch-item/{self.id}/run-{self.run}"


@dataclass(frozen=True)
class EventRow:
    """A batch_job_events row."""

    job_id: uuid.UUID
    sequence: int
    kind: EventKind
    job_state: JobState
    previous_job_state: JobState | None
    item_id: uuid.UUID | None
    position: int | None
    item_state: ItemState | None
    attempt: int | None
    conversation_pk: uuid.UUID | None
    conversation_business_key: uuid.UUID | None
    error_code: str | None
    error_message: str | None
    retry_delay_ms: int | None
    message: str
    counters: Counters
    created_at: datetime

    @property
    def ends_stream(self) -> bool:
        """True for the job event that put the job in a terminal state."""
        return self.kind is EventKind.JOB and self.job_state.terminal


def job_not_found(job_id: uuid.UUID) -> NotFound:
    """The error for a batch job id that does not exist."""
    return NotFound(f"batch job {job_id} does not exist", reason="BATCH_JOB_NOT_FOUND")
