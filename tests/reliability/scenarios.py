"""The six reliability scenarios, each at two scales: FAST (default test run) and FULL (`python -m
tests.reliability.full_suite`). Each one runs a job on a fresh cluster, injects its faults, waits for the job to end
with its log uploaded, and returns check_invariants()'s report plus its own scenario-specific checks."""

from __future__ import annotations

import asyncio
import enum
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tests.reliability.harness import (
    Cluster,
    ClusterSpec,
    Environment,
    ModelServerSpec,
    ScenarioReport,
    add_grouped,
    check_invariants,
    create_job,
    describe_faults,
    event_counts,
    guarded,
    job_progress,
    processing_items,
    wait_for_progress,
    wait_until_finished,
)
from tests.support.chaos import poll_until, random_moments, unanswered_requests
from tests.support.postgres import fetch


class Scale(enum.StrEnum):
    """FAST: a small job for the default test run. FULL: 200 items and more faults."""

    FAST = "fast"
    FULL = "full"


class ScenarioSkipped(Exception):
    """The environment cannot run this scenario (e.g. PostgreSQL is external and cannot be restarted)."""


@dataclass(frozen=True)
class Scenario:
    """A named scenario."""

    name: str
    summary: str
    run: Callable[[Environment, Scale, random.Random], Awaitable[ScenarioReport]]
    restarts_postgres: bool = False
    """True when the scenario restarts the PostgreSQL server (it must not share it with a concurrent scenario)."""


def seed_from_environment() -> int:
    """RELIABILITY_SEED when set (to replay a run), else a fresh random seed (printed with the results)."""
    value = os.environ.get("RELIABILITY_SEED")
    return int(value) if value else random.SystemRandom().randrange(1, 1_000_000)


def _finished_within(scale: Scale) -> float:
    return 150.0 if scale is Scale.FAST else 900.0


# --- 1. model faults ----------------------------------------------------------------------------------------------

MODEL_FAULT_MIX = {
    "overloaded": 0.20,
    "rate_limited": 0.10,
    "server_error": 0.05,
    "bad_gateway_html": 0.05,
    "unparseable": 0.03,
    "truncated": 0.02,
    "connection_reset": 0.01,
    "slow": 0.03,
}
PERMANENT_FAULTS = {"unparseable": "MODEL_OUTPUT_UNPARSEABLE", "truncated": "MODEL_OUTPUT_TRUNCATED"}
PERMANENT_TEXT = {
    "MODEL_OUTPUT_UNPARSEABLE": "model output is not parseable JSON",
    "MODEL_OUTPUT_TRUNCATED": "model output truncated at max_tokens",
}
TRANSIENT_FAULTS = ("overloaded", "rate_limited", "server_error", "bad_gateway_html", "connection_reset", "slow")


async def model_faults(env: Environment, scale: Scale, rng: random.Random) -> ScenarioReport:
    """A job while the model server answers with a fault mix; transient faults end in success, permanent ones in
    failed items naming MODEL_OUTPUT_UNPARSEABLE / MODEL_OUTPUT_TRUNCATED."""
    items = 200 if scale is Scale.FULL else 30
    spec = ClusterSpec(
        model=ModelServerSpec(
            latency=0.05, fault_mix=MODEL_FAULT_MIX, slow_seconds=3.0, retry_after=1, seed=rng.randrange(1 << 30)
        ),
        # A slow answer (3 s) is past the model timeout (1.5 s); ten tries make a transient streak practically
        # impossible to exhaust (0.49^10 per call, and the batch retries the item on top).
        # Structured output off: with the schema sent, the stand-in (like the API) never answers unparseable text,
        # and this scenario is about the replies that must be parsed.
        generation_env={
            "MODEL_STRUCTURED_OUTPUT": "off",
            "MODEL_TIMEOUT_SECONDS": "1.5",
            "MODEL_MAX_ATTEMPTS": "10",
            "MODEL_RETRY_BASE_SECONDS": "0.05",
            "MODEL_RETRY_MAX_SECONDS": "0.5",
        },
    )
    async with Cluster(env, spec, name="model-faults") as cluster:
        # However small the job, both permanent faults occur at least once.
        await cluster.inject("unparseable")
        await cluster.inject("truncated")
        started = time.monotonic()
        job_id = await create_job(cluster, name="model-faults", items=items, concurrency=16, max_attempts=5)
        unfinished = await guarded(wait_until_finished(env.database_url, job_id, within=_finished_within(scale)))
        wall = time.monotonic() - started
        stats = await cluster.model_stats()
        report = await check_invariants(
            cluster,
            job_id,
            scenario="1 model faults",
            faults=describe_faults(stats),
            expected_items=items,
            wall_seconds=wall,
            unfinished=unfinished,
        )
        faults: dict[str, int] = stats.get("faults", {})
        permanent_served = sum(faults.get(name, 0) for name in PERMANENT_FAULTS)
        transient_served = sum(faults.get(name, 0) for name in TRANSIENT_FAULTS)
        if transient_served == 0:
            report.violations.append("no transient fault was injected")
        for reason, count in report.failure_reasons.items():
            if reason not in PERMANENT_TEXT:
                report.violations.append(f"{count} item(s) failed for a non-permanent cause: {reason}")
        if report.failed != permanent_served:
            report.violations.append(
                f"{report.failed} failed items, but the model served {permanent_served} permanent faults "
                "(each should fail exactly its item; every transient one should end in success)"
            )
        rows = await fetch(
            env.database_url,
            "SELECT position, error_message FROM batch_items WHERE batch_job_id = $1 AND status = 'failed'",
            uuid.UUID(job_id),
        )
        add_grouped(
            report.violations,
            "failed item(s) not naming a permanent cause at step parse",
            [
                f"#{row['position']} {row['error_message']!r}"
                for row in rows
                if "(step parse)" not in row["error_message"]
                or not any(text in row["error_message"] for text in PERMANENT_TEXT.values())
            ],
            shown=1,
        )
        return report


# --- 2. batch service killed --------------------------------------------------------------------------------------


async def batch_killed(env: Environment, scale: Scale, rng: random.Random) -> ScenarioReport:
    """SIGKILL the (only) batch service at random moments during one job, restarting it each time."""
    items, kills = (200, 5) if scale is Scale.FULL else (30, 2)
    spec = ClusterSpec(model=ModelServerSpec(latency=0.5, seed=rng.randrange(1 << 30)))
    async with Cluster(env, spec, name="batch-killed") as cluster:
        replica = cluster.batches[0]
        started = time.monotonic()
        job_id = await create_job(
            cluster, name="batch-killed", items=items, concurrency=6 if scale is Scale.FAST else 16, max_attempts=10
        )
        held_at_kill: list[list[uuid.UUID]] = []

        async def chaos() -> None:
            for moment in random_moments(rng, kills, low=0.1, high=0.85, min_gap=0.1):
                progress = await wait_for_progress(env.database_url, job_id, moment, within=_finished_within(scale))
                if progress.state.terminal:
                    break
                replica.kill()
                # Nothing else runs items now: whatever is in processing was leased by the dead process.
                held_at_kill.append(await processing_items(env.database_url, job_id))
                await replica.start()
            await wait_until_finished(env.database_url, job_id, within=_finished_within(scale))

        unfinished = await guarded(chaos())
        wall = time.monotonic() - started
        in_flight = ", ".join(str(len(h)) for h in held_at_kill)
        report = await check_invariants(
            cluster,
            job_id,
            scenario="2 batch service SIGKILLed",
            faults=f"{len(held_at_kill)} × SIGKILL batch (items in flight: {in_flight})",
            expected_items=items,
            wall_seconds=wall,
            unfinished=unfinished,
        )
        if len(held_at_kill) < kills:
            report.violations.append(f"only {len(held_at_kill)} of {kills} kills happened before the job ended")
        if not any(held_at_kill):
            report.violations.append("no kill caught an item in flight")
        await _check_recovered(env, job_id, [i for held in held_at_kill for i in held], report)
        _expect_no_failures(report)
        return report


async def _check_recovered(env: Environment, job_id: str, held: list[uuid.UUID], report: ScenarioReport) -> None:
    """Each item a dead worker held was re-queued from its expired lease and then completed."""
    if not held:
        return
    rows = await fetch(
        env.database_url,
        """
        SELECT i.id, i.position, i.status,
               (SELECT count(*) FROM batch_job_events e WHERE e.batch_job_id = i.batch_job_id AND e.item_id = i.id
                AND e.kind = 'released') AS released
        FROM batch_items i WHERE i.id = ANY($1::uuid[])
        """,
        list(set(held)),
    )
    add_grouped(
        report.violations,
        "item(s) held by a killed worker never released",
        [f"#{row['position']}" for row in rows if row["released"] == 0],
    )
    add_grouped(
        report.violations,
        "item(s) held by a killed worker not completed",
        [f"#{row['position']} {row['status']}" for row in rows if row["status"] != "completed"],
    )


def _expect_no_failures(report: ScenarioReport) -> None:
    if report.failed:
        report.violations.append(f"{report.failed} item(s) failed; none should: {report.failed_text()}")


# --- 3. generation service killed ---------------------------------------------------------------------------------


# The batch service's own defaults for retrying an item (BATCH_DEFAULT_MAX_ATTEMPTS, BATCH_RETRY_*_SECONDS).
DEFAULT_ITEM_RETRIES = {"BATCH_RETRY_BASE_SECONDS": "2", "BATCH_RETRY_MAX_SECONDS": "120"}
DEFAULT_MAX_ATTEMPTS = 0  # 0: the job takes BATCH_DEFAULT_MAX_ATTEMPTS (3)
RESTART_DOWNTIME_SECONDS = 5.0


async def generation_killed(env: Environment, scale: Scale, rng: random.Random) -> ScenarioReport:
    """SIGKILL the generation service while model calls (~1 s each) are in flight, then restart it; items have
    20 attempts with quick retries, so this checks recovery and idempotency (no duplicate, no orphan)."""
    return await _generation_killed(env, scale, rng, defaults=False)


async def generation_killed_defaults(env: Environment, scale: Scale, rng: random.Random) -> ScenarioReport:
    """The same kill, restarted after 5 s (as a deploy would), with the batch service's default item retry policy
    (3 attempts, 2 s base backoff)."""
    return await _generation_killed(env, scale, rng, defaults=True)


async def _generation_killed(env: Environment, scale: Scale, rng: random.Random, *, defaults: bool) -> ScenarioReport:
    items, kills = (200, 2) if scale is Scale.FULL else (24, 1)
    if defaults:
        kills = 1  # one restart is enough to fail most of the queue (bug B in docs/reliability.md)
    spec = ClusterSpec(
        model=ModelServerSpec(latency=1.0, seed=rng.randrange(1 << 30)),
        batch_env=DEFAULT_ITEM_RETRIES if defaults else {},
    )
    name = "generation-killed-defaults" if defaults else "generation-killed"
    async with Cluster(env, spec, name=name) as cluster:
        generation = cluster.generation
        assert generation is not None
        started = time.monotonic()
        job_id = await create_job(
            cluster, name=name, items=items, concurrency=8, max_attempts=DEFAULT_MAX_ATTEMPTS if defaults else 20
        )
        in_flight: list[int] = []
        held: list[uuid.UUID] = []

        async def calls_in_flight() -> tuple[int, list[uuid.UUID]] | None:
            waiting = unanswered_requests(await cluster.model_stats())
            if waiting == 0:
                return None
            return waiting, await processing_items(env.database_url, job_id)

        async def chaos() -> None:
            for moment in random_moments(rng, kills, low=0.15, high=0.6, min_gap=0.2):
                progress = await wait_for_progress(env.database_url, job_id, moment, within=_finished_within(scale))
                if progress.state.terminal:
                    break
                calls, processing = await poll_until(
                    calls_in_flight, within=30, what="model calls in flight", interval=0.02
                )
                generation.kill()
                in_flight.append(calls)
                held.extend(processing)
                if defaults:
                    await asyncio.sleep(RESTART_DOWNTIME_SECONDS)  # a restart as in a deploy: down for a few seconds
                await generation.start()
            await wait_until_finished(env.database_url, job_id, within=_finished_within(scale))

        unfinished = await guarded(chaos())
        wall = time.monotonic() - started
        report = await check_invariants(
            cluster,
            job_id,
            scenario="3b generation service SIGKILLed, default retries"
            if defaults
            else "3 generation service SIGKILLed",
            faults=f"{len(in_flight)} × SIGKILL generation (model calls in flight: {', '.join(map(str, in_flight))})",
            expected_items=items,
            wall_seconds=wall,
            unfinished=unfinished,
        )
        if len(in_flight) < kills or not any(in_flight):
            report.violations.append(f"kills with model calls in flight: {in_flight}, {kills} expected")
        # Items in flight at the kill are tried again: as a retry (a failed attempt), or put back without using an
        # attempt when the batch service found the generation service unreachable.
        counts = await event_counts(env.database_url, job_id)
        if counts["retrying"] + counts["released"] == 0:
            report.violations.append("no item was retried after the generation service died")
        rows = await fetch(
            env.database_url,
            "SELECT position, status FROM batch_items WHERE id = ANY($1::uuid[]) AND status <> 'completed'",
            held,
        )
        add_grouped(
            report.violations,
            "item(s) in flight at a kill not completed",
            [f"#{row['position']} {row['status']}" for row in rows],
        )
        _expect_no_failures(report)
        report.notes.append(f"{len(held)} item(s) in flight at the kills")
        return report


# --- 4. PostgreSQL restarted --------------------------------------------------------------------------------------


async def postgres_restarted(env: Environment, scale: Scale, rng: random.Random) -> ScenarioReport:
    """Restart PostgreSQL (fast shutdown: every session dropped) in mid-job; both services reconnect by themselves."""
    embedded = env.postgres.embedded
    if embedded is None:
        raise ScenarioSkipped("PostgreSQL is external (DATABASE_URL): the suite cannot restart it")
    items, restarts = (200, 2) if scale is Scale.FULL else (30, 2)
    spec = ClusterSpec(model=ModelServerSpec(latency=0.5, seed=rng.randrange(1 << 30)))
    async with Cluster(env, spec, name="postgres-restarted") as cluster:
        started = time.monotonic()
        job_id = await create_job(cluster, name="postgres-restarted", items=items, concurrency=8, max_attempts=20)
        in_flight: list[int] = []

        async def chaos() -> None:
            for moment in random_moments(rng, restarts, low=0.2, high=0.7, min_gap=0.2):
                progress = await wait_for_progress(env.database_url, job_id, moment, within=_finished_within(scale))
                if progress.state.terminal:
                    break
                in_flight.append(progress.counters.processing)
                await asyncio.to_thread(embedded.restart)
            await wait_until_finished(env.database_url, job_id, within=_finished_within(scale))

        unfinished = await guarded(chaos())
        wall = time.monotonic() - started
        report = await check_invariants(
            cluster,
            job_id,
            scenario="4 PostgreSQL restarted",
            faults=f"{len(in_flight)} × PostgreSQL restart (items in flight: {', '.join(map(str, in_flight))})",
            expected_items=items,
            wall_seconds=wall,
            unfinished=unfinished,
        )
        if len(in_flight) < restarts:
            report.violations.append(f"only {len(in_flight)} of {restarts} restarts happened before the job ended")
        _expect_no_failures(report)
        return report


# --- 5. S3 unavailable --------------------------------------------------------------------------------------------


async def s3_unavailable(env: Environment, scale: Scale, rng: random.Random) -> ScenarioReport:
    """Take S3 away from both services for a while in mid-job, and again at job end (the batch service's longer,
    so the job ends while its log cannot be uploaded); nothing is lost and the log arrives once S3 is back."""
    items, outage = (200, 6.0) if scale is Scale.FULL else (30, 3.0)
    spec = ClusterSpec(model=ModelServerSpec(latency=0.5, seed=rng.randrange(1 << 30)))
    async with Cluster(env, spec, name="s3-unavailable") as cluster:
        dsn = env.database_url
        started = time.monotonic()
        job_id = await create_job(
            cluster, name="s3-unavailable", items=items, concurrency=6 if scale is Scale.FAST else 16, max_attempts=20
        )
        proxies = (cluster.generation_s3, cluster.batch_s3)
        seen = _S3Outages()

        async def chaos() -> None:
            # Mid-job: both services lose S3 for `outage` seconds.
            await wait_for_progress(dsn, job_id, rng.uniform(0.2, 0.4), within=_finished_within(scale))
            refused_before = cluster.generation_s3.proxy.refused
            for proxy in proxies:
                proxy.set_available(False)
            await asyncio.sleep(outage)  # the outage itself: S3 stays away this long whatever happens meanwhile
            for proxy in proxies:
                proxy.set_available(True)
            seen.mid_job_refused = cluster.generation_s3.proxy.refused - refused_before

            # Job end: both lose S3 again while part of the job remains (every item needs S3, so it cannot end
            # meanwhile); the generation service gets it back first, so the last items complete and the job ends
            # while the batch service still cannot upload the log.
            await wait_for_progress(dsn, job_id, 0.6, within=_finished_within(scale))
            log_refused_before = cluster.batch_s3.proxy.refused
            for proxy in proxies:
                proxy.set_available(False)
            at_cut = await job_progress(dsn, job_id)
            seen.ended_before_cut = at_cut is not None and at_cut.state.terminal
            if seen.ended_before_cut:
                for proxy in proxies:
                    proxy.set_available(True)
                await wait_until_finished(dsn, job_id, within=_finished_within(scale))
                return
            await asyncio.sleep(outage)
            cluster.generation_s3.set_available(True)
            ended = await wait_for_progress(dsn, job_id, 1.0, within=_finished_within(scale))

            async def upload_refused() -> bool:
                return cluster.batch_s3.proxy.refused > log_refused_before

            await poll_until(upload_refused, within=30, what="a refused log upload")
            seen.log_uploaded_while_down = (await job_progress(dsn, job_id) or ended).log_uploaded
            seen.log_refused = cluster.batch_s3.proxy.refused - log_refused_before
            cluster.batch_s3.set_available(True)
            await wait_until_finished(dsn, job_id, within=_finished_within(scale))

        unfinished = await guarded(chaos())
        for proxy in proxies:
            proxy.set_available(True)
        wall = time.monotonic() - started
        report = await check_invariants(
            cluster,
            job_id,
            scenario="5 S3 unavailable",
            faults=f"S3 down {outage:.0f} s mid-job ({seen.mid_job_refused} connections refused) and at job end "
            f"(log upload refused {seen.log_refused}×)",
            expected_items=items,
            wall_seconds=wall,
            unfinished=unfinished,
        )
        if seen.mid_job_refused == 0:
            report.violations.append("the mid-job outage refused no S3 connection of the generation service")
        if seen.ended_before_cut:
            report.violations.append("the job ended before S3 was cut at job end (the scenario could not inject it)")
        elif seen.log_refused == 0:
            report.violations.append("no log upload was attempted while S3 was down at job end")
        if seen.log_uploaded_while_down:
            report.violations.append("the log was marked uploaded while S3 was unreachable")
        retried = await fetch(
            dsn,
            "SELECT count(*) AS n FROM batch_job_events WHERE batch_job_id = $1 AND kind = 'retrying' "
            "AND error_message LIKE '%S3%'",
            uuid.UUID(job_id),
        )
        report.notes.append(f"{retried[0]['n']} item attempts retried because S3 was down")
        _expect_no_failures(report)
        return report


@dataclass
class _S3Outages:
    """What the S3 scenario observed."""

    mid_job_refused: int = 0
    ended_before_cut: bool = False
    log_refused: int = 0
    log_uploaded_while_down: bool = False


# --- 6. two replicas, one killed ----------------------------------------------------------------------------------


async def replica_killed(env: Environment, scale: Scale, rng: random.Random) -> ScenarioReport:
    """Two batch replicas share a job; one is SIGKILLed for good; the survivor finishes the dead one's leased items
    once their leases (2 s) expire."""
    items = 200 if scale is Scale.FULL else 30
    spec = ClusterSpec(
        model=ModelServerSpec(latency=0.5, seed=rng.randrange(1 << 30)),
        batch_replicas=2,
        batch_env={"BATCH_LEASE_SECONDS": "2", "BATCH_WORKER_CONCURRENCY": "5"},
    )
    async with Cluster(env, spec, name="replica-killed") as cluster:
        dsn = env.database_url
        started = time.monotonic()
        job_id = await create_job(cluster, name="replica-killed", items=items, concurrency=10, max_attempts=10)
        held: list[uuid.UUID] = []

        async def both_hold_items() -> bool:
            first = await processing_items(dsn, job_id, owner_prefix="batch-0/")
            second = await processing_items(dsn, job_id, owner_prefix="batch-1/")
            return bool(first) and bool(second)

        async def chaos() -> None:
            await wait_for_progress(dsn, job_id, rng.uniform(0.2, 0.5), within=_finished_within(scale))
            await poll_until(both_hold_items, within=30, what="both replicas holding items", interval=0.02)
            cluster.batches[0].kill()
            held.extend(await processing_items(dsn, job_id, owner_prefix="batch-0/"))
            await wait_until_finished(dsn, job_id, within=_finished_within(scale))

        unfinished = await guarded(chaos())
        wall = time.monotonic() - started
        report = await check_invariants(
            cluster,
            job_id,
            scenario="6 two replicas, one SIGKILLed",
            faults=f"SIGKILL 1 of 2 batch replicas, holding {len(held)} leased item(s)",
            expected_items=items,
            wall_seconds=wall,
            unfinished=unfinished,
        )
        if not held:
            report.violations.append("the killed replica held no item")
        await _check_recovered(env, job_id, held, report)
        rows = await fetch(
            dsn,
            """
            SELECT DISTINCT ON (item_id) item_id, position, message FROM batch_job_events
            WHERE batch_job_id = $1 AND kind = 'processing' AND item_id = ANY($2::uuid[])
            ORDER BY item_id, sequence DESC
            """,
            uuid.UUID(job_id),
            held,
        )
        add_grouped(
            report.violations,
            "item(s) of the killed replica not last claimed by the survivor",
            [f"#{row['position']} {row['message']!r}" for row in rows if "on worker batch-1/" not in row["message"]],
        )
        _expect_no_failures(report)
        return report


SCENARIOS = [
    Scenario(
        "model_faults", "model faults (529, 429, 5xx, HTML 502, unparseable, truncated, reset, slow)", model_faults
    ),
    Scenario("batch_killed", "batch service SIGKILLed at random moments and restarted", batch_killed),
    Scenario("generation_killed", "generation service SIGKILLed mid-call and restarted", generation_killed),
    Scenario(
        "generation_killed_defaults",
        "generation service SIGKILLed and restarted, with the default item retry policy",
        generation_killed_defaults,
    ),
    Scenario("postgres_restarted", "PostgreSQL restarted mid-job", postgres_restarted, restarts_postgres=True),
    Scenario("s3_unavailable", "S3 unavailable mid-job and at job end", s3_unavailable),
    Scenario("replica_killed", "two batch replicas, one SIGKILLed", replica_killed),
]
