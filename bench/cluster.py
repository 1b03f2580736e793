"""The benchmarks' clusters: the test kit's ProcessCluster for a benchmark's spec (offline model or the SDK against
the fake Messages API; file or S3 blobs) on a fresh database, handed out and reused by a ClusterPool.

Everything runs on loopback with OS-assigned ports, and every process started here is stopped again, also when a
benchmark fails or the run is interrupted (Ctrl-C / SIGTERM cancel the main task; the finally blocks stop the
processes; an atexit hook kills anything still alive as a last resort).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bench.report import note
from convgen.v1 import batch_pb2_grpc
from tests.support.cluster import ProcessCluster
from tests.support.demo_catalog import CatalogIds
from tests.support.moto_s3 import MotoS3Process
from tests.support.postgres import PostgresServer
from tests.support.processes import FakeApiProcess

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
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]

_STARTED: list[subprocess.Popen[bytes]] = []
"""Every child process a benchmark started (for the atexit last resort)."""


def _track(*processes: subprocess.Popen[bytes] | None) -> None:
    for process in processes:
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
    """One generation service and one batch service, with the fake Messages API / moto S3 when needed, as processes."""

    def __init__(self, dsn: str, spec: ClusterSpec) -> None:
        self.dsn = dsn
        self.spec = spec
        self.workdir = Path(tempfile.mkdtemp(prefix="convgen-bench-"))
        self.moto = MotoS3Process() if spec.blob_store == "s3" else None
        env = {"DATABASE_URL": dsn, "CONVGEN_DATA_DIR": str(self.workdir / "data"), "BLOB_STORE": "file"}
        self.services = ProcessCluster(
            self.workdir,
            {**env, **CLUSTER_SETTINGS},
            api_args=spec.api_args() if spec.model == "sdk" else None,
            channel_options=CHANNEL_OPTIONS,
        )

    async def start(self) -> None:
        """Starts moto (for S3), then the fake API, the generation service and the batch service pointing at it."""
        note(f"starting cluster: {self.spec.describe()}")
        try:
            if self.moto is not None:
                await asyncio.to_thread(self.moto.start)
                self.services.env.update(self.moto.service_env())
            await self.services.start()
        finally:
            _track(
                self.moto._process if self.moto else None,
                self.services.api.process if self.services.api else None,
                *(p.process for p in self.services.processes),
            )

    @property
    def stub(self) -> batch_pb2_grpc.BatchServiceAsyncStub:
        """A BatchService stub on the bench's channel."""
        return self.services.stub()

    @property
    def batch_address(self) -> str:
        """host:port of the batch service."""
        return self.services.batches[0].address

    @property
    def fake_api(self) -> FakeApiProcess:
        """The fake Messages API (SDK clusters only)."""
        assert self.services.api is not None, "an offline cluster has no fake Messages API"
        return self.services.api

    def pids(self) -> dict[str, int]:
        """Pids of the running processes by role: generation, batch, fake_api, moto_s3."""
        found = self.services.pids()
        if self.moto is not None and self.moto._process is not None:
            found["moto_s3"] = self.moto.pid
        return found

    async def stop(self) -> None:
        """Stops everything (services SIGKILL, helpers SIGTERM) and removes the work directory."""
        # SIGKILL: the measurements are over and a graceful drain would only add seconds per cluster; the database
        # is dropped (WITH FORCE) and the work directory removed right after.
        with contextlib.suppress(Exception):
            await self.services.stop()
        if self.moto is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.moto.stop)
        if os.environ.get("BENCH_KEEP_WORKDIR"):
            note(f"kept the cluster's work directory (logs): {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


class ClusterPool:
    """Hands out clusters, each on its own fresh database; in reuse mode a finished benchmark's cluster is kept
    and handed to the next benchmark with the same pool key (the quick mode: process start-up dominates it).
    """

    def __init__(self, postgres: PostgresServer, catalog: CatalogIds, *, reuse: bool) -> None:
        self.postgres = postgres
        self.catalog = catalog
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
                await cluster.fake_api.configure(
                    latency_seconds=spec.api_latency, latency_jitter=spec.api_jitter, seed=spec.api_seed
                )
        else:
            cluster = Cluster(await self.postgres.create_database(), spec)
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
        await self.postgres.drop_database(cluster.dsn)

    async def close(self) -> None:
        """Stops every kept cluster."""
        while self._idle:
            _, cluster = self._idle.popitem()
            await self._discard(cluster)
