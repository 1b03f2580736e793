"""Measuring processes and samples: CPU time of process trees, peak resident memory, percentiles."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Mapping, Sequence

import psutil  # type: ignore[import-untyped]


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


def per_item_ms(cpu: Mapping[str, float | None], items: int) -> dict[str, float | None]:
    """CPU milliseconds per item for each process."""
    return {name: (None if seconds is None else round(seconds * 1000 / items, 3)) for name, seconds in cpu.items()}


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


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile (fraction in 0..1); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]
