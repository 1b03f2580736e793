"""Small generic helpers for fault-injection tests: polling another process's state, random fault moments."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

_T = TypeVar("_T")


async def poll_until(
    probe: Callable[[], Awaitable[_T | None]], *, within: float, what: str, interval: float = 0.1
) -> _T:
    """Calls probe every interval seconds until it returns something other than None (or False); returns that.

    For state that lives in another process (a database row, a server's counters), where there is no event to await.
    """
    deadline = time.monotonic() + within
    while True:
        found = await probe()
        if found is not None and found is not False:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached within {within:.0f}s")
        await asyncio.sleep(interval)


def random_moments(rng: random.Random, count: int, *, low: float, high: float, min_gap: float) -> list[float]:
    """count sorted random values in [low, high], at least min_gap apart (fractions of a job's progress)."""
    if count <= 0:
        return []
    span = high - low - min_gap * (count - 1)
    if span < 0:
        raise ValueError(f"cannot fit {count} moments {min_gap} apart into [{low}, {high}]")
    offsets = sorted(rng.uniform(0, span) for _ in range(count))
    return [low + offset + index * min_gap for index, offset in enumerate(offsets)]


def unanswered_requests(stats: Mapping[str, Any]) -> int:
    """Requests the fake Messages API has received but not answered yet (from its /_fake/stats)."""
    answered = sum(int(n) for n in stats.get("statuses", {}).values())
    return int(stats.get("total", 0)) - answered
