"""The batch state machine. Every transition is one transaction: job row locked first, items, counters, events."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from batch_service.domain import (
    Completion,
    CounterDelta,
    ErrorPolicy,
    EventKind,
    ItemRow,
    ItemState,
    JobRow,
    JobState,
    NewJob,
    Usage,
    job_not_found,
)
from batch_service.job_log import summary_line
from batch_service.store import events, items, jobs
from batch_service.store.events import NewEvent
from convgen.catalog.models import GenerationParameters
from convgen.db.database import Connection, Database
from convgen.errors import FailedPrecondition, NotFound

_CLAIM = CounterDelta(queued=-1, processing=1)
_COMPLETE = CounterDelta(processing=-1, completed=1)
_FAIL = CounterDelta(processing=-1, failed=1)
_REQUEUE = CounterDelta(processing=-1, queued=1)
_CANCEL_QUEUED = CounterDelta(queued=-1, cancelled=1)
_RETRY_FAILED = CounterDelta(failed=-1, queued=1)


@dataclass(frozen=True)
class ItemChange:
    """One item transition to record as an event."""

    item: ItemRow
    kind: EventKind
    delta: CounterDelta
    attempt: int | None = None
    conversation_business_key: uuid.UUID | None = None
    error_code: str | None = None
    error_message: str | None = None
    retry_delay_ms: int | None = None
    message: str = ""


@dataclass(frozen=True)
class TransitionResult:
    """The job after a transition, the items it changed, and whether the job just became terminal."""

    job: JobRow
    items: list[ItemRow] = field(default_factory=list)
    became_terminal: bool = False


def _wrong_state(job: JobRow, action: str, allowed: Sequence[JobState]) -> FailedPrecondition:
    return FailedPrecondition(
        f"cannot {action} batch job {job.id}: it is {job.state.value} "
        f"(allowed when {', '.join(s.value for s in allowed)})",
        reason="BATCH_JOB_WRONG_STATE",
        metadata={"state": job.state.value},
    )


async def _lock(conn: Connection, job_id: uuid.UUID) -> JobRow:
    job = await jobs.lock(conn, job_id)
    if job is None:
        raise job_not_found(job_id)
    return job


async def _record_items(
    conn: Connection, job_id: uuid.UUID, changes: Sequence[ItemChange], *, usage: Usage | None = None
) -> JobRow:
    """Applies the counter deltas of item changes and appends one event each (counters as of each event)."""
    total = sum((change.delta for change in changes), CounterDelta())
    job = await jobs.advance(conn, job_id, total, events=len(changes), usage=usage)
    counters = (-total).applied_to(job.counters)
    sequence = job.last_sequence - len(changes)
    new_events = []
    for change in changes:
        counters = change.delta.applied_to(counters)
        sequence += 1
        new_events.append(
            NewEvent(
                sequence=sequence,
                kind=change.kind,
                job_state=job.state,
                counters=counters,
                item_id=change.item.id,
                position=change.item.position,
                item_state=change.item.status,
                attempt=change.attempt,
                conversation_pk=change.item.conversation_pk,
                conversation_business_key=change.conversation_business_key,
                error_code=change.error_code,
                error_message=change.error_message,
                retry_delay_ms=change.retry_delay_ms,
                message=change.message,
            )
        )
    await events.append(conn, job_id, new_events)
    return job


async def _change_state(
    conn: Connection,
    job: JobRow,
    state: JobState,
    reason: str,
    *,
    stop_target: JobState | None = None,
    wake_workers: bool = False,
) -> JobRow:
    after = await jobs.change_state(conn, job.id, state, stop_target=stop_target)
    message = f"job {job.state.value} → {state.value}: {reason}"
    if state.terminal:
        message += f"; {summary_line(after)}"
    await events.append(
        conn,
        job.id,
        [
            NewEvent(
                sequence=after.last_sequence,
                kind=EventKind.JOB,
                job_state=state,
                previous_job_state=job.state,
                counters=after.counters,
                message=message,
            )
        ],
        wake_workers=wake_workers,
    )
    return after


async def _finish_if_done(conn: Connection, job: JobRow) -> tuple[JobRow, bool]:
    """Puts the job in its terminal state in the same transaction as its last item; (job, became_terminal)."""
    if job.state.terminal or job.counters.remaining > 0:
        return job, False
    if job.stop_target is not None:
        target, reason = job.stop_target, "last in-flight item ended"
    elif job.counters.completed > 0:
        target, reason = JobState.COMPLETED, "every item is done"
    else:
        target, reason = JobState.FAILED, "no item completed"
    return await _change_state(conn, job, target, reason), True


async def _stop(conn: Connection, job: JobRow, target: JobState, reason: str) -> TransitionResult:
    """Cancels queued items, then ends the job (or marks it stopping while items are in flight)."""
    cancelled = await items.cancel_queued(conn, job.id)
    if cancelled:
        job = await _record_items(
            conn,
            job.id,
            [ItemChange(i, EventKind.CANCELLED, _CANCEL_QUEUED, message=f"cancelled: {reason}") for i in cancelled],
        )
    if job.counters.processing == 0:
        job = await _change_state(conn, job, target, reason)
        return TransitionResult(job, cancelled, became_terminal=True)
    job = await _change_state(
        conn,
        job,
        JobState.STOPPING,
        f"{reason}; waiting for {job.counters.processing} in-flight item(s)",
        stop_target=target,
    )
    return TransitionResult(job, cancelled)


# --- creation -------------------------------------------------------------------------------------------------------


async def create_job(db: Database, new: NewJob, parameters: Sequence[GenerationParameters]) -> tuple[JobRow, bool]:
    """Creates a job, its items and its first event in one transaction; (job, created); a repeat gets the first."""
    async with db.transaction() as conn:
        job = await jobs.insert(conn, new)
        if job is None:
            assert new.request_id is not None
            existing = await jobs.get_by_request_id(conn, new.request_id)
            assert existing is not None
            return existing, False
        await items.create_all(conn, job.id, parameters)
        job = await jobs.advance(conn, job.id, CounterDelta(), events=1)
        await events.append(
            conn,
            job.id,
            [
                NewEvent(
                    sequence=job.last_sequence,
                    kind=EventKind.JOB,
                    job_state=job.state,
                    counters=job.counters,
                    message=(
                        f"job created: {job.counters.total} items, concurrency {job.concurrency}, "
                        f"max_attempts {job.max_attempts}, error policy {job.error_policy.value}; "
                        f"state {job.state.value}"
                    ),
                )
            ],
            wake_workers=job.state is JobState.RUNNING,
        )
    return job, True


# --- claiming and outcomes -------------------------------------------------------------------------------------------


async def claim(
    db: Database,
    job_id: uuid.UUID,
    *,
    owner: str,
    lease_seconds: float,
    limit: int,
    explicit: bool = False,
) -> tuple[JobRow, list[ItemRow]]:
    """Claims up to limit due items of a job. Workers claim from running jobs within the job's concurrency;
    an explicit claim (ProcessNext) works on queued, running or paused jobs and ignores concurrency."""
    async with db.transaction() as conn:
        job = await _lock(conn, job_id)
        if explicit:
            allowed = (JobState.QUEUED, JobState.RUNNING, JobState.PAUSED)
            if job.state not in allowed:
                raise _wrong_state(job, "process an item of", allowed)
        else:
            if job.state is not JobState.RUNNING:
                return job, []
            limit = min(limit, job.concurrency - job.counters.processing)
        if limit <= 0:
            return job, []
        claimed = await items.claim(conn, job_id, owner=owner, lease_seconds=lease_seconds, limit=limit)
        if not claimed:
            return job, []
        job = await _record_items(
            conn,
            job_id,
            [
                ItemChange(
                    i,
                    EventKind.PROCESSING,
                    _CLAIM,
                    attempt=i.attempts,
                    message=f"processing (attempt {i.attempts}) on worker {owner}",
                )
                for i in claimed
            ],
        )
        return job, claimed


async def complete_items(
    db: Database, job_id: uuid.UUID, completions: Sequence[Completion], *, owner: str
) -> TransitionResult:
    """Records stored conversations of one job's items in one transaction (their PRIMARY KEYS into the FK).

    Items whose lease was lost meanwhile are left out of the result; the job ends with its last item.
    """
    business_keys = {c.item_id: c.conversation_business_key for c in completions}
    async with db.transaction() as conn:
        await _lock(conn, job_id)
        done = await items.complete(conn, completions, owner=owner)
        if not done:
            job = await jobs.get(conn, job_id)
            assert job is not None
            return TransitionResult(job)
        done = [replace(item, conversation_business_key=business_keys[item.id]) for item in done]
        usage = sum((item.usage for item in done), Usage())
        job = await _record_items(
            conn,
            job_id,
            [
                ItemChange(
                    item,
                    EventKind.COMPLETED,
                    _COMPLETE,
                    attempt=item.attempts,
                    conversation_business_key=item.conversation_business_key,
                    message=f"completed (attempt {item.attempts}): conversation pk={item.conversation_pk} "
                    f"business_key={item.conversation_business_key}",
                )
                for item in done
            ],
            usage=usage,
        )
        job, terminal = await _finish_if_done(conn, job)
        return TransitionResult(job, done, became_terminal=terminal)


async def retry_item_later(
    db: Database, item: ItemRow, *, owner: str, delay_seconds: float, error_code: str, error_message: str
) -> TransitionResult | None:
    """Re-queues an item after a transient failure, due after the delay; None when the lease was lost."""
    async with db.transaction() as conn:
        await _lock(conn, item.job_id)
        queued = await items.requeue(
            conn,
            item.id,
            owner=owner,
            delay_seconds=delay_seconds,
            error_code=error_code,
            error_message=error_message,
            spend_attempt=True,
        )
        if queued is None:
            return None
        job = await _record_items(
            conn,
            item.job_id,
            [
                ItemChange(
                    queued,
                    EventKind.RETRYING,
                    _REQUEUE,
                    attempt=queued.attempts,
                    error_code=error_code,
                    error_message=error_message,
                    retry_delay_ms=int(delay_seconds * 1000),
                    message=f"retrying in {delay_seconds:.1f}s: {error_message}",
                )
            ],
        )
        return TransitionResult(job, [queued])


async def release_unreachable(
    db: Database,
    item: ItemRow,
    *,
    owner: str,
    delay_seconds: float,
    error_code: str,
    error_message: str,
    max_recoveries: int,
) -> TransitionResult | None:
    """The generation service was unreachable: re-queue without using an attempt, failing past max_recoveries."""
    async with db.transaction() as conn:
        await _lock(conn, item.job_id)
        recoveries = await items.recoveries_of(conn, item.id, owner=owner)
        if recoveries is None:
            return None
        if recoveries + 1 < max_recoveries:
            released = await items.requeue(
                conn,
                item.id,
                owner=owner,
                delay_seconds=delay_seconds,
                error_code=error_code,
                error_message=error_message,
                spend_attempt=False,
            )
            assert released is not None
            job = await _record_items(
                conn,
                item.job_id,
                [
                    ItemChange(
                        released,
                        EventKind.RELEASED,
                        _REQUEUE,
                        error_code=error_code,
                        error_message=error_message,
                        retry_delay_ms=int(delay_seconds * 1000),
                        message=f"released without using an attempt, retrying in {delay_seconds:.1f}s: {error_message}",
                    )
                ],
            )
            return TransitionResult(job, [released])
    final = f"generation failed: {error_message} ({recoveries + 1} times; giving up)"
    return await fail_item(db, item, owner=owner, error_code=error_code, error_message=final)


async def fail_item(
    db: Database, item: ItemRow, *, owner: str, error_code: str, error_message: str
) -> TransitionResult | None:
    """Fails an item for good (and stops the job when its policy says so); None when the lease was lost."""
    async with db.transaction() as conn:
        await _lock(conn, item.job_id)
        failed = await items.fail(conn, item.id, owner=owner, error_code=error_code, error_message=error_message)
        if failed is None:
            return None
        job = await _record_items(
            conn,
            item.job_id,
            [
                ItemChange(
                    failed,
                    EventKind.FAILED,
                    _FAIL,
                    attempt=failed.attempts,
                    error_code=error_code,
                    error_message=error_message,
                    message=f"failed: {error_message}",
                )
            ],
        )
        if job.error_policy is ErrorPolicy.STOP_ON_FAILURE and job.state in (
            JobState.QUEUED,
            JobState.RUNNING,
            JobState.PAUSED,
        ):
            result = await _stop(
                conn, job, JobState.FAILED, f"item #{failed.position} failed and the policy is stop_on_failure"
            )
            return TransitionResult(result.job, [failed], became_terminal=result.became_terminal)
        job, terminal = await _finish_if_done(conn, job)
        return TransitionResult(job, [failed], became_terminal=terminal)


async def release_owned(db: Database, job_id: uuid.UUID, *, owner: str, reason: str) -> TransitionResult:
    """Puts this owner's in-flight items of a job back in the queue (graceful shutdown)."""
    async with db.transaction() as conn:
        job = await _lock(conn, job_id)
        released = await items.release_owned(conn, job_id, owner=owner)
        if released:
            job = await _record_items(
                conn,
                job_id,
                [ItemChange(i, EventKind.RELEASED, _REQUEUE, message=f"released: {reason}") for i in released],
            )
            await events.notify_work(conn)
        return TransitionResult(job, released)


async def recover_expired_leases(db: Database, job_id: uuid.UUID, *, max_recoveries: int) -> TransitionResult:
    """Re-queues (or, past max_recoveries, fails) items whose worker stopped renewing its lease."""
    async with db.transaction() as conn:
        job = await _lock(conn, job_id)
        requeued = await items.recover_expired(conn, job_id, max_recoveries=max_recoveries)
        given_up = await items.fail_expired(conn, job_id, max_recoveries=max_recoveries)
        changes = [
            ItemChange(i, EventKind.RELEASED, _REQUEUE, message="lease expired (worker lost); re-queued")
            for i in requeued
        ] + [
            ItemChange(
                i,
                EventKind.FAILED,
                _FAIL,
                attempt=i.attempts,
                error_code=i.error_code,
                error_message=i.error_message,
                message=f"failed: {i.error_message}",
            )
            for i in given_up
        ]
        if not changes:
            return TransitionResult(job)
        job = await _record_items(conn, job_id, changes)
        if requeued:
            await events.notify_work(conn)
        job, terminal = await _finish_if_done(conn, job)
        return TransitionResult(job, requeued + given_up, became_terminal=terminal)


# --- job control ----------------------------------------------------------------------------------------------------


async def pause(db: Database, job_id: uuid.UUID) -> JobRow:
    """Stops new claims; in-flight items finish."""
    async with db.transaction() as conn:
        job = await _lock(conn, job_id)
        allowed = (JobState.QUEUED, JobState.RUNNING)
        if job.state not in allowed:
            raise _wrong_state(job, "pause", allowed)
        return await _change_state(conn, job, JobState.PAUSED, "paused by request")


async def resume(db: Database, job_id: uuid.UUID) -> JobRow:
    """Starts a queued job or continues a paused one."""
    async with db.transaction() as conn:
        job = await _lock(conn, job_id)
        allowed = (JobState.QUEUED, JobState.PAUSED)
        if job.state not in allowed:
            raise _wrong_state(job, "resume", allowed)
        reason = "started by request" if job.state is JobState.QUEUED else "resumed by request"
        return await _change_state(conn, job, JobState.RUNNING, reason, wake_workers=True)


async def cancel(db: Database, job_id: uuid.UUID) -> TransitionResult:
    """Cancels queued items at once; the job is cancelled when its in-flight items end."""
    async with db.transaction() as conn:
        job = await _lock(conn, job_id)
        allowed = (JobState.QUEUED, JobState.RUNNING, JobState.PAUSED)
        if job.state not in allowed:
            raise _wrong_state(job, "cancel", allowed)
        return await _stop(conn, job, JobState.CANCELLED, "cancelled by request")


async def retry_failed(db: Database, job_id: uuid.UUID, item_ids: Sequence[uuid.UUID] | None) -> TransitionResult:
    """Re-queues failed items as a new run and sets the job running again if it had ended."""
    async with db.transaction() as conn:
        job = await _lock(conn, job_id)
        allowed = (JobState.QUEUED, JobState.RUNNING, JobState.PAUSED, JobState.COMPLETED, JobState.FAILED)
        if job.state not in allowed:
            raise _wrong_state(job, "retry failed items of", allowed)
        if item_ids:
            states = await items.states_of(conn, job_id, item_ids)
            unknown = [str(i) for i in item_ids if i not in states]
            if unknown:
                raise NotFound(f"items not in batch job {job_id}: {', '.join(unknown)}", reason="BATCH_ITEM_NOT_FOUND")
            not_failed = [f"{i} is {states[i].value}" for i in item_ids if states[i] is not ItemState.FAILED]
            if not_failed:
                raise FailedPrecondition(
                    f"only failed items can be retried: {'; '.join(not_failed)}", reason="BATCH_ITEM_WRONG_STATE"
                )
        requeued = await items.requeue_failed(conn, job_id, item_ids or None)
        if not requeued:
            raise FailedPrecondition(f"batch job {job_id} has no failed items to retry", reason="NO_FAILED_ITEMS")
        job = await _record_items(
            conn,
            job_id,
            [
                ItemChange(i, EventKind.QUEUED, _RETRY_FAILED, message=f"re-queued for retry (run {i.run})")
                for i in requeued
            ],
        )
        if job.state.terminal:
            job = await _change_state(
                conn, job, JobState.RUNNING, f"{len(requeued)} failed item(s) re-queued", wake_workers=True
            )
        else:
            await events.notify_work(conn)
        return TransitionResult(job, requeued)
