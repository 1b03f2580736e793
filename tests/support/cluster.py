"""A convgen deployment as OS processes: the local Messages API (unless the model is offline), one generation service
and N batch service replicas (`convgen serve`), on loopback with OS-assigned ports. Tests and benchmarks build on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

import grpc

from convgen.v1 import batch_pb2_grpc
from tests.support.processes import FakeApiProcess, ServiceProcess, clean_environment

ChannelOptions = Sequence[tuple[str, int | str]]


class ProcessCluster:
    """The processes of one deployment, started in order and stopped (SIGKILL) together.

    env holds the settings of every service (DATABASE_URL, ...); generation_env and batch_env are added on top for
    one kind. With api_args the generation service calls the local Messages API (started with those arguments)
    through the anthropic SDK; with api_args=None it uses the offline model. Each process is named (INSTANCE_NAME,
    log files) `generation` and `batch-0`, `batch-1`, ...
    """

    def __init__(
        self,
        workdir: Path,
        env: Mapping[str, str],
        *,
        api_args: Sequence[str] | None = None,
        generation_env: Mapping[str, str] | None = None,
        batch_env: Mapping[str, str] | None = None,
        batch_replicas: int = 1,
        startup_seconds: float = 60.0,
        channel_options: ChannelOptions = (),
    ) -> None:
        self.workdir = workdir
        self.env = dict(env)
        self.api = None if api_args is None else FakeApiProcess(workdir, list(api_args))
        self.generation_env = dict(generation_env or {})
        self.batch_env = dict(batch_env or {})
        self.batch_replicas = batch_replicas
        self.startup_seconds = startup_seconds
        self.channel_options = list(channel_options)
        self.generation: ServiceProcess | None = None
        self.batches: list[ServiceProcess] = []
        self._channels: dict[int, grpc.aio.Channel] = {}

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Starts the Messages API, then the generation service, then the batch replicas pointing at it."""
        if self.api is not None:
            base_url = await self.api.start()
            model = {"MODEL_CLIENT": "anthropic", "ANTHROPIC_API_KEY": "test-key", "ANTHROPIC_BASE_URL": base_url}
        else:
            model = {"MODEL_CLIENT": "offline"}
        generation_env = {"INSTANCE_NAME": "generation", **self.env, **model, **self.generation_env}
        self.generation = ServiceProcess("generation", clean_environment(generation_env), self.workdir, "generation")
        await self.generation.start(within=self.startup_seconds)
        for index in range(self.batch_replicas):
            name = f"batch-{index}"
            batch_env = {
                "INSTANCE_NAME": name,
                **self.env,
                "GENERATION_TARGET": self.generation.address,
                **self.batch_env,
            }
            replica = ServiceProcess("batch", clean_environment(batch_env), self.workdir, name)
            self.batches.append(replica)
            await replica.start(within=self.startup_seconds)

    @property
    def processes(self) -> list[ServiceProcess]:
        """The service processes started so far: generation first, then the batch replicas."""
        return [p for p in [self.generation, *self.batches] if p is not None]

    def stub(self, replica: int = 0) -> batch_pb2_grpc.BatchServiceAsyncStub:
        """A BatchService stub on one replica (its channel reconnects by itself after a restart on the same port)."""
        channel = self._channels.get(replica)
        if channel is None:
            channel = grpc.aio.insecure_channel(self.batches[replica].address, options=self.channel_options)
            self._channels[replica] = channel
        return batch_pb2_grpc.BatchServiceStub(channel)

    def pids(self) -> dict[str, int]:
        """Pids of the running processes by role: generation, batch (the first replica), fake_api."""
        found: dict[str, int] = {}
        roles = [
            ("generation", self.generation.process if self.generation else None),
            ("batch", self.batches[0].process if self.batches else None),
            ("fake_api", self.api.process if self.api else None),
        ]
        for role, process in roles:
            if process is not None and process.poll() is None:
                found[role] = process.pid
        return found

    def service_logs(self) -> str:
        """Everything the services logged, for diagnosis."""
        return "\n".join(p.log_text() for p in self.processes)

    async def stop(self) -> None:
        """Closes the channels and stops every process (safe after a partial start, and twice)."""
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        for process in reversed(self.processes):
            process.kill()
        if self.api is not None:
            self.api.stop()
