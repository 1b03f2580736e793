"""Prompt caching as the Messages API does it, for the local Messages API stand-in.

A cache entry is the hash of a prompt prefix that ends at a block with cache_control (a breakpoint). A request
reads the longest prefix whose entry exists and has not expired (and refreshes it), and writes entries for the later
breakpoints whose prefix is at least the model's minimum cacheable length (below it nothing is cached, without an
error). Entries become readable once the response that wrote them is sent, and expire their TTL (5m or 1h) after
their last use. Tokens are counted as four characters a token, per block.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_BREAKPOINTS = 4
TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}


class CacheRequestError(ValueError):
    """The request's cache_control blocks break the API's rules (the message is the API's 400 text)."""


def token_count(text: str) -> int:
    """Tokens for a text: about four characters a token."""
    return math.ceil(len(text) / 4) if text else 0


@dataclass(frozen=True)
class _Block:
    role: str
    text: str
    ttl: str | None


@dataclass
class CachePlan:
    """How one request's input tokens divide into cache reads, cache writes per TTL and uncached input."""

    total_tokens: int
    read_tokens: int = 0
    write_5m_tokens: int = 0
    write_1h_tokens: int = 0
    hits: list[tuple[str, float]] = field(default_factory=list)
    writes: list[tuple[str, float]] = field(default_factory=list)

    @property
    def input_tokens(self) -> int:
        """Tokens neither read from nor written to the cache."""
        return self.total_tokens - self.read_tokens - self.write_5m_tokens - self.write_1h_tokens

    @property
    def counted_input_tokens(self) -> int:
        """What the input-tokens-per-minute limit counts: uncached input and cache writes (reads are free)."""
        return self.input_tokens + self.write_5m_tokens + self.write_1h_tokens


def prompt_blocks(body: Mapping[str, Any]) -> list[_Block]:
    """The request's text blocks in prompt order (system, then messages), with their cache TTL if any."""
    blocks: list[_Block] = []
    system = body.get("system")
    if isinstance(system, str):
        blocks.append(_Block("system", system, None))
    elif isinstance(system, list):
        blocks.extend(_Block("system", b.get("text", ""), _ttl(b)) for b in system if isinstance(b, dict))
    for message in body.get("messages") or []:
        content = message.get("content")
        role = str(message.get("role"))
        if isinstance(content, str):
            blocks.append(_Block(role, content, None))
        elif isinstance(content, list):
            blocks.extend(
                _Block(role, b["text"], _ttl(b))
                for b in content
                if isinstance(b, dict) and isinstance(b.get("text"), str)
            )
    return blocks


def _ttl(block: Mapping[str, Any]) -> str | None:
    control = block.get("cache_control")
    if control is None:
        return None
    if not isinstance(control, dict) or control.get("type") != "ephemeral":
        raise CacheRequestError("cache_control.type: Input should be 'ephemeral'")
    ttl = control.get("ttl", "5m")
    if ttl not in TTL_SECONDS:
        raise CacheRequestError(f"cache_control.ttl: Input should be '5m' or '1h' (got {ttl!r})")
    return str(ttl)


def check_breakpoints(blocks: Sequence[_Block]) -> None:
    """At most four breakpoints, and no 1-hour breakpoint after a 5-minute one (the API's rules)."""
    ttls = [b.ttl for b in blocks if b.ttl is not None]
    if len(ttls) > MAX_BREAKPOINTS:
        raise CacheRequestError(
            f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {len(ttls)}."
        )
    if "5m" in ttls and "1h" in ttls[ttls.index("5m") :]:
        raise CacheRequestError("a ttl='1h' cache_control block must not come after a ttl='5m' cache_control block")


class PromptCache:
    """The cache entries of one stand-in, keyed by model and prefix."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._expiry: dict[str, float] = {}

    def clear(self) -> None:
        """Forgets every entry."""
        self._expiry.clear()

    def plan(self, model: str, blocks: Sequence[_Block], *, minimum: int, ttl_scale: float) -> CachePlan:
        """What the request reads, writes and pays in full (nothing is stored until commit)."""
        now = self._clock()
        digest = hashlib.blake2b(model.encode(), digest_size=16)
        total = 0
        breakpoints: list[tuple[int, str, str]] = []
        for block in blocks:
            digest.update(block.role.encode() + b"\x00" + block.text.encode() + b"\x01")
            total += token_count(block.text)
            if block.ttl is not None:
                breakpoints.append((total, digest.hexdigest(), block.ttl))
        plan = CachePlan(total_tokens=total)
        hit = -1
        for index, (_, key, _ttl) in enumerate(breakpoints):
            if self._expiry.get(key, -math.inf) > now:
                hit = index
        if hit >= 0:
            plan.read_tokens = breakpoints[hit][0]
            plan.hits = [(key, TTL_SECONDS[ttl] * ttl_scale) for _, key, ttl in breakpoints[: hit + 1]]
        later = breakpoints[hit + 1 :]
        writable = [bp for bp in later if bp[0] >= minimum]
        if writable:
            written_to = writable[-1][0]
            previous = plan.read_tokens
            for tokens, key, ttl in later:
                if tokens > written_to:
                    break
                if ttl == "1h":
                    plan.write_1h_tokens += tokens - previous
                else:
                    plan.write_5m_tokens += tokens - previous
                previous = tokens
                if tokens >= minimum:
                    plan.writes.append((key, TTL_SECONDS[ttl] * ttl_scale))
        return plan

    def commit(self, plan: CachePlan) -> None:
        """The response begins: its writes become readable, and the entries it read live for another TTL."""
        now = self._clock()
        for key, ttl in [*plan.hits, *plan.writes]:
            self._expiry[key] = max(self._expiry.get(key, -math.inf), now + ttl)
