"""Client-side pacing of model calls to every limit the API states: requests, input tokens and output tokens.

The API counts a call against its token limits when the call starts: its input tokens (uncached input and cache
writes; cache reads are free) and, for output, its max_tokens, corrected to the real output when the call ends. The
pacer keeps the same books for the whole process, so calls wait their turn here instead of being refused with 429.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from convgen.background import wait_for_event
from convgen.pricing import TokenUsage

LIMIT_HEADER = "anthropic-ratelimit-{dimension}-limit"
REMAINING_HEADER = "anthropic-ratelimit-{dimension}-remaining"
# A moving average per template of the input tokens the API counts (cache reads excluded): what hits the cache
# changes from call to call, so the cost of the next call is estimated from the recent ones.
_AVERAGE_WEIGHT = 0.2
_CHARS_PER_TOKEN = 4
# After this long with no call in flight the API's token buckets may have filled to a capacity the pacer does not
# know (it assumes a minute's worth): the next call goes alone, and its headers say what remains.
IDLE_RESYNC_SECONDS = 1.0
# A call admitted this recently may not have reached the API when a response's headers were written: what those
# headers say remains does not include its charge yet, so it is taken off again.
IN_TRANSIT_SECONDS = 0.5


@dataclass(frozen=True)
class CallCharge:
    """What the API counts against its limits when a call starts."""

    input_tokens: int
    output_tokens: int


class _TokenBucket:
    """One tokens-per-minute limit as the API applies it: a bucket holding a minute's worth, refilled continuously."""

    def __init__(self, per_minute: int, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.per_minute = 0
        self.level = 0.0
        self._at = clock()
        if per_minute > 0:
            self.set_limit(per_minute, remaining=None)

    @property
    def known(self) -> bool:
        """True once the limit is configured or learned."""
        return self.per_minute > 0

    def set_limit(self, per_minute: int, *, remaining: int | None) -> None:
        """Takes a (new) limit; the level starts full, or at what the API says remains."""
        self._refill()
        first = not self.known
        self.per_minute = per_minute
        if first:
            self.level = float(per_minute if remaining is None else remaining)
        self.level = min(self.level, float(per_minute))

    def sync(self, remaining: int) -> None:
        """Never believes in more tokens than the API says remain (other processes share the limit)."""
        self._refill()
        self.level = min(self.level, float(remaining))

    def seconds_until(self, amount: int) -> float:
        """How long until `amount` tokens (at most a full bucket) are available; 0 when they are."""
        if not self.known:
            return 0.0
        self._refill()
        missing = min(float(amount), float(self.per_minute)) - self.level
        return 0.0 if missing <= 0 else missing * 60.0 / self.per_minute

    def take(self, amount: int) -> None:
        """Spends tokens (the level may go below zero for a call larger than the bucket)."""
        if self.known:
            self._refill()
            self.level -= amount

    def give(self, amount: int) -> None:
        """Returns tokens a finished call did not use."""
        if self.known:
            self._refill()
            self.level = min(float(self.per_minute), self.level + amount)

    def _refill(self) -> None:
        now = self._clock()
        if self.known:
            self.level = min(float(self.per_minute), self.level + (now - self._at) * self.per_minute / 60.0)
        self._at = now


class CallTicket:
    """One admitted call: what was charged (and when), and what it really used once the usage arrives."""

    def __init__(self, charge: CallCharge, admitted_at: float) -> None:
        self.charge = charge
        self.admitted_at = admitted_at
        self.usage: TokenUsage | None = None

    def settle(self, usage: TokenUsage) -> None:
        """Records what the call used (the difference to the charge goes back to the buckets)."""
        self.usage = usage


class RatePacer:
    """Keeps one process's model calls under the API's request, input-token and output-token limits.

    Limits come from the settings or are learned from the rate-limit headers of the first response; until that
    response only one call is in flight, and so again after an idle second (the headers then re-sync the buckets).
    Requests are spaced evenly at the request limit; token charges wait until the token buckets hold them. A 429/529
    with retry-after pauses every call of this process for the delay.
    """

    def __init__(
        self,
        *,
        max_concurrency: int,
        requests_per_minute: int = 0,
        input_tokens_per_minute: int = 0,
        output_tokens_per_minute: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._slots = asyncio.Semaphore(max_concurrency)
        self._clock = clock
        self._configured = {
            "requests": requests_per_minute > 0,
            "input-tokens": input_tokens_per_minute > 0,
            "output-tokens": output_tokens_per_minute > 0,
        }
        self._interval = 60.0 / requests_per_minute if requests_per_minute > 0 else 0.0
        self._input = _TokenBucket(input_tokens_per_minute, clock)
        self._output = _TokenBucket(output_tokens_per_minute, clock)
        # Until the first response tells us the limits (or that there are none), probe with one request.
        self._learned = any(self._configured.values())
        self._probe = asyncio.Lock()
        self._admission = asyncio.Lock()
        self._changed = asyncio.Event()
        self._next_slot = 0.0
        self._cooldown_until = 0.0
        self._in_flight: set[CallTicket] = set()
        self._idle_since: float | None = None
        self._probing = False

    @property
    def limits(self) -> dict[str, int]:
        """The per-minute limits in force (0 = none known): requests, input-tokens, output-tokens."""
        return {
            "requests": round(60.0 / self._interval) if self._interval else 0,
            "input-tokens": self._input.per_minute,
            "output-tokens": self._output.per_minute,
        }

    @asynccontextmanager
    async def call(self, charge: CallCharge) -> AsyncIterator[CallTicket]:
        """Holds a concurrency slot, waits until the limits admit the charge, and settles it when the call ends."""
        async with self._slots:
            if self._must_probe():
                async with self._probe:
                    if self._must_probe():
                        self._idle_since = None
                        self._probing = True
                        try:
                            async with self._admitted(charge) as ticket:
                                yield ticket
                        finally:
                            self._probing = False
                        return
            async with self._admitted(charge) as ticket:
                yield ticket

    def _must_probe(self) -> bool:
        """True until the limits are known, and when token buckets sat idle long enough to have drifted."""
        if not self._learned or self._probing:
            return True
        idle = self._idle_since
        drifting = self._input.known or self._output.known
        return drifting and not self._in_flight and idle is not None and self._clock() - idle >= IDLE_RESYNC_SECONDS

    @asynccontextmanager
    async def _admitted(self, charge: CallCharge) -> AsyncIterator[CallTicket]:
        await self._admit(charge)
        ticket = CallTicket(charge, self._clock())
        self._in_flight.add(ticket)
        try:
            yield ticket
        finally:
            self._in_flight.discard(ticket)
            if not self._in_flight:
                self._idle_since = self._clock()
            used = ticket.usage
            # A failed call is given back whole: a refused request costs nothing, and guessing would drift.
            used_input = used.input_tokens + used.cache_creation_input_tokens if used else 0
            used_output = used.output_tokens if used else 0
            self._input.give(charge.input_tokens - used_input)
            self._output.give(charge.output_tokens - used_output)
            self._changed.set()

    async def _admit(self, charge: CallCharge) -> None:
        # One waiter at a time, in arrival order: a large charge is not overtaken forever by small ones.
        async with self._admission:
            while True:
                now = self._clock()
                wait = max(
                    self._cooldown_until - now,
                    self._next_slot - now,
                    self._input.seconds_until(charge.input_tokens),
                    self._output.seconds_until(charge.output_tokens),
                )
                if wait <= 0:
                    self._next_slot = max(now, self._next_slot) + self._interval
                    self._input.take(charge.input_tokens)
                    self._output.take(charge.output_tokens)
                    return
                # Tokens come back early when a call ends under its charge: re-check then.
                self._changed.clear()
                await wait_for_event(self._changed, wait)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Learns the limits from a response's rate-limit headers and never assumes more than the API says remain."""
        if not self._configured["requests"]:
            limit = _number(headers.get(LIMIT_HEADER.format(dimension="requests")))
            if limit:
                self._interval = 60.0 / limit
        recent = [t.charge for t in self._in_flight if self._clock() - t.admitted_at < IN_TRANSIT_SECONDS]
        in_transit = {
            "input-tokens": sum(c.input_tokens for c in recent),
            "output-tokens": sum(c.output_tokens for c in recent),
        }
        for dimension, bucket in (("input-tokens", self._input), ("output-tokens", self._output)):
            limit = _number(headers.get(LIMIT_HEADER.format(dimension=dimension)))
            remaining = _number(headers.get(REMAINING_HEADER.format(dimension=dimension)))
            if remaining is not None:
                remaining -= in_transit[dimension]
            if limit and not self._configured[dimension]:
                bucket.set_limit(limit, remaining=remaining)
            if remaining is not None and bucket.known:
                bucket.sync(remaining)
        self._learned = True
        self._changed.set()

    def cool_down(self, seconds: float) -> None:
        """Pauses every request of this process for seconds (the provider asked us to back off)."""
        self._cooldown_until = max(self._cooldown_until, self._clock() + max(0.0, seconds))
        self._changed.set()


class InputEstimates:
    """Estimates the input tokens the API will count for a call, per template, from what recent calls counted."""

    def __init__(self) -> None:
        self._averages: dict[str, float] = {}

    def estimate(self, template_key: str, prompt_chars: int) -> int:
        """The moving average of the template's recent calls; before any, every prompt token (nothing cached)."""
        average = self._averages.get(template_key)
        if average is None:
            return math.ceil(prompt_chars / _CHARS_PER_TOKEN)
        return math.ceil(average)

    def learn(self, template_key: str, usage: TokenUsage) -> None:
        """Folds a call's counted input (uncached input and cache writes) into the template's average."""
        counted = float(usage.input_tokens + usage.cache_creation_input_tokens)
        average = self._averages.get(template_key)
        self._averages[template_key] = counted if average is None else average + _AVERAGE_WEIGHT * (counted - average)


def _number(value: str | None) -> int | None:
    if value is None or not value.isdigit():
        return None
    return int(value)
