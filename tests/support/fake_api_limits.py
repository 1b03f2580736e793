"""Rate limits as the Messages API applies them, for the local Messages API stand-in.

Three token buckets, each refilled continuously at its per-minute limit: requests, input tokens (uncached input and
cache writes; cache reads are free) and output tokens. A request is admitted only if every limited bucket holds its
charge: one request, its counted input, and its max_tokens for output (the API's documented estimate), which is
corrected to the real output when the response is sent. Every response carries the
``anthropic-ratelimit-{requests,input-tokens,output-tokens}-{limit,remaining,reset}`` headers; a refusal is a 429
with ``retry-after``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime


def rfc3339(epoch_seconds: float) -> str:
    """A UTC timestamp like 2025-01-31T12:00:05Z."""
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class RateRefused(Exception):
    """A limit refused the request: which one, and when to come back."""

    def __init__(self, dimension: str, per_minute: float, retry_after: int) -> None:
        what = "requests" if dimension == "requests" else dimension.replace("-", " ")
        super().__init__(
            f"This request would exceed the rate limit for your organization of {int(per_minute)} {what} per "
            "minute. Please try again later."
        )
        self.dimension = dimension
        self.retry_after = retry_after


class _Bucket:
    """One per-minute limit: rate per_minute/60 per second, holding `capacity` at most."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.per_minute = 0.0
        self.capacity = 0.0
        self.level = 0.0
        self._at = clock()

    def configure(self, per_minute: float, capacity: float) -> None:
        """Applies the configured limit; a change of limit starts the bucket full."""
        if (per_minute, capacity) != (self.per_minute, self.capacity):
            self.per_minute, self.capacity, self.level = per_minute, capacity, capacity
            self._at = self._clock()

    @property
    def limited(self) -> bool:
        """True when a limit is configured."""
        return self.per_minute > 0

    def refill(self) -> None:
        """Adds what the time since the last refill earned."""
        now = self._clock()
        if self.limited:
            self.level = min(self.capacity, self.level + (now - self._at) * self.per_minute / 60.0)
        self._at = now

    def shortfall(self, amount: float) -> float:
        """Seconds until the bucket holds `amount` (at most its capacity); 0 when it does."""
        if not self.limited:
            return 0.0
        self.refill()
        missing = min(amount, self.capacity) - self.level
        return max(0.0, missing) * 60.0 / self.per_minute

    def take(self, amount: float) -> None:
        """Spends from the bucket."""
        if self.limited:
            self.refill()
            self.level -= amount

    def give(self, amount: float) -> None:
        """Returns what a request was charged and did not use."""
        if self.limited and amount > 0:
            self.refill()
            self.level = min(self.capacity, self.level + amount)

    def headers(self, name: str) -> dict[str, str]:
        """This limit's anthropic-ratelimit-* headers."""
        if not self.limited:
            return {}
        self.refill()
        refill_seconds = (self.capacity - self.level) * 60.0 / self.per_minute
        return {
            f"anthropic-ratelimit-{name}-limit": str(int(self.per_minute)),
            f"anthropic-ratelimit-{name}-remaining": str(max(0, int(self.level))),
            f"anthropic-ratelimit-{name}-reset": rfc3339(time.time() + refill_seconds),
        }


@dataclass(frozen=True)
class Charge:
    """What one admitted request was charged: its counted input and max_tokens of output."""

    input_tokens: int
    output_tokens: int


class RateLimits:
    """The stand-in's request, input-token and output-token limits."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.requests = _Bucket(clock)
        self.input = _Bucket(clock)
        self.output = _Bucket(clock)

    def configure(
        self,
        *,
        requests_per_minute: float,
        request_burst: float,
        input_tokens_per_minute: float,
        output_tokens_per_minute: float,
        token_burst_seconds: float,
    ) -> None:
        """Applies the configured limits (0 = unlimited); token buckets hold token_burst_seconds of their rate."""
        self.requests.configure(requests_per_minute, request_burst)
        self.input.configure(input_tokens_per_minute, input_tokens_per_minute * token_burst_seconds / 60.0)
        self.output.configure(output_tokens_per_minute, output_tokens_per_minute * token_burst_seconds / 60.0)

    def reset(self) -> None:
        """Starts every bucket full again."""
        for bucket in (self.requests, self.input, self.output):
            bucket.level = bucket.capacity

    def admit(self, charge: Charge) -> None:
        """Charges the request, or raises RateRefused naming the limit that refuses it (nothing is charged then)."""
        for name, bucket, amount in self._dimensions(charge):
            wait = bucket.shortfall(amount)
            if wait > 0:
                raise RateRefused(name, bucket.per_minute, max(1, math.ceil(wait)))
        for _, bucket, amount in self._dimensions(charge):
            bucket.take(amount)

    def settle(self, charge: Charge, *, input_used: int, output_used: int) -> None:
        """Corrects an admitted request's charge to what it used (a failed request uses nothing)."""
        self.input.give(charge.input_tokens - input_used)
        self.output.give(charge.output_tokens - output_used)

    def headers(self) -> dict[str, str]:
        """The rate-limit headers of every configured limit."""
        return {
            **self.requests.headers("requests"),
            **self.input.headers("input-tokens"),
            **self.output.headers("output-tokens"),
        }

    def _dimensions(self, charge: Charge) -> list[tuple[str, _Bucket, float]]:
        return [
            ("requests", self.requests, 1.0),
            ("input-tokens", self.input, float(charge.input_tokens)),
            ("output-tokens", self.output, float(charge.output_tokens)),
        ]
