"""Estimated cost of a model call in US dollars, from list prices per million tokens."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from generation_service.model.port import TokenUsage


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: Decimal
    output: Decimal
    cache_write: Decimal
    cache_read: Decimal


# Matched by prefix, longest first. Estimates from Anthropic's published per-tier prices (Opus, Sonnet, Haiku);
# update when the price list changes.
_PRICES: dict[str, Price] = {
    "claude-opus-5": Price(Decimal("15"), Decimal("75"), Decimal("18.75"), Decimal("1.50")),
    "claude-sonnet-5": Price(Decimal("3"), Decimal("15"), Decimal("3.75"), Decimal("0.30")),
    "claude-haiku-5": Price(Decimal("1"), Decimal("5"), Decimal("1.25"), Decimal("0.10")),
    "claude-opus-4": Price(Decimal("15"), Decimal("75"), Decimal("18.75"), Decimal("1.50")),
    "claude-sonnet-4": Price(Decimal("3"), Decimal("15"), Decimal("3.75"), Decimal("0.30")),
    "claude-3-7-sonnet": Price(Decimal("3"), Decimal("15"), Decimal("3.75"), Decimal("0.30")),
    "claude-3-5-sonnet": Price(Decimal("3"), Decimal("15"), Decimal("3.75"), Decimal("0.30")),
    "claude-haiku-4": Price(Decimal("1"), Decimal("5"), Decimal("1.25"), Decimal("0.10")),
    "claude-3-5-haiku": Price(Decimal("0.80"), Decimal("4"), Decimal("1"), Decimal("0.08")),
    "offline-synthetic": Price(Decimal(0), Decimal(0), Decimal(0), Decimal(0)),
}
# Unknown Claude models are priced like Sonnet so costs are never silently zero.
_DEFAULT = _PRICES["claude-sonnet-4"]
_MILLION = Decimal(1_000_000)


def price_for(model: str) -> Price:
    """The price of a model, matched by the longest known prefix."""
    for prefix in sorted(_PRICES, key=len, reverse=True):
        if model.startswith(prefix):
            return _PRICES[prefix]
    return _DEFAULT


def cost_usd(model: str, usage: TokenUsage) -> Decimal:
    """Cost of one call, rounded to micro-dollars."""
    p = price_for(model)
    total = (
        p.input * usage.input_tokens
        + p.output * usage.output_tokens
        + p.cache_write * usage.cache_creation_input_tokens
        + p.cache_read * usage.cache_read_input_tokens
    ) / _MILLION
    return total.quantize(Decimal("0.000001"))
