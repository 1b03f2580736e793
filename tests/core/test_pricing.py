"""The price table: the packaged prices, overrides from a JSON or TOML file, exact micro-dollar costs, and unknown
models and tiers left unpriced."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from convgen.errors import InvalidArgument
from convgen.pricing import TokenUsage, load_price_table, packaged_price_table_path
from convgen.settings import Settings


def test_the_packaged_table_has_the_published_prices() -> None:
    table = load_price_table()
    expected = {
        # input, output, 5-minute write, 1-hour write, read
        "claude-sonnet-5-5": ("2", "10", "2.50", "4", "0.20"),
        "claude-opus-5": ("5", "25", "6.25", "10", "0.50"),
        "claude-opus-5-5": ("4", "20", "5", "8", "0.40"),
        "claude-haiku-4-5": ("1", "5", "1.25", "2", "0.10"),
    }
    for model, prices in expected.items():
        price = table.price_of(model)
        assert price is not None
        assert (price.input, price.output, price.cache_write_5m, price.cache_write_1h, price.cache_read) == tuple(
            Decimal(p) for p in prices
        )
    assert table.service_tiers == {"standard": Decimal(1), "batch": Decimal("0.5")}
    assert table.version


def test_cost_is_exact_then_rounded_once_to_the_micro_dollar() -> None:
    table = load_price_table()
    usage = TokenUsage(
        input_tokens=123,
        output_tokens=4567,
        cache_creation_5m_input_tokens=1001,
        cache_creation_1h_input_tokens=333,
        cache_read_input_tokens=7777,
    )
    cost = table.cost("claude-sonnet-5-5", usage)
    # 123×2 + 4567×10 + 1001×2.5 + 333×4 + 7777×0.2 = 51,305.9 per million tokens.
    assert cost.usd == Decimal("0.051306")
    assert cost.by_kind is not None
    assert cost.by_kind.output == Decimal("0.045670")
    assert cost.by_kind.cache_read == Decimal("0.001555")
    batch = table.cost("claude-sonnet-5-5", TokenUsage(output_tokens=1_000_000, service_tier="batch"))
    assert batch.usd == Decimal(5)


def test_a_dated_snapshot_has_its_models_price_and_nothing_else_is_guessed() -> None:
    table = load_price_table()
    assert table.price_of("claude-haiku-4-5-20251001") == table.price_of("claude-haiku-4-5")
    assert table.price_of("claude-opus-5-5-preview") is None
    assert table.price_of("claude-sonnet-5") is None, "no prefix matching: Sonnet 5 is not Sonnet 5.5"
    unknown = table.cost("claude-sonnet-9-9", TokenUsage(input_tokens=10))
    assert not unknown.known
    assert unknown.usd is None
    assert unknown.by_kind is None
    assert "claude-sonnet-9-9" in (unknown.unknown_because or "")
    priority = table.cost("claude-sonnet-5-5", TokenUsage(input_tokens=10, service_tier="priority"))
    assert not priority.known
    assert "priority" in (priority.unknown_because or "")


def test_a_json_file_replaces_the_table(tmp_path: Path) -> None:
    data = json.loads(packaged_price_table_path().read_text())
    data["version"] = "negotiated-2027"
    data["models"]["claude-sonnet-5-5"]["output"] = "8"
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(data))

    table = load_price_table(Settings(model_price_table_file=path).model_price_table_file)

    assert table.version == "negotiated-2027"
    assert table.cost("claude-sonnet-5-5", TokenUsage(output_tokens=1_000_000)).usd == Decimal(8)


def test_a_toml_file_replaces_the_table(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        'version = "toml-1"\n'
        '[service_tiers]\nstandard = "1"\n'
        '[models.claude-sonnet-5-5]\ninput = "3"\noutput = "15"\ncache_write_5m = "3.75"\ncache_write_1h = "6"\n'
        'cache_read = "0.30"\nmin_cacheable_tokens = 1024\n'
    )
    table = load_price_table(path)
    assert table.version == "toml-1"
    assert table.cost("claude-sonnet-5-5", TokenUsage(input_tokens=1_000_000)).usd == Decimal(3)
    assert not table.cost("claude-sonnet-5-5", TokenUsage(input_tokens=1, service_tier="batch")).known


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "cannot read price table"),
        ('{"version": "v", "service_tiers": {"standard": "1"}, "models": {}}', "models"),
        (
            '{"version": "v", "service_tiers": {"standard": "1"}, "models": {"m": {"input": "-1", "output": "1", '
            '"cache_write_5m": "1", "cache_write_1h": "1", "cache_read": "1", "min_cacheable_tokens": 0}}}',
            "models.m.input",
        ),
    ],
    ids=["not-json", "no-models", "negative-price"],
)
def test_a_bad_table_file_is_refused_naming_the_file(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "prices.json"
    path.write_text(text)
    with pytest.raises(InvalidArgument) as caught:
        load_price_table(path)
    assert str(path) in caught.value.message
    assert problem in caught.value.message
