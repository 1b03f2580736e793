"""Batch job and item states, and the rows the store returns."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from convgen.catalog.models import Tier


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
class ItemParameters:
    """One item's generation parameters."""

    persona_id: uuid.UUID
    emotional_arc_id: uuid.UUID
    training_topic_id: uuid.UUID
    tier: Tier
    template_id: uuid.UUID


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
class Usage:
    """Token and cost totals."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cost_usd: Decimal = Decimal(0)


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
    """A batch_items row, with the business key of its conversation."""

    id: uuid.UUID
    job_id: uuid.UUID
    position: int
    parameters: ItemParameters
    status: ItemState
    run: int
    attempts: int
    lease_owner: str | None
    error_code: str | None
    error_message: str | None
    conversation_pk: uuid.UUID | None
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
