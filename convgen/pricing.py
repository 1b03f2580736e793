"""Model prices: one versioned table (packaged, or a file named by MODEL_PRICE_TABLE_FILE) and the cost of a usage.

A model the table does not list, or a service tier it does not know, has an unknown cost: it is never priced as
another model. Costs are exact decimals rounded once, to the micro-dollar.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from convgen.errors import InvalidArgument

MICRO_DOLLAR = Decimal("0.000001")
_MILLION = Decimal(1_000_000)
# A dated snapshot of a listed model (claude-haiku-4-5-20251001) has the model's price.
_DATED = re.compile(r"^(?P<model>.+)-\d{8}$")


@dataclass(frozen=True)
class TokenUsage:
    """Tokens one model call (or a sum of calls) consumed, by the kind they are billed as."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_5m_input_tokens: int = 0
    cache_creation_1h_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    service_tier: str = "standard"

    @property
    def cache_creation_input_tokens(self) -> int:
        """Tokens written to the prompt cache, both TTLs."""
        return self.cache_creation_5m_input_tokens + self.cache_creation_1h_input_tokens

    def __add__(self, other: TokenUsage) -> TokenUsage:
        tier = self.service_tier if self.service_tier == other.service_tier else "mixed"
        return TokenUsage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_creation_5m_input_tokens + other.cache_creation_5m_input_tokens,
            self.cache_creation_1h_input_tokens + other.cache_creation_1h_input_tokens,
            self.cache_read_input_tokens + other.cache_read_input_tokens,
            tier,
        )


@dataclass(frozen=True)
class ModelPrice:
    """A model's list prices in USD per million tokens, and the shortest prefix it caches."""

    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal
    min_cacheable_tokens: int


@dataclass(frozen=True)
class CostByKind:
    """What the tokens of each kind cost, in USD, each rounded to the micro-dollar."""

    input: Decimal = Decimal(0)
    output: Decimal = Decimal(0)
    cache_write_5m: Decimal = Decimal(0)
    cache_write_1h: Decimal = Decimal(0)
    cache_read: Decimal = Decimal(0)

    def __add__(self, other: CostByKind) -> CostByKind:
        return CostByKind(
            self.input + other.input,
            self.output + other.output,
            self.cache_write_5m + other.cache_write_5m,
            self.cache_write_1h + other.cache_write_1h,
            self.cache_read + other.cache_read,
        )


@dataclass(frozen=True)
class Cost:
    """What a usage cost: usd (the exact sum, rounded once) and by_kind are None when the table cannot price it."""

    usd: Decimal | None
    by_kind: CostByKind | None
    price_version: str
    unknown_because: str | None = None

    @property
    def known(self) -> bool:
        """True when the table priced the usage."""
        return self.usd is not None


@dataclass(frozen=True)
class PriceTable:
    """The prices convgen costs model calls with; version is stored with every priced conversation."""

    version: str
    models: Mapping[str, ModelPrice]
    service_tiers: Mapping[str, Decimal]

    def price_of(self, model: str) -> ModelPrice | None:
        """The model's price: its own entry, or the entry of the model a dated snapshot name belongs to."""
        price = self.models.get(model)
        if price is None and (dated := _DATED.match(model)) is not None:
            price = self.models.get(dated.group("model"))
        return price

    def cost(self, model: str, usage: TokenUsage) -> Cost:
        """The cost of a usage, rounded to the micro-dollar, at the service tier the usage names."""
        price = self.price_of(model)
        if price is None:
            return Cost(None, None, self.version, f"model {model!r} is not in price table {self.version}")
        multiplier = self.service_tiers.get(usage.service_tier)
        if multiplier is None:
            because = f"service tier {usage.service_tier!r} is not in price table {self.version}"
            return Cost(None, None, self.version, because)
        exact = [
            price.input * usage.input_tokens * multiplier / _MILLION,
            price.output * usage.output_tokens * multiplier / _MILLION,
            price.cache_write_5m * usage.cache_creation_5m_input_tokens * multiplier / _MILLION,
            price.cache_write_1h * usage.cache_creation_1h_input_tokens * multiplier / _MILLION,
            price.cache_read * usage.cache_read_input_tokens * multiplier / _MILLION,
        ]
        by_kind = CostByKind(*(part.quantize(MICRO_DOLLAR) for part in exact))
        return Cost(sum(exact, Decimal(0)).quantize(MICRO_DOLLAR), by_kind, self.version)


class _PriceEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input: Decimal = Field(ge=0)
    output: Decimal = Field(ge=0)
    cache_write_5m: Decimal = Field(ge=0)
    cache_write_1h: Decimal = Field(ge=0)
    cache_read: Decimal = Field(ge=0)
    min_cacheable_tokens: int = Field(ge=0)


class _PriceFile(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    version: str = Field(min_length=1, max_length=100)
    service_tiers: dict[str, Decimal] = Field(min_length=1)
    models: dict[str, _PriceEntry] = Field(min_length=1)


def packaged_price_table_path() -> Path:
    """The price table shipped with convgen."""
    return Path(str(resources.files("convgen.data") / "prices.json"))


def load_price_table(path: Path | None = None) -> PriceTable:
    """Reads a price table file (JSON, or TOML by its .toml suffix); None reads the packaged one."""
    source = path or packaged_price_table_path()
    try:
        text = source.read_text(encoding="utf-8")
        raw: Any = tomllib.loads(text) if source.suffix.lower() == ".toml" else json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise InvalidArgument.for_field(
            "MODEL_PRICE_TABLE_FILE", f"cannot read price table {source}: {error}"
        ) from error
    try:
        parsed = _PriceFile.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()[:10])
        raise InvalidArgument.for_field(
            "MODEL_PRICE_TABLE_FILE", f"{source} is not a valid price table: {problems}"
        ) from error
    return PriceTable(
        version=parsed.version,
        models=MappingProxyType({name: ModelPrice(**entry.model_dump()) for name, entry in parsed.models.items()}),
        service_tiers=MappingProxyType(dict(parsed.service_tiers)),
    )
