"""Client-side pacing of model calls: a concurrency cap, a request-rate schedule, and a shared cooldown."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager

LIMIT_HEADER = "anthropic-ratelimit-requests-limit"


class RequestPacer:
    """Keeps one process's model calls under the provider's limits instead of discovering them by 429s.

    Requests are spaced evenly at the per-minute limit (configured, or learned from the first response's
    rate-limit header; until that header has been seen only one request is in flight). A 429/529 with
    retry-after pauses every caller of this process until the delay has passed.
    """

    def __init__(
        self,
        *,
        max_concurrency: int,
        requests_per_minute: int = 0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._slots = asyncio.Semaphore(max_concurrency)
        self._clock = clock
        self._sleep = sleep
        self._configured = requests_per_minute > 0
        self._interval = 60.0 / requests_per_minute if requests_per_minute > 0 else 0.0
        # Until the first response tells us the limit (or that there is none), probe with one request.
        self._learned = self._configured
        self._probe = asyncio.Lock()
        self._next_slot = 0.0
        self._cooldown_until = 0.0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Holds one concurrency slot and waits for this request's turn in the schedule."""
        async with self._slots:
            if not self._learned:
                async with self._probe:
                    if not self._learned:
                        await self._wait_turn()
                        yield
                        return
            await self._wait_turn()
            yield

    async def _wait_turn(self) -> None:
        while True:
            now = self._clock()
            start = max(now, self._next_slot, self._cooldown_until)
            if start <= now:
                self._next_slot = now + self._interval
                return
            await self._sleep(start - now)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Learns the request limit from a response's rate-limit headers (once seen, the probe phase ends)."""
        if not self._configured:
            limit = headers.get(LIMIT_HEADER)
            if limit is not None and limit.isdigit() and int(limit) > 0:
                self._interval = 60.0 / int(limit)
        self._learned = True

    def cool_down(self, seconds: float) -> None:
        """Pauses every request of this process for seconds (the provider asked us to back off)."""
        self._cooldown_until = max(self._cooldown_until, self._clock() + max(0.0, seconds))
