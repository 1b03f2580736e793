"""Engine guarantees: stop-on-failure, retrying listed items, concurrency bounds, lease heartbeat, log and totals."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from convgen.v1 import batch_pb2, batch_pb2_grpc
from tests.support.demo_catalog import seed_combination
from tests.support.jobs import TERMINAL, job_counters, wait_terminal
from tests.support.messages_api import FakeMessagesApi, Fault
from tests.support.postgres import fetch
from tests.support.services import Services, claude_settings, running_services, test_settings

# The seed's first two topics, in the order of its training_topic_ids (item positions follow that order).
IGNORED_401K = "The Ignored 401(k)"
ESTATE_PLANNING = "Essential Estate Planning"

PROCESSING = batch_pb2.ITEM_TRANSITION_KIND_PROCESSING
COMPLETED = batch_pb2.ITEM_TRANSITION_KIND_COMPLETED
RELEASED = batch_pb2.ITEM_TRANSITION_KIND_RELEASED
# Transitions that take an item out of processing.
LEAVES_PROCESSING = {
    COMPLETED,
    batch_pb2.ITEM_TRANSITION_KIND_FAILED,
    batch_pb2.ITEM_TRANSITION_KIND_RETRYING,
    RELEASED,
}


def small_job(*, arcs: int, topics: int, **fields: Any) -> batch_pb2.CreateBatchJobRequest:
    """A job over the seed's first `arcs` arcs x first `topics` topics: item position = arc * topics + topic."""
    combination = seed_combination()
    del combination.emotional_arc_ids[arcs:]
    del combination.training_topic_ids[topics:]
    fields.setdefault("name", f"small job {arcs}x{topics}")
    return batch_pb2.CreateBatchJobRequest(combination=combination, **fields)


@asynccontextmanager
async def claude_services(
    database_url: str,
    tmp_path: Path,
    fake_api: FakeMessagesApi,
    *,
    batch_overrides: dict[str, Any] | None = None,
    **overrides: Any,
) -> AsyncIterator[Services]:
    """Both services, the model being the fake Messages API tried once per call (the batch engine retries)."""
    # A known request rate, so model calls run in parallel from the first (no probe of the API's rate limit).
    overrides.setdefault("model_requests_per_minute", 600_000)
    settings = test_settings(
        database_url, tmp_path, **claude_settings(fake_api.base_url), model_max_attempts=1, **overrides
    )
    async with running_services(settings, batch_overrides=batch_overrides) as running:
        yield running


async def replay(stub: batch_pb2_grpc.BatchServiceStub, job_id: str) -> list[batch_pb2.BatchJobEvent]:
    """Every stored event of a finished job, replayed from the start (the snapshot left out)."""
    call = stub.WatchBatchJob(batch_pb2.WatchBatchJobRequest(job_id=job_id, after_sequence=0))
    return [e async for e in call if e.WhichOneof("event") != "snapshot"]


async def items_by_position(stub: batch_pb2_grpc.BatchServiceStub, job_id: str) -> list[batch_pb2.BatchItem]:
    """The job's items (a small job: one page), in position order."""
    response = await stub.ListBatchItems(batch_pb2.ListBatchItemsRequest(job_id=job_id))
    assert not response.next_page_token
    return list(response.items)


async def assert_counters_equal_item_states(dsn: str, job: batch_pb2.BatchJob) -> None:
    """The job's counters are exactly the numbers of its items in each state (batch_items.status)."""
    rows = await fetch(
        dsn,
        "SELECT status, count(*) AS n FROM batch_items WHERE batch_job_id = $1 GROUP BY status",
        uuid.UUID(job.id),
    )
    states = Counter({r["status"]: r["n"] for r in rows})
    assert job_counters(job) == (
        sum(states.values()),
        states["queued"],
        states["processing"],
        states["completed"],
        states["failed"],
        states["cancelled"],
    )


def processing_counts(events: list[batch_pb2.BatchJobEvent]) -> Counter[str]:
    """How many processing transitions (claims) each item had."""
    return Counter(e.item.item_id for e in events if e.WhichOneof("event") == "item" and e.item.kind == PROCESSING)


@pytest.mark.slow
async def test_stop_on_failure_fails_the_job_at_the_first_permanent_failure(
    database_url: str, tmp_path: Path, fake_api: FakeMessagesApi
) -> None:
    """STOP_ON_FAILURE: a permanent failure cancels the queued items, lets the in-flight one finish, fails the job."""
    # Items 0 and 1 are claimed together; item 1 fails at once while item 0 is still in its (slow) model call.
    fake_api.update_config({"slow_seconds": 3.0})
    fake_api.inject(Fault.SLOW, match=IGNORED_401K)
    fake_api.inject(Fault.BAD_REQUEST, match=ESTATE_PLANNING)
    async with claude_services(database_url, tmp_path, fake_api) as services:
        stub = services.batch_stub
        job = await stub.CreateBatchJob(
            small_job(arcs=1, topics=4, concurrency=2, error_policy=batch_pb2.ERROR_POLICY_STOP_ON_FAILURE)
        )
        assert job.error_policy == batch_pb2.ERROR_POLICY_STOP_ON_FAILURE

        done = await wait_terminal(stub, job.id)

        assert done.state == batch_pb2.BATCH_JOB_STATE_FAILED
        assert (done.completed_items, done.failed_items, done.cancelled_items) == (1, 1, 2)
        assert (done.queued_items, done.processing_items) == (0, 0)
        await assert_counters_equal_item_states(database_url, done)

        items = await items_by_position(stub, job.id)
        assert [i.state for i in items] == [
            batch_pb2.BATCH_ITEM_STATE_COMPLETED,  # in flight at the failure: finished
            batch_pb2.BATCH_ITEM_STATE_FAILED,  # the first permanent failure
            batch_pb2.BATCH_ITEM_STATE_CANCELLED,  # queued at the failure: never ran
            batch_pb2.BATCH_ITEM_STATE_CANCELLED,
        ]
        assert items[1].error_code == "INVALID_ARGUMENT"
        assert items[1].attempts == 1
        for never_ran in items[2:]:
            assert never_ran.attempts == 0
            assert not never_ran.conversation_pk
            assert not never_ran.HasField("started_at")
        assert fake_api.stats()["total"] == 2, "only the two claimed items reached the model"
        assert fake_api.stats()["faults"] == {"slow": 1, "bad_request": 1}

        events = await replay(stub, job.id)
        assert set(processing_counts(events)) == {items[0].id, items[1].id}
        job_states = [(e.job.previous_state, e.job.state) for e in events if e.WhichOneof("event") == "job"]
        assert job_states[-2:] == [
            (batch_pb2.BATCH_JOB_STATE_RUNNING, batch_pb2.BATCH_JOB_STATE_STOPPING),
            (batch_pb2.BATCH_JOB_STATE_STOPPING, batch_pb2.BATCH_JOB_STATE_FAILED),
        ]
        stopping = next(e for e in events if e.job.state == batch_pb2.BATCH_JOB_STATE_STOPPING)
        assert "item #1 failed and the policy is stop_on_failure" in stopping.job.reason
        assert events[-1].counters == batch_pb2.BatchJobCounters(
            total_items=4, completed_items=1, failed_items=1, cancelled_items=2
        )


async def test_retry_failed_items_with_a_list_reruns_only_the_listed_items(
    database_url: str, tmp_path: Path, fake_api: FakeMessagesApi
) -> None:
    """RetryFailedItems with item_ids re-runs only those; the other failed item stays failed; the job ends again."""
    fake_api.inject(Fault.BAD_REQUEST, times=2, match=ESTATE_PLANNING)  # items 1 and 3 fail once each
    async with claude_services(database_url, tmp_path, fake_api) as services:
        stub = services.batch_stub
        job = await stub.CreateBatchJob(small_job(arcs=2, topics=2, concurrency=4))
        first = await wait_terminal(stub, job.id)
        assert (first.state, first.completed_items, first.failed_items) == (batch_pb2.BATCH_JOB_STATE_COMPLETED, 2, 2)
        before = await items_by_position(stub, job.id)
        assert [i.state == batch_pb2.BATCH_ITEM_STATE_FAILED for i in before] == [False, True, False, True]
        retried, untouched = before[1], before[3]
        assert fake_api.stats()["pending_injections"] == 0, "a re-run would now succeed"
        calls_before = fake_api.stats()["total"]

        response = await stub.RetryFailedItems(batch_pb2.RetryFailedItemsRequest(job_id=job.id, item_ids=[retried.id]))
        assert response.requeued_items == 1
        assert response.job.state == batch_pb2.BATCH_JOB_STATE_RUNNING
        assert (response.job.queued_items, response.job.failed_items) == (1, 1)
        second = await wait_terminal(stub, job.id)

        assert second.state == batch_pb2.BATCH_JOB_STATE_COMPLETED
        assert (second.completed_items, second.failed_items, second.queued_items) == (3, 1, 0)
        await assert_counters_equal_item_states(database_url, second)
        assert fake_api.stats()["total"] - calls_before == 1, "only the listed item ran again"
        after = await items_by_position(stub, job.id)
        assert after[1].state == batch_pb2.BATCH_ITEM_STATE_COMPLETED
        assert after[1].conversation_pk
        assert after[3] == untouched, "the unlisted failed item is exactly as it was"
        assert [after[0], after[2]] == [before[0], before[2]]

        events = await replay(stub, job.id)
        retry_at = next(e.sequence for e in events if e.item.kind == batch_pb2.ITEM_TRANSITION_KIND_QUEUED)
        rerun = [e for e in events if e.sequence >= retry_at and e.WhichOneof("event") == "item"]
        assert {e.item.item_id for e in rerun} == {retried.id}
        assert [e.item.kind for e in rerun] == [batch_pb2.ITEM_TRANSITION_KIND_QUEUED, PROCESSING, COMPLETED]
        endings = [e for e in events if e.WhichOneof("event") == "job" and e.job.state in TERMINAL]
        assert len(endings) == 2
        assert events[-1] == endings[-1]


@pytest.mark.parametrize(
    ("job_concurrency", "worker_concurrency", "bound"),
    [(2, 64, 2), (8, 3, 3)],
    ids=["per_job", "per_process"],
)
async def test_items_processing_at_once_never_exceed_the_concurrency_bound(
    database_url: str,
    tmp_path: Path,
    fake_api: FakeMessagesApi,
    job_concurrency: int,
    worker_concurrency: int,
    bound: int,
) -> None:
    """No event shows more items processing than the job's concurrency or the process's BATCH_WORKER_CONCURRENCY."""
    fake_api.update_config({"latency_seconds": 0.2})
    async with claude_services(
        database_url, tmp_path, fake_api, batch_overrides={"batch_worker_concurrency": worker_concurrency}
    ) as services:
        stub = services.batch_stub
        job = await stub.CreateBatchJob(small_job(arcs=2, topics=4, concurrency=job_concurrency))
        done = await wait_terminal(stub, job.id)
        assert (done.state, done.completed_items) == (batch_pb2.BATCH_JOB_STATE_COMPLETED, 8)

        events = await replay(stub, job.id)
        # The counters carried by every event.
        assert max(e.counters.processing_items for e in events) == bound
        # The processing intervals themselves: items between their claim and their outcome, in sequence order.
        running: set[str] = set()
        most = 0
        for event in events:
            if event.WhichOneof("event") != "item":
                continue
            if event.item.kind == PROCESSING:
                running.add(event.item.item_id)
            elif event.item.kind in LEAVES_PROCESSING:
                running.discard(event.item.item_id)
            most = max(most, len(running))
            assert len(running) == event.counters.processing_items
        assert most == bound
        assert set(processing_counts(events).values()) == {1}


@pytest.mark.slow
async def test_a_model_call_longer_than_the_lease_keeps_its_item(
    database_url: str, tmp_path: Path, fake_api: FakeMessagesApi
) -> None:
    """The lease heartbeat keeps an item that runs for several lease periods: one claim, one attempt, one model call."""
    lease_seconds = 1.0
    fake_api.update_config({"latency_seconds": 2.5 * lease_seconds})
    async with claude_services(database_url, tmp_path, fake_api, batch_lease_seconds=lease_seconds) as services:
        stub = services.batch_stub
        job = await stub.CreateBatchJob(small_job(arcs=1, topics=2, concurrency=2))

        # The heartbeat moves a processing item's lease forward while its model call runs.
        first_leases: dict[uuid.UUID, datetime] = {}
        async with asyncio.timeout(10):
            while True:
                rows = await fetch(
                    database_url,
                    "SELECT id, lease_expires_at FROM batch_items WHERE batch_job_id = $1 AND status = 'processing'",
                    uuid.UUID(job.id),
                )
                if any(r["lease_expires_at"] > first_leases.setdefault(r["id"], r["lease_expires_at"]) for r in rows):
                    break
                await asyncio.sleep(0.05)

        done = await wait_terminal(stub, job.id)

        assert (done.state, done.completed_items, done.failed_items) == (batch_pb2.BATCH_JOB_STATE_COMPLETED, 2, 0)
        items = await items_by_position(stub, job.id)
        for item in items:
            assert item.attempts == 1
            ran_for = item.finished_at.ToDatetime() - item.started_at.ToDatetime()
            assert ran_for.total_seconds() > 2 * lease_seconds, "the premise: the item outlived its lease twice over"
        events = await replay(stub, job.id)
        assert processing_counts(events) == Counter({item.id: 1 for item in items})
        assert not [e for e in events if e.item.kind == RELEASED]
        assert fake_api.stats()["total"] == 2
        for topic in (IGNORED_401K, ESTATE_PLANNING):
            assert sum(topic in str(r.body) for r in fake_api.requests) == 1, f"one model request for {topic}"


LOG_LINE = re.compile(r"^(?P<stamp>\S+) \[(?P<sequence>\d{6})\] (?P<text>.*)$")
SUMMARY = re.compile(
    r"summary: (?P<total>\d+) items: (?P<completed>\d+) completed, (?P<failed>\d+) failed, "
    r"(?P<cancelled>\d+) cancelled; tokens: input (?P<input>\d+), output (?P<output>\d+), "
    r"cache write (?P<cache_write_5m>\d+) \(5m\) \+ (?P<cache_write_1h>\d+) \(1h\), cache read (?P<cache_read>\d+); "
    r"cache hit ratio (?P<hit_ratio>\d\.\d{3}); cost \$(?P<cost>\d+\.\d{6}): input \$(?P<input_cost>\d+\.\d{6}), "
    r"output \$(?P<output_cost>\d+\.\d{6}), cache write \$(?P<write_cost>\d+\.\d{6}), "
    r"cache read \$(?P<read_cost>\d+\.\d{6})$"
)


def log_stamp(event: batch_pb2.BatchJobEvent) -> str:
    """The event's time as the log writes it: UTC, milliseconds, Z."""
    moment = event.time.ToDatetime(tzinfo=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def test_the_job_log_and_totals_account_for_every_item(
    database_url: str, tmp_path: Path, fake_api: FakeMessagesApi
) -> None:
    """Log lines carry time, item id and conversation pk; the summary and the job's totals sum its conversations."""
    async with claude_services(database_url, tmp_path, fake_api) as services:
        stub = services.batch_stub
        job = await stub.CreateBatchJob(small_job(arcs=1, topics=4, concurrency=4))
        done = await wait_terminal(stub, job.id)
        assert (done.state, done.completed_items) == (batch_pb2.BATCH_JOB_STATE_COMPLETED, 4)
        log = await stub.GetBatchJobLog(batch_pb2.GetBatchJobLogRequest(job_id=job.id))
        events = {e.sequence: e for e in await replay(stub, job.id)}
        items = await items_by_position(stub, job.id)

    rows = await fetch(
        database_url,
        """
        SELECT i.id AS item_id, c.id AS pk, c.input_tokens, c.output_tokens, c.cache_creation_input_tokens,
               c.cache_creation_5m_input_tokens, c.cache_creation_1h_input_tokens, c.cache_read_input_tokens,
               c.cost_usd, c.input_cost_usd, c.output_cost_usd, c.cache_write_5m_cost_usd, c.cache_write_1h_cost_usd,
               c.cache_read_cost_usd
        FROM batch_items i JOIN conversations c ON c.id = i.conversation_id
        WHERE i.batch_job_id = $1
        """,
        uuid.UUID(job.id),
    )
    pk_of = {str(r["item_id"]): str(r["pk"]) for r in rows}
    assert pk_of == {i.id: i.conversation_pk for i in items}

    lines = log.text.splitlines()
    assert len(lines) == len(events), "one line per event"
    transitions: Counter[tuple[str, int]] = Counter()
    for line in lines:
        parsed = LOG_LINE.match(line)
        assert parsed, f"not a log line: {line!r}"
        event = events[int(parsed["sequence"])]
        assert parsed["stamp"] == log_stamp(event), "each line is stamped with its transition's time"
        assert datetime.fromisoformat(parsed["stamp"]).tzinfo is not None
        if event.WhichOneof("event") != "item":
            continue
        item_id = event.item.item_id
        assert f"item #{event.item.position} {item_id} " in parsed["text"]
        transitions[(item_id, event.item.kind)] += 1
        if event.item.kind == COMPLETED:
            assert f"pk={pk_of[item_id]} " in parsed["text"]
            assert f"business_key={event.item.conversation_business_key}" in parsed["text"]
    assert transitions == Counter({(i.id, kind): 1 for i in items for kind in (PROCESSING, COMPLETED)})

    summary = SUMMARY.search(lines[-1])
    assert summary, f"no summary at the end: {lines[-1]!r}"
    sums = {
        column: sum(r[column] for r in rows)
        for column in (
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_creation_5m_input_tokens",
            "cache_creation_1h_input_tokens",
            "cache_read_input_tokens",
            "cost_usd",
            "input_cost_usd",
            "output_cost_usd",
            "cache_write_5m_cost_usd",
            "cache_write_1h_cost_usd",
            "cache_read_cost_usd",
        )
    }
    assert sums["input_tokens"] > 0
    assert sums["output_tokens"] > 0
    assert sums["cost_usd"] > 0
    assert (summary["total"], summary["completed"], summary["failed"], summary["cancelled"]) == ("4", "4", "0", "0")
    assert (
        int(summary["input"]),
        int(summary["output"]),
        int(summary["cache_write_5m"]),
        int(summary["cache_write_1h"]),
        int(summary["cache_read"]),
        Decimal(summary["cost"]),
        Decimal(summary["input_cost"]),
        Decimal(summary["output_cost"]),
        Decimal(summary["write_cost"]),
        Decimal(summary["read_cost"]),
    ) == (
        sums["input_tokens"],
        sums["output_tokens"],
        sums["cache_creation_5m_input_tokens"],
        sums["cache_creation_1h_input_tokens"],
        sums["cache_read_input_tokens"],
        sums["cost_usd"],
        sums["input_cost_usd"],
        sums["output_cost_usd"],
        sums["cache_write_5m_cost_usd"] + sums["cache_write_1h_cost_usd"],
        sums["cache_read_cost_usd"],
    )
    prompt = sums["input_tokens"] + sums["cache_creation_input_tokens"] + sums["cache_read_input_tokens"]
    assert float(summary["hit_ratio"]) == pytest.approx(sums["cache_read_input_tokens"] / prompt, abs=5e-4)
    assert done.cache_hit_ratio == pytest.approx(sums["cache_read_input_tokens"] / prompt)
    assert done.cost_breakdown.output_usd == pytest.approx(float(sums["output_cost_usd"]), abs=5e-7)
    assert done.usage.cache_creation_5m_input_tokens == sums["cache_creation_5m_input_tokens"]
    assert (
        done.usage.input_tokens,
        done.usage.output_tokens,
        done.usage.cache_creation_input_tokens,
        done.usage.cache_read_input_tokens,
    ) == (
        sums["input_tokens"],
        sums["output_tokens"],
        sums["cache_creation_input_tokens"],
        sums["cache_read_input_tokens"],
    )
    assert done.cost_usd == pytest.approx(float(sums["cost_usd"]), abs=5e-7)


async def test_a_generation_call_past_its_deadline_is_retried_and_stores_one_conversation(
    database_url: str, tmp_path: Path, fake_api: FakeMessagesApi
) -> None:
    """DEADLINE_EXCEEDED on the batch service's call is transient: the item is retried and gets one conversation."""
    fake_api.update_config({"slow_seconds": 3.0})
    fake_api.inject(Fault.SLOW, match=IGNORED_401K)
    async with claude_services(
        database_url, tmp_path, fake_api, batch_overrides={"generation_deadline_seconds": 0.5}
    ) as services:
        stub = services.batch_stub
        job = await stub.CreateBatchJob(small_job(arcs=1, topics=1, concurrency=1, max_attempts=5))
        done = await wait_terminal(stub, job.id)

        assert (done.state, done.completed_items, done.failed_items) == (batch_pb2.BATCH_JOB_STATE_COMPLETED, 1, 0)
        [item] = await items_by_position(stub, job.id)
        assert item.attempts == 2
        retries = [e.item for e in await replay(stub, job.id) if e.item.kind == batch_pb2.ITEM_TRANSITION_KIND_RETRYING]
        assert [(r.attempt, r.error_code) for r in retries] == [(1, "DEADLINE_EXCEEDED")]
        assert "DEADLINE_EXCEEDED" in retries[0].error_message
        # The cancelled first call stored nothing; the retry stored the item's one conversation.
        rows = await fetch(
            database_url, "SELECT id FROM conversations WHERE request_id LIKE $1", f"batch-item/{item.id}/%"
        )
        assert [str(r["id"]) for r in rows] == [item.conversation_pk]


@pytest.mark.slow
async def test_a_rate_limited_item_pauses_every_claim_of_the_process_for_the_retry_delay(
    database_url: str, tmp_path: Path, fake_api: FakeMessagesApi
) -> None:
    """After a 429 with retry-after, the process claims no other item until the delay has passed."""
    retry_after = 2
    fake_api.update_config({"retry_after_seconds": retry_after})
    fake_api.inject(Fault.RATE_LIMITED, match=IGNORED_401K)
    async with claude_services(database_url, tmp_path, fake_api) as services:
        stub = services.batch_stub
        # Concurrency 1: without the process-wide pause the next item is claimed as soon as the first is re-queued.
        job = await stub.CreateBatchJob(small_job(arcs=1, topics=3, concurrency=1, max_attempts=3))
        done = await wait_terminal(stub, job.id)

        assert (done.state, done.completed_items, done.failed_items) == (batch_pb2.BATCH_JOB_STATE_COMPLETED, 3, 0)
        events = [e for e in await replay(stub, job.id) if e.WhichOneof("event") == "item"]
        [rate_limited] = [e for e in events if e.item.kind == batch_pb2.ITEM_TRANSITION_KIND_RETRYING]
        assert rate_limited.item.error_code == "RESOURCE_EXHAUSTED"
        assert "429" in rate_limited.item.error_message
        next_claim = next(e for e in events if e.sequence > rate_limited.sequence and e.item.kind == PROCESSING)
        paused = next_claim.time.ToDatetime() - rate_limited.time.ToDatetime()
        assert paused.total_seconds() >= retry_after * 0.95, f"next claim {paused} after the 429"
