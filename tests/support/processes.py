"""Runs convgen services (and the fake Messages API) as separate OS processes: start on port 0, kill, restart."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from asyncio.subprocess import PIPE, Process
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convgen.settings import environment_variable_names
from tests.support.checkout import ROOT


def clean_environment(overrides: Mapping[str, str]) -> dict[str, str]:
    """The current environment without any convgen setting, plus the given settings."""
    settings = set(environment_variable_names())
    env = {k: v for k, v in os.environ.items() if k.upper() not in settings}
    env.update(overrides)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


async def start_python_module(module: str, *args: str, env: Mapping[str, str] | None = None) -> Process:
    """`python -m module args` in the checkout with this interpreter, its stdout and stderr piped."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, *args, cwd=ROOT, env=env, stdout=PIPE, stderr=PIPE
    )


@dataclass
class ServiceProcess:
    """One `convgen serve KIND` process, with its log file and the port it bound."""

    kind: str
    env: dict[str, str]
    workdir: Path
    name: str = ""
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _log: Path | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        """host:port of the service."""
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """Where this process's stderr/stdout go."""
        assert self._log is not None
        return self._log

    async def start(self, *, within: float = 60.0) -> int:
        """Starts the process (on the previous port after a restart, else port 0) and waits until it serves."""
        self.starts += 1
        label = self.name or self.kind
        ready = self.workdir / f"{label}.{self.starts}.ready"
        ready.unlink(missing_ok=True)
        self._log = self.workdir / f"{label}.{self.starts}.log"
        env = dict(self.env)
        env["READY_FILE"] = str(ready)
        port_variable = "GENERATION_PORT" if self.kind == "generation" else "BATCH_PORT"
        env[port_variable] = str(self.port)
        with self._log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "clients.cli.main", "serve", self.kind],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if ready.exists():
                for line in ready.read_text().splitlines():
                    key, _, address = line.partition(" ")
                    if key == self.kind:
                        self.port = int(address.rsplit(":", 1)[1])
                        return self.port
            if self.process.poll() is not None:
                raise RuntimeError(f"{label} exited with {self.process.returncode}:\n{self.log_tail()}")
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{label} did not become ready in {within}s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, leases are left behind."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    async def terminate(self, *, within: float = 30.0) -> int:
        """SIGTERM and wait for a graceful exit; returns the exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + within
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                self.process.kill()
                self.process.wait(10)
                raise TimeoutError(f"{self.name or self.kind} ignored SIGTERM for {within}s")
            await asyncio.sleep(0.05)
        return self.process.returncode

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the process log."""
        if self._log is None or not self._log.exists():
            return ""
        return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])

    def log_text(self) -> str:
        """Everything this process has logged in all its starts."""
        label = self.name or self.kind
        return "\n".join(
            (self.workdir / f"{label}.{n}.log").read_text(errors="replace")
            for n in range(1, self.starts + 1)
            if (self.workdir / f"{label}.{n}.log").exists()
        )


@dataclass
class FakeApiProcess:
    """The fake Messages API in its own process (for suites where the services are processes too)."""

    workdir: Path
    args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    base_url: str = ""

    async def start(self, *, within: float = 30.0) -> str:
        """Starts the server and returns its base URL."""
        ready = self.workdir / "messages-api.ready"
        ready.unlink(missing_ok=True)
        log = (self.workdir / "messages-api.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.messages_api", "--ready-file", str(ready), *self.args],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if ready.exists() and ready.read_text().strip():
                self.base_url = ready.read_text().strip()
                return self.base_url
            if self.process.poll() is not None:
                raise RuntimeError("fake Messages API exited early")
            await asyncio.sleep(0.05)
        raise TimeoutError("fake Messages API did not start")

    def stop(self) -> None:
        """Stops the server."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    async def stats(self) -> dict[str, Any]:
        """Its counters (GET /_fake/stats): requests, statuses, faults, rate-limited answers."""
        return await asyncio.to_thread(self._control, "GET", "stats", None)

    async def configure(self, **changes: Any) -> dict[str, Any]:
        """Changes its behaviour at run time (POST /_fake/config: latency_seconds, fault_mix, ...)."""
        return await asyncio.to_thread(self._control, "POST", "config", changes)

    async def inject(self, fault: str, *, times: int = 1, match: str | None = None) -> None:
        """Queues a scripted fault for the next matching model calls (POST /_fake/inject)."""
        body: dict[str, Any] = {"fault": fault, "times": times}
        if match is not None:
            body["match"] = match
        await asyncio.to_thread(self._control, "POST", "inject", body)

    def _control(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.base_url}/_fake/{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"content-type": "application/json"},
            method=method,
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer: dict[str, Any] = json.loads(response.read() or b"{}")
        return answer
