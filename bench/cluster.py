"""Shared machinery of the benchmarks: PostgreSQL, a bench catalog, a process cluster, CPU/RSS meters, job waits.

Everything runs on loopback with OS-assigned ports, and every process started here is stopped again, also when a
benchmark fails or the run is interrupted (Ctrl-C / SIGTERM cancel the main task; the finally blocks stop the
processes; an atexit hook kills anything still alive as a last resort).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import itertools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import asyncpg
import grpc
import psutil  # type: ignore[import-untyped]

from convgen.db.embedded import EmbeddedPostgres, start_embedded_postgres
from convgen.v1 import batch_pb2, batch_pb2_grpc, common_pb2
from tests.support.moto_s3 import MotoS3Process
from tests.support.postgres import (
    clone_database,
    create_template_database,
    database_name,
    drop_statement,
    execute_as_admin,
)
from tests.support.processes import FakeApiProcess, ServiceProcess, clean_environment

ROOT = Path(__file__).resolve().parents[1]

# PostgreSQL as convgen runs it in production (the embedded server's own default), NOT the tests' fsync=off tuning:
# the benchmarks measure a durable system.
BENCH_SERVER_SETTINGS = {"max_connections": "300"}

# The bench catalog: the demo catalog plus extra personas and topics so that big jobs can be a plain combination.
BENCH_PERSONAS = 5
BENCH_TOPICS = 4000

TERMINAL_STATES = frozenset(
    {
        batch_pb2.BATCH_JOB_STATE_COMPLETED,
        batch_pb2.BATCH_JOB_STATE_FAILED,
        batch_pb2.BATCH_JOB_STATE_CANCELLED,
    }
)

_STARTED: list[subprocess.Popen[bytes]] = []
"""Every child process a benchmark started (for the atexit last resort)."""


def note(message: str) -> None:
    """Progress output for humans (stderr; stdout carries only the JSON lines)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _track(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process not in _STARTED:
        _STARTED.append(process)


@atexit.register
def _kill_leftovers() -> None:
    """Kills (by pid) any child this run started that is still alive; normally there is none."""
    for process in _STARTED:
        if process.poll() is None:
            with contextlib.suppress(OSError):
                process.kill()
            with contextlib.suppress(Exception):
                process.wait(5)


# --- PostgreSQL ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchCatalog:
    """Ids in the bench template database: personas, the core arcs (served by tier-template templates), topics."""

    persona_ids: list[str]
    arc_ids: list[str]
    topic_ids: list[str]

    def combination(self, items: int) -> batch_pb2.Combination:
        """A persona × arc × topic combination selecting exactly `items` items (as few topics as possible)."""
        for product in sorted(
            {p * a for p in range(1, len(self.persona_ids) + 1) for a in range(1, len(self.arc_ids) + 1)},
            reverse=True,
        ):
            if items % product:
                continue
            topics = items // product
            if topics > len(self.topic_ids):
                continue
            for p, a in itertools.product(range(len(self.persona_ids), 0, -1), range(len(self.arc_ids), 0, -1)):
                if p * a == product:
                    return batch_pb2.Combination(
                        persona_ids=self.persona_ids[:p],
                        emotional_arc_ids=self.arc_ids[:a],
                        training_topic_ids=self.topic_ids[:topics],
                        tier=common_pb2.TIER_TEMPLATE,
                    )
        raise ValueError(f"{items} items cannot be selected as a combination of the bench catalog")


async def _extend_catalog(conn: asyncpg.Connection[Any]) -> None:
    """Adds personas and topics (copies of demo rows with new ids and keys) up to BENCH_PERSONAS / BENCH_TOPICS."""
    personas = await conn.fetch("SELECT * FROM personas ORDER BY persona_key")
    for n in range(BENCH_PERSONAS - len(personas)):
        source = personas[n % len(personas)]
        await conn.execute(
            """
            INSERT INTO personas (id, persona_key, name, archetype, age, occupation, income_range,
                                  communication_style, emotional_baseline)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            """,
            uuid.uuid4(),
            f"bench_persona_{n:02d}",
            f"{source['name']} (bench {n})",
            source["archetype"],
            source["age"],
            source["occupation"],
            source["income_range"],
            source["communication_style"],
            source["emotional_baseline"],
        )
    topics = await conn.fetch("SELECT topic_key, name, category FROM training_topics ORDER BY topic_key")
    extra = BENCH_TOPICS - len(topics)
    if extra > 0:
        rows = [
            (
                uuid.uuid4(),
                f"bench_topic_{n:05d}",
                f"{topics[n % len(topics)]['name']} (bench variant {n})",
                topics[n % len(topics)]["category"],
            )
            for n in range(extra)
        ]
        await conn.copy_records_to_table(
            "training_topics", records=rows, columns=["id", "topic_key", "name", "category"]
        )


@dataclass
class BenchPostgres:
    """A PostgreSQL server (embedded in a temp dir, or DATABASE_URL) with a migrated, catalog-loaded template."""

    admin_dsn: str
    template: str
    catalog: BenchCatalog
    embedded: EmbeddedPostgres | None
    tmpdir: Path | None
    databases: list[str] = field(default_factory=list)
    _postmaster_pid: int | None = None

    @classmethod
    async def start(cls) -> BenchPostgres:
        """Starts (or connects to) the server and builds the template database."""
        external = os.environ.get("DATABASE_URL")
        embedded = None
        tmpdir = None
        if external:
            admin_dsn = external
            note("using the PostgreSQL server of DATABASE_URL")
        else:
            tmpdir = Path(tempfile.mkdtemp(prefix="convgen-bench-pg-"))
            embedded = await asyncio.to_thread(
                start_embedded_postgres, tmpdir / "pgdata", ephemeral=True, server_settings=BENCH_SERVER_SETTINGS
            )
            admin_dsn = embedded.dsn
            note(f"embedded PostgreSQL started in {tmpdir}")
        template = f"convgen_bench_template_{uuid.uuid4().hex[:8]}"
        try:
            conn = await asyncpg.connect(await create_template_database(admin_dsn, template))
            try:
                await _extend_catalog(conn)
                personas = await conn.fetch("SELECT id FROM personas ORDER BY persona_key")
                arcs = await conn.fetch(
                    """
                    SELECT a.id FROM emotional_arcs a
                    WHERE EXISTS (SELECT 1 FROM prompt_templates t
                                  WHERE t.active AND t.arc_key = a.arc_key AND t.tier = 'template')
                    ORDER BY a.arc_key
                    """
                )
                topics = await conn.fetch("SELECT id FROM training_topics ORDER BY topic_key")
            finally:
                await conn.close()
        except BaseException:
            if embedded is not None:
                with contextlib.suppress(Exception):
                    embedded.stop_server()
                embedded.close()
            raise
        catalog = BenchCatalog(
            persona_ids=[str(r["id"]) for r in personas],
            arc_ids=[str(r["id"]) for r in arcs],
            topic_ids=[str(r["id"]) for r in topics],
        )
        started = cls(admin_dsn=admin_dsn, template=template, catalog=catalog, embedded=embedded, tmpdir=tmpdir)
        _ = started.postmaster_pid  # read now, while postmaster.pid exists
        return started

    @property
    def postmaster_pid(self) -> int | None:
        """The embedded server's postmaster pid (None for an external server: its CPU is not measured)."""
        if self.embedded is None:
            return None
        if self._postmaster_pid is None:
            try:
                self._postmaster_pid = int((self.embedded.pgdata / "postmaster.pid").read_text().splitlines()[0])
            except (OSError, ValueError, IndexError):
                return None
        return self._postmaster_pid

    def _stop_embedded(self) -> None:
        """Stops the embedded server for sure, then lets the library delete its data.

        embedded-postgres's own cleanup stops the server only when the postmaster it started is still running;
        convgen restarts it once to apply max_connections, and then the cleanup was seen deleting the data directory
        of a server it left running. So: pg_ctl stop first, and a SIGINT (fast shutdown) to the postmaster by pid if
        it is somehow still there.
        """
        assert self.embedded is not None
        pid = self.postmaster_pid
        with contextlib.suppress(Exception):
            self.embedded.stop_server()
        with contextlib.suppress(Exception):
            self.embedded.close()
        if pid is None:
            return
        with contextlib.suppress(psutil.Error):
            postmaster = psutil.Process(pid)
            if str(self.embedded.pgdata) in " ".join(postmaster.cmdline()):
                postmaster.send_signal(signal.SIGINT)
                postmaster.wait(15)

    async def create_database(self) -> str:
        """A fresh database cloned from the template; returns its DSN."""
        name = f"convgen_bench_{uuid.uuid4().hex[:12]}"
        dsn = await clone_database(self.admin_dsn, self.template, name)
        self.databases.append(name)
        return dsn

    async def drop_database(self, dsn: str) -> None:
        """Drops a database made by create_database."""
        name = database_name(dsn)
        await execute_as_admin(self.admin_dsn, drop_statement(name))
        with contextlib.suppress(ValueError):
            self.databases.remove(name)

    async def close(self) -> None:
        """Stops an embedded server (deleting its data), or drops what this run created on an external one."""
        if self.embedded is not None:
            await asyncio.to_thread(self._stop_embedded)
            if self.tmpdir is not None:
                shutil.rmtree(self.tmpdir, ignore_errors=True)
            return
        await execute_as_admin(self.admin_dsn, *(drop_statement(name) for name in [*self.databases, self.template]))


# --- the process cluster -------------------------------------------------------------------------------------------


# Settings of every cluster besides the database, data directory and model: the defaults made explicit where a
# benchmark depends on them, and BATCH_MAX_ITEMS raised for the scale job (it is only a limit).
CLUSTER_SETTINGS = {
    "LISTEN_HOST": "127.0.0.1",
    "LOG_FORMAT": "json",
    "SHUTDOWN_GRACE_SECONDS": "2",
    "BATCH_WORKER_CONCURRENCY": "64",
    "MODEL_MAX_CONCURRENCY": "64",
    "BATCH_MAX_ITEMS": "100000",
}


@dataclass(frozen=True)
class ClusterSpec:
    """What to run: the model (offline generator, or the SDK against the fake API), the blob store, the fake's knobs."""

    model: Literal["offline", "sdk"] = "offline"
    blob_store: Literal["file", "s3"] = "file"
    api_latency: float = 0.0
    """Mean latency of the fake Messages API (seconds)."""
    api_jitter: float = 0.0
    """Uniform ± jitter of that latency, as a fraction."""
    api_seed: int = 0
    api_rpm: float = 0.0
    """Requests per minute the fake allows (0 = unlimited)."""
    api_config: Mapping[str, Any] = field(default_factory=dict)
    """Further FakeApiConfig fields (token limits, reply sizes, thinking tokens per effort...)."""

    def api_args(self) -> list[str]:
        """Command-line arguments of the fake Messages API."""
        args = ["--latency", str(self.api_latency), "--jitter", str(self.api_jitter), "--seed", str(self.api_seed)]
        if self.api_config:
            args += ["--config", json.dumps(dict(self.api_config), sort_keys=True)]
        return [*args, "--rpm", str(self.api_rpm)] if self.api_rpm else args

    def pool_key(self) -> tuple[object, ...]:
        """Clusters with the same key can serve each other's benchmarks (the fake's latency is set at run time).

        The fake's rate limits are part of the key (the generation service learns them from the headers for good),
        and so is the rest of its configuration.
        """
        return (self.model, self.blob_store, self.api_rpm, json.dumps(dict(self.api_config), sort_keys=True))

    def describe(self) -> str:
        """A short label."""
        api = f" (fake API {' '.join(self.api_args())})" if self.model == "sdk" else ""
        return f"{self.model} model{api}, {self.blob_store} blob store"


class Cluster:
    """One generation service, one batch service, and the fake Messages API / moto S3 when needed, as processes."""

    def __init__(self, dsn: str, spec: ClusterSpec) -> None:
        self.dsn = dsn
        self.spec = spec
        self.workdir = Path(tempfile.mkdtemp(prefix="convgen-bench-"))
        self.api: FakeApiProcess | None = None
        self.moto: MotoS3Process | None = None
        self.generation: ServiceProcess | None = None
        self.batch: ServiceProcess | None = None
        self.channel: grpc.aio.Channel | None = None

    async def __aenter__(self) -> Cluster:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def base_env(self) -> dict[str, str]:
        """Settings shared by both services."""
        env = {
            "DATABASE_URL": self.dsn,
            "CONVGEN_DATA_DIR": str(self.workdir / "data"),
            "BLOB_STORE": "file",
            **CLUSTER_SETTINGS,
        }
        if self.spec.blob_store == "s3":
            assert self.moto is not None
            env.update(self.moto.service_env())
        return env

    async def start(self) -> None:
        """Starts the helpers, then the generation service, then the batch service pointing at it."""
        note(f"starting cluster: {self.spec.describe()}")
        helpers: list[Awaitable[Any]] = []
        if self.spec.model == "sdk":
            self.api = FakeApiProcess(self.workdir, self.spec.api_args())
            helpers.append(self.api.start())
        if self.spec.blob_store == "s3":
            self.moto = MotoS3Process()
            helpers.append(asyncio.to_thread(self.moto.start))
        try:
            await asyncio.gather(*helpers)
        finally:
            if self.api is not None:
                _track(self.api.process)
            if self.moto is not None:
                _track(self.moto._process)
        env = self.base_env()
        if self.spec.model == "sdk":
            assert self.api is not None
            env.update(
                {"MODEL_CLIENT": "anthropic", "ANTHROPIC_API_KEY": "bench-key", "ANTHROPIC_BASE_URL": self.api.base_url}
            )
        else:
            env["MODEL_CLIENT"] = "offline"
        self.generation = ServiceProcess("generation", clean_environment(env), self.workdir)
        try:
            await self.generation.start()
        finally:
            _track(self.generation.process)
        batch_env = {**self.base_env(), "GENERATION_TARGET": self.generation.address}
        self.batch = ServiceProcess("batch", clean_environment(batch_env), self.workdir)
        try:
            await self.batch.start()
        finally:
            _track(self.batch.process)
        self.channel = grpc.aio.insecure_channel(
            self.batch.address,
            options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
        )

    @property
    def stub(self) -> batch_pb2_grpc.BatchServiceAsyncStub:
        """A BatchService stub on the bench's channel."""
        assert self.channel is not None
        return batch_pb2_grpc.BatchServiceStub(self.channel)

    def pids(self) -> dict[str, int]:
        """Pids of the running processes by role: generation, batch, fake_api, moto_s3."""
        found: dict[str, int] = {}
        for name, process in (
            ("generation", self.generation.process if self.generation else None),
            ("batch", self.batch.process if self.batch else None),
            ("fake_api", self.api.process if self.api else None),
        ):
            if process is not None and process.poll() is None:
                found[name] = process.pid
        if self.moto is not None and self.moto._process is not None:
            found["moto_s3"] = self.moto.pid
        return found

    def fake_api_stats(self) -> dict[str, Any]:
        """GET /_fake/stats of the fake Messages API."""
        assert self.api is not None
        with urllib.request.urlopen(f"{self.api.base_url}/_fake/stats", timeout=10) as response:
            stats: dict[str, Any] = json.loads(response.read())
        return stats

    def fake_api_config(self, **changes: Any) -> dict[str, Any]:
        """POST /_fake/config: changes the fake API's behaviour at run time."""
        assert self.api is not None
        request = urllib.request.Request(
            f"{self.api.base_url}/_fake/config",
            data=json.dumps(changes).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            config: dict[str, Any] = json.loads(response.read())
        return config

    async def stop(self) -> None:
        """Stops everything (services SIGKILL, helpers SIGTERM) and removes the work directory."""
        if self.channel is not None:
            with contextlib.suppress(Exception):
                await self.channel.close()
            self.channel = None

        async def stop_service(process: ServiceProcess | None) -> None:
            # SIGKILL: the measurements are over and a graceful drain would only add seconds per cluster; the
            # database is dropped (WITH FORCE) and the work directory removed right after.
            if process is not None:
                await asyncio.to_thread(process.kill)

        def stop_helpers() -> None:
            if self.api is not None:
                with contextlib.suppress(Exception):
                    self.api.stop()
            if self.moto is not None:
                with contextlib.suppress(Exception):
                    self.moto.stop()

        # All at once: measuring is over, so calls failing while the others shut down do not matter.
        await asyncio.gather(
            stop_service(self.batch),
            stop_service(self.generation),
            asyncio.to_thread(stop_helpers),
            return_exceptions=True,
        )
        if os.environ.get("BENCH_KEEP_WORKDIR"):
            note(f"kept the cluster's work directory (logs): {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


class ClusterPool:
    """Hands out clusters, each on its own fresh database; in reuse mode a finished benchmark's cluster is kept
    and handed to the next benchmark with the same pool key (the quick mode: process start-up dominates it).
    """

    def __init__(self, pg: BenchPostgres, *, reuse: bool) -> None:
        self.pg = pg
        self.reuse = reuse
        self._idle: dict[tuple[object, ...], Cluster] = {}

    @contextlib.asynccontextmanager
    async def cluster(self, spec: ClusterSpec) -> AsyncIterator[Cluster]:
        """A running cluster for spec, stopped (or, reusing, kept) when the block ends; always stopped on errors."""
        cluster = self._idle.pop(spec.pool_key(), None) if self.reuse else None
        if cluster is not None:
            note(f"reusing cluster: {spec.describe()}")
            cluster.spec = spec
            if spec.model == "sdk":
                cluster.fake_api_config(
                    latency_seconds=spec.api_latency, latency_jitter=spec.api_jitter, seed=spec.api_seed
                )
        else:
            dsn = await self.pg.create_database()
            cluster = Cluster(dsn, spec)
            try:
                await cluster.start()
            except BaseException:
                await self._discard(cluster)
                raise
        try:
            yield cluster
        except BaseException:
            await self._discard(cluster)
            raise
        if self.reuse:
            self._idle[spec.pool_key()] = cluster
        else:
            await self._discard(cluster)

    async def _discard(self, cluster: Cluster) -> None:
        await cluster.stop()
        await self.pg.drop_database(cluster.dsn)

    async def close(self) -> None:
        """Stops every kept cluster."""
        while self._idle:
            _, cluster = self._idle.popitem()
            await self._discard(cluster)


# --- measuring -----------------------------------------------------------------------------------------------------


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of a process, including its reaped and live children."""
    process = psutil.Process(pid)
    times = process.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            child_times = child.cpu_times()
            total += child_times.user + child_times.system
    return float(total)


class CpuMeter:
    """CPU time of named processes (a process tree each) between two readings."""

    def __init__(self, pids: Mapping[str, int | None]) -> None:
        self._pids = {name: pid for name, pid in pids.items() if pid is not None}
        self._missing = [name for name, pid in pids.items() if pid is None]
        self._start: dict[str, float] = {}

    def start(self) -> None:
        """Takes the first reading."""
        self._start = self._read()

    def _read(self) -> dict[str, float]:
        readings: dict[str, float] = {}
        for name, pid in self._pids.items():
            with contextlib.suppress(psutil.Error):
                readings[name] = process_cpu_seconds(pid)
        return readings

    def seconds(self) -> dict[str, float | None]:
        """CPU seconds used per process since start (None when it could not be read)."""
        now = self._read()
        result: dict[str, float | None] = {
            name: (now[name] - self._start[name]) if name in now and name in self._start else None
            for name in self._pids
        }
        for name in self._missing:
            result[name] = None
        return result


class RssSampler:
    """Samples the resident set size of processes every interval seconds in the background; keeps the peaks."""

    def __init__(self, pids: Mapping[str, int], interval: float = 0.1) -> None:
        self._pids = dict(pids)
        self._interval = interval
        self.peak: dict[str, int] = dict.fromkeys(self._pids, 0)
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        """Takes one sample now."""
        for name, pid in self._pids.items():
            with contextlib.suppress(psutil.Error):
                self.peak[name] = max(self.peak[name], psutil.Process(pid).memory_info().rss)
        self.samples += 1

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self._interval)

    def start(self) -> None:
        """Starts sampling."""
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> dict[str, float]:
        """Stops sampling; returns the peaks in MB (10^6 bytes)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sample()
        return {name: round(rss / 1e6, 1) for name, rss in self.peak.items()}


def timestamp_seconds(value: Any) -> float:
    """A protobuf Timestamp as Unix seconds."""
    return float(value.seconds) + float(value.nanos) / 1e9


async def get_job(stub: batch_pb2_grpc.BatchServiceAsyncStub, job_id: str) -> batch_pb2.BatchJob:
    """GetBatchJob."""
    return await stub.GetBatchJob(batch_pb2.GetBatchJobRequest(job_id=job_id))


async def wait_job(
    stub: batch_pb2_grpc.BatchServiceAsyncStub,
    job_id: str,
    *,
    within: float,
    poll: float = 0.05,
    log_uploaded: bool = False,
) -> batch_pb2.BatchJob:
    """Polls GetBatchJob until the job is terminal (and, optionally, its log uploaded); raises on timeout.

    Polling (20 small calls a second) instead of watching, so that the measured job has no watcher unless a
    benchmark adds one on purpose.
    """
    deadline = time.monotonic() + within
    while True:
        job = await get_job(stub, job_id)
        if job.state in TERMINAL_STATES and (job.log_uploaded or not log_uploaded):
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"job {job_id} not done within {within:.0f}s: state {batch_pb2.BatchJobState.Name(job.state)}, "
                f"{job.completed_items}/{job.total_items} completed, {job.failed_items} failed"
            )
        await asyncio.sleep(poll)


async def failure_samples(stub: batch_pb2_grpc.BatchServiceAsyncStub, job_id: str, limit: int = 3) -> list[str]:
    """The errors of the job's first few failed items (so a result with failures says why)."""
    page = await stub.ListBatchItems(
        batch_pb2.ListBatchItemsRequest(job_id=job_id, page_size=limit, state=batch_pb2.BATCH_ITEM_STATE_FAILED)
    )
    return [f"{item.error_code}: {item.error_message}"[:400] for item in page.items]


def job_elapsed(job: batch_pb2.BatchJob, *, since: Literal["created", "started"] = "created") -> float:
    """Seconds from the job's creation (or first start) to its terminal state, from the server's timestamps."""
    begin = job.created_at if since == "created" else job.started_at
    return timestamp_seconds(job.finished_at) - timestamp_seconds(begin)


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile (fraction in 0..1); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def rounded(value: float | None, digits: int = 2) -> float | None:
    """Rounds for the JSON line; None stays None."""
    return None if value is None else round(value, digits)


def ratio(numerator: float | None, denominator: float | None, digits: int = 3) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, digits)


def per_item_ms(cpu: Mapping[str, float | None], items: int) -> dict[str, float | None]:
    """CPU milliseconds per item for each process."""
    return {name: (None if seconds is None else round(seconds * 1000 / items, 3)) for name, seconds in cpu.items()}


# --- results and the table -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One line of the docs/performance.md table."""

    benchmark: str
    figure: str
    measured: str
    target: str = "—"
    met: str = "—"
    notes: str = ""


def fmt(value: float | None, unit: str = "", digits: int = 2) -> str:
    """A measured value for the table; 'not measured' when missing."""
    if value is None:
        return "not measured"
    text = f"{value:,.{digits}f}"
    return f"{text} {unit}".strip()


def verdict(value: float | None, *, at_least: float | None = None, below: float | None = None) -> str:
    """yes / no against a target; 'not measured' when the value is missing."""
    if value is None:
        return "not measured"
    if at_least is not None:
        return "yes" if value >= at_least else "no"
    if below is not None:
        return "yes" if value < below else "no"
    return "—"


def result_line(benchmark: str, quick: bool, figures: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON object a benchmark prints: its figures plus the benchmark name, the machine and the mode."""
    return {"benchmark": benchmark, "cores": os.cpu_count(), "quick": quick, **figures}


BenchmarkRun = Callable[[ClusterPool, bool], Awaitable[dict[str, Any]]]


async def _with_postgres(run: BenchmarkRun, quick: bool) -> dict[str, Any]:
    pg = await BenchPostgres.start()
    pool = ClusterPool(pg, reuse=False)
    try:
        return await run(pool, quick)
    finally:
        await pool.close()
        await pg.close()


def run_until_done(main: Awaitable[Any]) -> Any:
    """asyncio.run, with SIGTERM treated like Ctrl-C (the main task is cancelled, finally blocks stop processes)."""

    async def guarded() -> Any:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        return await main

    return asyncio.run(guarded())


def standalone(name: str, run: BenchmarkRun, argv: Iterable[str] | None = None) -> int:
    """`python -m bench.NAME [--quick]`: runs one benchmark on its own PostgreSQL and prints its JSON line."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=f"convgen benchmark: {name}")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke mode)")
    args = parser.parse_args(None if argv is None else list(argv))
    try:
        result = run_until_done(_with_postgres(run, args.quick))
    except (KeyboardInterrupt, asyncio.CancelledError):
        note("interrupted")
        return 130
    print(json.dumps(result), flush=True)
    return 0
