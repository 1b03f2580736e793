"""Shared machinery of the reliability scenarios: a cluster of real processes, job helpers, and the invariants.

A Cluster is the fake Messages API (a process), one generation service and N batch services (`convgen serve`,
separate processes), real PostgreSQL, and moto's S3 over HTTP behind two TCP proxies (one per service, so S3 can be
taken away from either). check_invariants() is the one function every scenario ends with.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import aiohttp
import asyncpg
import grpc

from batch_service.domain import JobRow
from batch_service.store import jobs as job_store
from convgen.blobs import BlobNotFound
from convgen.blobs.s3 import S3BlobStore
from convgen.catalog.models import NIL_UUID
from convgen.db.database import is_connectivity_error
from convgen.v1 import batch_pb2, batch_pb2_grpc, common_pb2
from tests.batch.helpers import job_counters
from tests.support.chaos import poll_until
from tests.support.moto_s3 import FAKE_ACCESS_KEY_ID, FAKE_AWS_ENV, FAKE_REGION, FAKE_SECRET_ACCESS_KEY
from tests.support.postgres import PostgresForTests, fetch
from tests.support.processes import FakeApiProcess, ServiceProcess, clean_environment
from tests.support.tcp_proxy import ThreadedTcpProxy

if TYPE_CHECKING:
    from convgen.v1.batch_pb2_grpc import BatchServiceAsyncStub

_T = TypeVar("_T")

LOG_BUCKET = "batch-logs"
ACTIVE_STATES = ("queued", "processing")
TERMINAL_JOB_STATES = ("completed", "failed", "cancelled")
_SEQUENCE = re.compile(r" \[(\d{6,})\] ")
_CHANNEL_OPTIONS = [
    # The test's channels reconnect quickly to a replica restarted on the same port.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


@dataclass
class Environment:
    """What a scenario runs against: the PostgreSQL server, a fresh database, moto's S3 and a work directory."""

    postgres: PostgresForTests
    database_url: str
    s3_host: str
    s3_port: int
    workdir: Path
    start_gate: asyncio.Semaphore | None = None
    """Limits how many clusters start their processes at once (when scenarios run concurrently)."""

    @property
    def s3_endpoint(self) -> str:
        """moto's own endpoint (the services reach it through proxies; checks read it directly)."""
        return f"http://{self.s3_host}:{self.s3_port}"


@dataclass(frozen=True)
class ModelServerSpec:
    """How the fake Messages API behaves."""

    latency: float = 0.05
    jitter: float = 0.2
    fault_mix: Mapping[str, float] = field(default_factory=dict)
    slow_seconds: float = 30.0
    retry_after: int = 1
    seed: int = 7

    def args(self) -> list[str]:
        """Command-line arguments of `python -m tests.support.messages_api`."""
        return [
            "--latency",
            str(self.latency),
            "--jitter",
            str(self.jitter),
            "--seed",
            str(self.seed),
            "--fault-mix",
            json.dumps(dict(self.fault_mix)),
            "--slow-seconds",
            str(self.slow_seconds),
            "--retry-after",
            str(self.retry_after),
        ]


@dataclass(frozen=True)
class ClusterSpec:
    """A cluster's model server, replica count and extra settings per service (env var → value)."""

    model: ModelServerSpec = field(default_factory=ModelServerSpec)
    batch_replicas: int = 1
    generation_env: Mapping[str, str] = field(default_factory=dict)
    batch_env: Mapping[str, str] = field(default_factory=dict)


# Quick timings for every cluster; scenarios override what they need.
BASE_ENV = {
    "LISTEN_HOST": "127.0.0.1",
    "LOG_FORMAT": "json",
    "LOG_LEVEL": "INFO",
    "DATABASE_POOL_MIN_SIZE": "1",
    "DATABASE_POOL_MAX_SIZE": "10",
    "SHUTDOWN_GRACE_SECONDS": "2",
    "BLOB_STORE": "s3",
    "AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY_ID,
    "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_ACCESS_KEY,
    "AWS_REGION": FAKE_REGION,
}
GENERATION_ENV = {
    "MODEL_CLIENT": "anthropic",
    "ANTHROPIC_API_KEY": "test-key",
    "MODEL_TIMEOUT_SECONDS": "10",
    "MODEL_MAX_ATTEMPTS": "4",
    "MODEL_RETRY_BASE_SECONDS": "0.05",
    "MODEL_RETRY_MAX_SECONDS": "0.5",
    # A killed generation process holds its request_ids this long; the default 30 s would dominate the suite.
    "GENERATION_CLAIM_LEASE_SECONDS": "5",
}
BATCH_ENV = {
    "BATCH_LEASE_SECONDS": "2",
    "BATCH_POLL_SECONDS": "0.5",
    "BATCH_RETRY_BASE_SECONDS": "0.2",
    "BATCH_RETRY_MAX_SECONDS": "2",
}


# How long a service process may take to serve (generous: a loaded 2-core CI machine starts Python slowly).
STARTUP_SECONDS = 120.0


class Cluster:
    """The fake Messages API, one generation service and N batch services, each a separate OS process."""

    def __init__(self, env: Environment, spec: ClusterSpec, *, name: str) -> None:
        self.env = env
        self.spec = spec
        self.workdir = env.workdir / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.api = FakeApiProcess(self.workdir, spec.model.args())
        self.generation_s3 = ThreadedTcpProxy(env.s3_host, env.s3_port)
        self.batch_s3 = ThreadedTcpProxy(env.s3_host, env.s3_port)
        self.generation: ServiceProcess | None = None
        self.batches: list[ServiceProcess] = []
        self._channels: dict[int, grpc.aio.Channel] = {}
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        try:
            if self.env.start_gate is None:
                await self.start()
            else:
                async with self.env.start_gate:
                    await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Starts the fake API, the S3 proxies, the generation service and the batch replicas."""
        self._http = aiohttp.ClientSession()
        base_url = await self.api.start()
        self.generation_s3.start()
        self.batch_s3.start()
        common = {**BASE_ENV, "DATABASE_URL": self.env.database_url, "CONVGEN_DATA_DIR": str(self.workdir / "data")}
        generation_env = clean_environment(
            {
                **common,
                **GENERATION_ENV,
                "ANTHROPIC_BASE_URL": base_url,
                "S3_ENDPOINT_URL": self.generation_s3.endpoint_url,
                "INSTANCE_NAME": "generation",
                **self.spec.generation_env,
            }
        )
        self.generation = ServiceProcess("generation", generation_env, self.workdir, name="generation")
        await self.generation.start(within=STARTUP_SECONDS)
        for index in range(self.spec.batch_replicas):
            batch_env = clean_environment(
                {
                    **common,
                    **BATCH_ENV,
                    "GENERATION_TARGET": self.generation.address,
                    "S3_ENDPOINT_URL": self.batch_s3.endpoint_url,
                    "INSTANCE_NAME": f"batch-{index}",
                    **self.spec.batch_env,
                }
            )
            replica = ServiceProcess("batch", batch_env, self.workdir, name=f"batch-{index}")
            await replica.start(within=STARTUP_SECONDS)
            self.batches.append(replica)

    async def stop(self) -> None:
        """Stops everything this cluster started (safe to call after a partial start or twice)."""
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        for process in [*self.batches, self.generation]:
            if process is not None:
                process.kill()
        self.api.stop()
        self.generation_s3.stop()
        self.batch_s3.stop()
        if self._http is not None:
            await self._http.close()
            self._http = None

    # --- talking to the services ----------------------------------------------------------------------------------

    def stub(self, replica: int) -> BatchServiceAsyncStub:
        """A stub on one batch replica (the channel reconnects by itself after a restart on the same port)."""
        channel = self._channels.get(replica)
        if channel is None:
            channel = grpc.aio.insecure_channel(self.batches[replica].address, options=_CHANNEL_OPTIONS)
            self._channels[replica] = channel
        return batch_pb2_grpc.BatchServiceStub(channel)

    def alive_replica(self) -> int:
        """The index of a batch replica whose process is running."""
        for index, replica in enumerate(self.batches):
            if replica.process is not None and replica.process.poll() is None:
                return index
        raise RuntimeError("no batch replica is running")

    async def call(self, rpc: Callable[[BatchServiceAsyncStub], Awaitable[_T]], *, within: float = 30.0) -> _T:
        """Calls a BatchService RPC on a live replica, retrying while it answers UNAVAILABLE (restarts, PG down)."""
        deadline = time.monotonic() + within
        while True:
            try:
                return await rpc(self.stub(self.alive_replica()))
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.2)

    async def model_stats(self) -> dict[str, Any]:
        """The fake Messages API's counters (GET /_fake/stats)."""
        assert self._http is not None
        async with self._http.get(f"{self.api.base_url}/_fake/stats") as response:
            response.raise_for_status()
            stats: dict[str, Any] = await response.json()
            return stats

    async def inject(self, fault: str, *, times: int = 1) -> None:
        """Queues a scripted fault for the next matching model calls (POST /_fake/inject)."""
        assert self._http is not None
        async with self._http.post(
            f"{self.api.base_url}/_fake/inject", json={"fault": fault, "times": times}
        ) as response:
            response.raise_for_status()

    def service_logs(self) -> str:
        """Everything the services logged, for diagnosis."""
        processes = [p for p in [self.generation, *self.batches] if p is not None]
        return "\n".join(p.log_text() for p in processes)


# --- database helpers -------------------------------------------------------------------------------------------


async def fetch_if_up(dsn: str, query: str, *args: Any) -> list[asyncpg.Record] | None:
    """Like fetch, but None while PostgreSQL is unreachable (during a restart)."""
    try:
        return await fetch(dsn, query, *args)
    except Exception as error:
        if is_connectivity_error(error):
            return None
        raise


async def job_progress(dsn: str, job_id: str) -> JobRow | None:
    """The job row (state, counters, log upload), or None while PostgreSQL is unreachable."""
    rows = await fetch_if_up(dsn, "SELECT * FROM batch_jobs WHERE id = $1", uuid.UUID(job_id))
    return job_store.job_row(rows[0]) if rows else None


# An item is stuck when its lease expired this long ago without being recovered, or when due queued items have not
# been claimed for this long although the job has free concurrency. The engine recovers leases within half a lease
# (BATCH_LEASE_SECONDS=2 here) and claims within a poll interval (0.5 s); a restart or an outage costs a few seconds.
STUCK_AFTER_SECONDS = 15.0


class JobStuck(Exception):
    """The job stopped making progress for a reason that will not go away by itself."""


async def stuck_reason(dsn: str, job_id: str) -> str | None:
    """Why the job is stuck (items the engine should have picked up long ago), or None."""
    rows = await fetch_if_up(
        dsn,
        """
        SELECT j.state, j.processing_items, j.concurrency,
               (SELECT count(*) FROM batch_items i WHERE i.batch_job_id = j.id AND i.status = 'processing'
                AND i.lease_expires_at < clock_timestamp() - make_interval(secs => $2)) AS unrecovered,
               (SELECT count(*) FROM batch_items i WHERE i.batch_job_id = j.id AND i.status = 'queued'
                AND i.next_attempt_at < clock_timestamp()) AS due,
               (SELECT extract(epoch FROM clock_timestamp() - max(e.created_at))::float8 FROM batch_job_events e
                WHERE e.batch_job_id = j.id) AS idle_seconds
        FROM batch_jobs j WHERE j.id = $1
        """,
        uuid.UUID(job_id),
        STUCK_AFTER_SECONDS,
    )
    if not rows:
        return None
    r = rows[0]
    if r["unrecovered"]:
        return (
            f"{r['unrecovered']} item(s) still processing although their lease expired more than "
            f"{STUCK_AFTER_SECONDS:.0f} s ago (nobody recovers expired leases)"
        )
    idle = r["idle_seconds"] or 0.0
    if r["state"] == "running" and r["due"] and r["processing_items"] < r["concurrency"] and idle > STUCK_AFTER_SECONDS:
        return (
            f"{r['due']} due item(s) queued and {r['concurrency'] - r['processing_items']} free slot(s), "
            f"but no claim (no event at all) for {idle:.0f} s (nobody claims)"
        )
    return None


async def _poll_job(dsn: str, job_id: str, done: Callable[[JobRow], bool], *, within: float, what: str) -> JobRow:
    """Polls the job until done(progress); raises JobStuck when it is stuck, TimeoutError after `within`."""

    async def probe() -> JobRow | None:
        progress = await job_progress(dsn, job_id)
        if progress is not None and done(progress):
            return progress
        stuck = await stuck_reason(dsn, job_id)
        if stuck is not None:
            raise JobStuck(f"job stuck while waiting for {what}: {stuck}; last seen {progress}")
        return None

    return await poll_until(probe, within=within, what=f"{what} (job {job_id})", interval=0.2)


async def wait_for_progress(dsn: str, job_id: str, fraction: float, *, within: float) -> JobRow:
    """Waits until at least this fraction of the job's items is terminal (or the job ended)."""
    return await _poll_job(
        dsn,
        job_id,
        lambda p: p.counters.total - p.counters.remaining >= fraction * p.counters.total or p.state.terminal,
        within=within,
        what=f"{fraction:.0%} of the items done",
    )


async def wait_until_finished(dsn: str, job_id: str, *, within: float) -> JobRow:
    """Waits until the job is terminal and its log is uploaded."""
    return await _poll_job(
        dsn,
        job_id,
        lambda p: p.state.terminal and p.log_uploaded,
        within=within,
        what="the job's end with its log uploaded",
    )


async def guarded(body: Awaitable[object]) -> str | None:
    """Runs a scenario's fault injection and waits; None when the job finished, else why not (stuck, timed out)."""
    try:
        await body
    except (JobStuck, TimeoutError) as error:
        return f"{type(error).__name__}: {error}"
    return None


async def processing_items(dsn: str, job_id: str, *, owner_prefix: str = "") -> list[uuid.UUID]:
    """Items of the job in processing now (leased by owners starting with owner_prefix)."""
    rows = await fetch(
        dsn,
        "SELECT id FROM batch_items WHERE batch_job_id = $1 AND status = 'processing' AND lease_owner LIKE $2",
        uuid.UUID(job_id),
        f"{owner_prefix}%",
    )
    return [r["id"] for r in rows]


# --- jobs -------------------------------------------------------------------------------------------------------


async def parameter_sets(dsn: str, count: int) -> list[common_pb2.GenerationParameters]:
    """count distinct persona × arc × topic sets (tier template, auto-selected template) from the demo catalog."""
    personas = [r["id"] for r in await fetch(dsn, "SELECT id FROM personas ORDER BY persona_key")]
    arcs = [
        r["id"]
        for r in await fetch(
            dsn,
            """
            SELECT a.id FROM emotional_arcs a
            WHERE EXISTS (SELECT 1 FROM prompt_templates t WHERE t.arc_key = a.arc_key AND t.tier = 'template'
                          AND t.active)
            ORDER BY a.arc_key
            """,
        )
    ]
    topics = [r["id"] for r in await fetch(dsn, "SELECT id FROM training_topics ORDER BY topic_key")]
    combinations = list(itertools.islice(itertools.product(personas, arcs, topics), count))
    if len(combinations) < count:
        raise ValueError(f"the catalog has only {len(combinations)} parameter sets, {count} asked for")
    return [
        common_pb2.GenerationParameters(
            persona_id=str(persona),
            emotional_arc_id=str(arc),
            training_topic_id=str(topic),
            tier=common_pb2.TIER_TEMPLATE,
            template_id=str(NIL_UUID),
        )
        for persona, arc, topic in combinations
    ]


async def create_job(cluster: Cluster, *, name: str, items: int, concurrency: int, max_attempts: int) -> str:
    """Creates and starts a job of `items` distinct parameter sets; returns its id."""
    parameters = await parameter_sets(cluster.env.database_url, items)
    request = batch_pb2.CreateBatchJobRequest(
        name=name,
        request_id=f"reliability/{name}/{uuid.uuid4()}",
        parameter_list=batch_pb2.ParameterList(items=parameters),
        concurrency=concurrency,
        max_attempts=max_attempts,
        error_policy=batch_pb2.ERROR_POLICY_CONTINUE,
    )
    job = await cluster.call(lambda stub: stub.CreateBatchJob(request))
    assert job.total_items == items
    return str(job.id)


# --- the report and the invariants --------------------------------------------------------------------------------


@dataclass
class ScenarioReport:
    """What one scenario run did and found."""

    scenario: str
    faults: str
    items: int
    completed: int = 0
    failed: int = 0
    failure_reasons: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    lost: int = 0
    stuck: int = 0
    wall_seconds: float = 0.0
    model_calls: int = 0
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    workdir: Path | None = None

    @property
    def ok(self) -> bool:
        """True when every invariant held."""
        return not self.violations

    def failed_text(self) -> str:
        """'3 (MODEL_OUTPUT_UNPARSEABLE ×2, MODEL_OUTPUT_TRUNCATED ×1)'."""
        if not self.failure_reasons:
            return str(self.failed)
        reasons = ", ".join(f"{reason} ×{n}" for reason, n in self.failure_reasons.most_common())
        return f"{self.failed} ({reasons})"

    def explain(self) -> str:
        """The violations (and where the service logs are), for an assertion message."""
        lines = [f"{self.scenario}: {len(self.violations)} invariant violation(s):"]
        lines += [f"  - {v}" for v in self.violations]
        if self.workdir is not None:
            lines.append(f"  service logs under {self.workdir}")
        return "\n".join(lines)


@dataclass(frozen=True)
class _Item:
    id: uuid.UUID
    position: int
    status: str
    run: int
    error_code: str | None
    error_message: str | None
    conversation_pk: uuid.UUID | None

    @property
    def request_id(self) -> str:
        return f"batch-item/{self.id}/run-{self.run}"


async def check_invariants(
    cluster: Cluster,
    job_id: str,
    *,
    scenario: str,
    faults: str,
    expected_items: int,
    wall_seconds: float,
    unfinished: str | None = None,
) -> ScenarioReport:
    """Checks the invariants every scenario must end with; returns the report (violations listed, not raised).

    - every item terminal (none queued or processing) and the job terminal;
    - completed items = conversations created for the job's items: at most one per item, none orphaned, each the
      item's batch_items.conversation_id, which is a conversations.id (the primary key, never the business key);
    - each stored conversation's raw and final blobs are in S3;
    - every failed item carries a specific message (not empty, no "Unknown error", no UNKNOWN);
    - the job's counters equal the item states, in the table, in GetBatchJob and in the last event;
    - the log blob batch-logs/{job_id}/log.txt exists with one line per batch_job_events row and the summary line.
    """
    dsn = cluster.env.database_url
    job_uuid = uuid.UUID(job_id)
    report = ScenarioReport(
        scenario=scenario, faults=faults, items=expected_items, wall_seconds=wall_seconds, workdir=cluster.workdir
    )
    violations = report.violations
    if unfinished is not None:
        violations.append(f"the job did not finish: {unfinished}")

    items = [
        _Item(
            id=r["id"],
            position=r["position"],
            status=r["status"],
            run=r["run"],
            error_code=r["error_code"],
            error_message=r["error_message"],
            conversation_pk=r["conversation_id"],
        )
        for r in await fetch(
            dsn,
            "SELECT id, position, status, run, error_code, error_message, conversation_id FROM batch_items "
            "WHERE batch_job_id = $1 ORDER BY position",
            job_uuid,
        )
    ]
    by_status = Counter(i.status for i in items)
    report.completed = by_status["completed"]
    report.failed = by_status["failed"]
    report.stuck = sum(by_status[s] for s in ACTIVE_STATES)
    lost: set[uuid.UUID] = set()
    if len(items) != expected_items:
        violations.append(f"the job has {len(items)} items, {expected_items} expected")
        report.lost += max(0, expected_items - len(items))
    if report.stuck:
        stuck = [f"#{i.position} {i.status}" for i in items if i.status in ACTIVE_STATES]
        violations.append(f"{report.stuck} item(s) not terminal: {', '.join(stuck[:10])}")
    if by_status["cancelled"]:
        violations.append(f"{by_status['cancelled']} item(s) cancelled in a job nobody cancelled")
        lost.update(i.id for i in items if i.status == "cancelled")

    # Conversations of the job's items, found by request id (batch-item/<item id>/run-<n>).
    conversations = await fetch(
        dsn,
        """
        SELECT c.id, c.conversation_id, c.request_id, c.raw_bucket, c.raw_key, c.final_bucket, c.final_key,
               i.id AS item_id
        FROM conversations c
        JOIN batch_items i ON c.request_id LIKE 'batch-item/%' AND split_part(c.request_id, '/', 2) = i.id::text
        WHERE i.batch_job_id = $1
        """,
        job_uuid,
    )
    item_by_id = {i.id: i for i in items}
    per_item = Counter(c["item_id"] for c in conversations)
    extra = [item_by_id[item_id] for item_id, n in per_item.items() if n > 1]
    if extra:
        violations.append(
            "items with more than one conversation: "
            + ", ".join(f"#{i.position} ×{per_item[i.id]}" for i in extra[:10])
        )
    orphans = [
        c
        for c in conversations
        if item_by_id[c["item_id"]].status != "completed" or item_by_id[c["item_id"]].conversation_pk != c["id"]
    ]
    if orphans:
        violations.append(
            f"{len(orphans)} orphan conversation(s) (not their completed item's conversation_id): "
            + ", ".join(f"{c['request_id']} pk={c['id']}" for c in orphans[:5])
        )
    # request_id is unique, so a second conversation of an item is always an orphan.
    report.duplicates = len(orphans)

    # Every completed item points at a conversations.id (the primary key), whose business key differs.
    pk_rows = await fetch(
        dsn,
        """
        SELECT i.id AS item_id, c.id, c.conversation_id, c.request_id
        FROM batch_items i LEFT JOIN conversations c ON c.id = i.conversation_id
        WHERE i.batch_job_id = $1 AND i.conversation_id IS NOT NULL
        """,
        job_uuid,
    )
    own = {c["id"] for c in conversations}
    not_pk, business_key, foreign, not_completed = [], [], [], []
    for row in pk_rows:
        item = item_by_id[row["item_id"]]
        if row["id"] is None:
            not_pk.append(f"#{item.position} ({item.conversation_pk})")
            lost.add(item.id)
        elif row["id"] == row["conversation_id"]:
            business_key.append(f"#{item.position}")
        elif row["id"] not in own:
            foreign.append(f"#{item.position} → {row['request_id']}")
            lost.add(item.id)
        if item.status != "completed":
            not_completed.append(f"#{item.position} {item.status}")
    add_grouped(violations, "item(s) whose conversation_id is not a conversations.id", not_pk)
    add_grouped(violations, "item(s) whose conversation pk equals its business key", business_key)
    add_grouped(violations, "item(s) pointing at another item's conversation", foreign)
    add_grouped(violations, "item(s) not completed but with a conversation_id", not_completed)
    completed_with_own = {
        i.id for i in items if i.status == "completed" and i.conversation_pk is not None and i.conversation_pk in own
    }
    missing = [i for i in items if i.status == "completed" and i.id not in completed_with_own]
    if missing:
        violations.append(f"{len(missing)} completed item(s) without their own conversation")
        lost.update(i.id for i in missing)
    if report.completed != len(conversations):
        violations.append(f"{report.completed} completed items but {len(conversations)} conversations for the job")

    # The stored conversations' blobs are in S3 (nothing lost while S3 was away).
    async with _s3(cluster.env) as s3:
        missing_blobs = await _missing_blobs(s3, [c for c in conversations if c not in orphans])
        add_grouped(
            violations,
            "conversation blob(s) missing from S3",
            [f"#{item_by_id[item_id].position} {what}" for item_id, what in missing_blobs],
        )
        lost.update(item_id for item_id, _ in missing_blobs)
        log_text = await _log_blob(s3, job_id)
    report.lost += len(lost)

    # Failed items explain themselves.
    reasons = await _generation_failure_reasons(dsn, [i.request_id for i in items if i.status == "failed"])
    silent, unexplained, no_code = [], [], []
    for item in items:
        if item.status != "failed":
            continue
        message = item.error_message or ""
        if not message.strip():
            silent.append(f"#{item.position}")
        elif "unknown error" in message.lower() or "UNKNOWN" in message:
            unexplained.append(f"#{item.position} {message!r}")
        if not item.error_code or item.error_code == "UNKNOWN":
            no_code.append(f"#{item.position} {item.error_code!r}")
        report.failure_reasons[failure_reason(item.error_code, message, reasons.get(item.request_id))] += 1
    add_grouped(violations, "failed item(s) without an error message", silent)
    add_grouped(violations, "failed item(s) not explained (Unknown error / UNKNOWN)", unexplained, shown=1)
    add_grouped(violations, "failed item(s) without a specific error code", no_code)

    # Counters: table rows = job row = GetBatchJob = the last event.
    job_rows = await fetch(
        dsn,
        "SELECT state, total_items, queued_items, processing_items, completed_items, failed_items, cancelled_items, "
        "last_sequence FROM batch_jobs WHERE id = $1",
        job_uuid,
    )
    job_row = job_rows[0]
    if job_row["state"] not in TERMINAL_JOB_STATES:
        violations.append(f"the job is {job_row['state']}, not terminal")
    actual = (len(items), *(by_status[s] for s in ("queued", "processing", "completed", "failed", "cancelled")))
    in_table = tuple(
        job_row[c]
        for c in (
            "total_items",
            "queued_items",
            "processing_items",
            "completed_items",
            "failed_items",
            "cancelled_items",
        )
    )
    if in_table != actual:
        violations.append(f"job counters {in_table} differ from the item states {actual} (total, q, p, c, f, x)")
    job = await cluster.call(lambda stub: stub.GetBatchJob(batch_pb2.GetBatchJobRequest(job_id=job_id)))
    from_rpc = job_counters(job)
    if from_rpc != in_table:
        violations.append(f"GetBatchJob counters {from_rpc} differ from the table {in_table}")
    if not job.log_uploaded:
        violations.append("GetBatchJob says the log is not uploaded")
    events = await fetch(
        dsn,
        "SELECT sequence, kind, queued_items, processing_items, completed_items, failed_items, cancelled_items "
        "FROM batch_job_events WHERE batch_job_id = $1 ORDER BY sequence",
        job_uuid,
    )
    if events:
        last = events[-1]
        last_counters = tuple(
            last[c] for c in ("queued_items", "processing_items", "completed_items", "failed_items", "cancelled_items")
        )
        if last_counters != in_table[1:]:
            violations.append(f"the last event's counters {last_counters} differ from the job's {in_table[1:]}")
        if last["sequence"] != job_row["last_sequence"]:
            violations.append(f"last event sequence {last['sequence']} != job last_sequence {job_row['last_sequence']}")

    # The job log: one line per event, in order, ending with the summary.
    if log_text is None:
        violations.append(f"no log blob at s3://{LOG_BUCKET}/{job_id}/log.txt")
    else:
        lines = log_text.splitlines()
        logged = [int(m.group(1)) if (m := _SEQUENCE.search(line)) else -1 for line in lines]
        expected = [e["sequence"] for e in events]
        if logged != expected:
            violations.append(
                f"the log blob has {len(lines)} lines for {len(expected)} events "
                f"(first difference at line {_first_difference(logged, expected)})"
            )
        summary = (
            f"summary: {len(items)} items: {by_status['completed']} completed, {by_status['failed']} failed, "
            f"{by_status['cancelled']} cancelled"
        )
        if not lines or summary not in lines[-1]:
            violations.append(f"the log's last line lacks {summary!r}: {lines[-1] if lines else '(empty)'!r}")
        served = await cluster.call(lambda stub: stub.GetBatchJobLog(batch_pb2.GetBatchJobLogRequest(job_id=job_id)))
        if served.text != log_text:
            violations.append("GetBatchJobLog's text differs from the uploaded blob")

    retries = Counter(
        r["error_code"]
        for r in await fetch(
            dsn, "SELECT error_code FROM batch_job_events WHERE batch_job_id = $1 AND kind = 'retrying'", job_uuid
        )
    )
    if retries:
        report.notes.append("item retries: " + ", ".join(f"{code} ×{n}" for code, n in retries.most_common()))
    report.model_calls = int((await cluster.model_stats()).get("total", 0))
    return report


def add_grouped(violations: list[str], what: str, examples: Sequence[str], *, shown: int = 3) -> None:
    """One violation for many items: '<n> <what>: <first examples>; and <k> more'."""
    if not examples:
        return
    more = f"; and {len(examples) - shown} more" if len(examples) > shown else ""
    violations.append(f"{len(examples)} {what}: {'; '.join(examples[:shown])}{more}")


def failure_reason(error_code: str | None, message: str, generation_failure: tuple[str, str] | None) -> str:
    """The cause of a failed item: the generation service's reason (MODEL_OUTPUT_TRUNCATED, ...) when its recorded
    failure is the one the item ended with, else the item's status code."""
    if generation_failure is not None:
        reason, failure_message = generation_failure
        if failure_message and failure_message in message:
            return reason
    return error_code or "(no code)"


async def _generation_failure_reasons(dsn: str, request_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """request_id → (reason, message) of the latest generation_failures row."""
    if not request_ids:
        return {}
    rows = await fetch(
        dsn,
        """
        SELECT DISTINCT ON (request_id) request_id, reason, error_message FROM generation_failures
        WHERE request_id = ANY($1::text[]) ORDER BY request_id, created_at DESC
        """,
        list(request_ids),
    )
    return {r["request_id"]: (r["reason"], r["error_message"]) for r in rows}


def _first_difference(a: Sequence[int], b: Sequence[int]) -> int:
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return index + 1
    return min(len(a), len(b)) + 1


class _s3:  # noqa: N801 - used as a context manager like a function
    """A direct (unproxied) S3 client on moto for the checks."""

    def __init__(self, env: Environment) -> None:
        self._env = env
        self._store: S3BlobStore | None = None

    async def __aenter__(self) -> S3BlobStore:
        self._store = await S3BlobStore.open(
            endpoint_url=self._env.s3_endpoint,
            region=FAKE_AWS_ENV["AWS_REGION"],
            access_key_id=FAKE_ACCESS_KEY_ID,
            secret_access_key=FAKE_SECRET_ACCESS_KEY,
            create_buckets=False,
        )
        return self._store

    async def __aexit__(self, *exc: object) -> None:
        if self._store is not None:
            await self._store.close()


async def _missing_blobs(s3: S3BlobStore, conversations: Sequence[asyncpg.Record]) -> list[tuple[uuid.UUID, str]]:
    """(item id, 'raw'/'final') for every conversation blob that is not in S3."""
    limit = asyncio.Semaphore(16)

    async def check(item_id: uuid.UUID, what: str, bucket: str, key: str) -> tuple[uuid.UUID, str] | None:
        async with limit:
            return None if await s3.exists(bucket, key) else (item_id, what)

    checks = [
        check(c["item_id"], what, c[f"{what}_bucket"], c[f"{what}_key"])
        for c in conversations
        for what in ("raw", "final")
    ]
    return [found for found in await asyncio.gather(*checks) if found is not None]


async def _log_blob(s3: S3BlobStore, job_id: str) -> str | None:
    try:
        return (await s3.get(LOG_BUCKET, f"{job_id}/log.txt")).decode()
    except BlobNotFound:
        return None


# --- running a scenario -----------------------------------------------------------------------------------------


async def event_counts(dsn: str, job_id: str) -> Counter[str]:
    """Number of batch_job_events per kind for the job."""
    rows = await fetch(
        dsn, "SELECT kind, count(*) AS n FROM batch_job_events WHERE batch_job_id = $1 GROUP BY kind", uuid.UUID(job_id)
    )
    return Counter({r["kind"]: r["n"] for r in rows})


def describe_faults(stats: Mapping[str, Any], *, skip: Sequence[str] = ("ok",)) -> str:
    """'overloaded ×41, rate_limited ×20, ...' from the fake's fault counters."""
    faults: dict[str, int] = stats.get("faults", {})
    shown = [f"{name} ×{n}" for name, n in sorted(faults.items(), key=lambda kv: -kv[1]) if name not in skip]
    return ", ".join(shown) if shown else "none"


# --- the table ----------------------------------------------------------------------------------------------------

COLUMNS = ("scenario", "faults injected", "items", "completed", "failed (reasons)", "duplicates", "lost", "stuck")


def table_rows(reports: Sequence[ScenarioReport]) -> list[list[str]]:
    """One row per report, in COLUMNS order plus model calls, wall time and the verdict."""
    return [
        [
            r.scenario,
            r.faults,
            str(r.items),
            str(r.completed),
            r.failed_text(),
            str(r.duplicates),
            str(r.lost),
            str(r.stuck),
            str(r.model_calls),
            f"{r.wall_seconds:.1f} s",
            "ok" if r.ok else f"{len(r.violations)} VIOLATION(S)",
        ]
        for r in reports
    ]


def markdown_table(reports: Sequence[ScenarioReport]) -> str:
    """The reports as a Markdown table."""
    header = [*COLUMNS, "model calls", "wall time", "invariants"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in table_rows(reports)]
    return "\n".join(lines)
