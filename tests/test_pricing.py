"""runcycles.pricing: exact costs in microcents, dated names, files, and the rounding bounds."""

from __future__ import annotations

import sys
import types
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runcycles import pricing
from runcycles.pricing import ModelPrice, PriceTable, UnknownModelError

PRICES = PriceTable(
    {
        "gpt-4o-mini": ModelPrice(input="0.15", output="0.60", cached_input="0.075"),
        "claude-sonnet-4-5": ModelPrice(input="3", output="15", cached_input="0.30", cache_write="3.75"),
        "plain": ModelPrice(input=1, output=2),
    }
)


def test_cost_is_exact_microcents() -> None:
    # 1200 * 0.15 + 350 * 0.60 = 390 USD per 1M tokens-units -> 390e-6 USD = 39_000 microcents.
    assert PRICES.cost("gpt-4o-mini", input_tokens=1200, output_tokens=350) == 39_000
    # cached tokens at the cached price, cache writes at the cache-write price.
    assert PRICES.cost("claude-sonnet-4-5", input_tokens=10, cached_input_tokens=1000, cache_write_tokens=100) == (
        10 * 300 + 1000 * 30 + 100 * 375
    )


def test_cached_and_cache_write_default_to_the_input_price() -> None:
    assert PRICES.cost("plain", cached_input_tokens=7, cache_write_tokens=5) == 12 * 100


def test_rounding_up_happens_once_per_call() -> None:
    # 1 token at 0.15 = 15 microcents exactly; 1 token at 0.075 = 7.5 -> 8; two of them = 15 (not 16).
    assert PRICES.cost("gpt-4o-mini", cached_input_tokens=1) == 8
    assert PRICES.cost("gpt-4o-mini", cached_input_tokens=2) == 15
    assert PRICES.cost("gpt-4o-mini", input_tokens=1, cached_input_tokens=1) == 23  # 15 + 7.5 -> 23


def test_estimate_is_the_prompt_plus_the_largest_answer() -> None:
    assert PRICES.estimate("gpt-4o-mini", input_tokens=1200, max_output_tokens=512) == PRICES.cost(
        "gpt-4o-mini", input_tokens=1200, output_tokens=512
    )


@pytest.mark.parametrize("name", ["gpt-4o-mini-2024-07-18", "gpt-4o-mini-20240718", "gpt-4o-mini"])
def test_dated_model_names_resolve(name: str) -> None:
    assert PRICES.resolve(name) == "gpt-4o-mini"
    assert PRICES.cost(name, output_tokens=1) == 60


def test_dated_anthropic_names_resolve() -> None:
    assert PRICES.price("claude-sonnet-4-5-20250929") is PRICES["claude-sonnet-4-5"]


def test_an_exact_dated_entry_wins_over_the_undated_one() -> None:
    table = PriceTable({"m": ModelPrice(input=1, output=1), "m-2024-01-01": ModelPrice(input=9, output=9)})
    assert table.cost("m-2024-01-01", input_tokens=1) == 900


def test_unknown_model_names_the_model_and_the_closest_names() -> None:
    with pytest.raises(UnknownModelError) as info:
        PRICES.cost("gpt-4o-mino", input_tokens=1)
    assert isinstance(info.value, LookupError)
    assert "gpt-4o-mino" in str(info.value)
    assert "gpt-4o-mini" in info.value.suggestions
    with pytest.raises(UnknownModelError):
        PRICES.cost("gpt-4o-mini-preview", input_tokens=1)


@pytest.mark.parametrize("field", ["input", "output", "cached_input", "cache_write"])
def test_negative_prices_are_refused_naming_the_field(field: str) -> None:
    values: dict[str, object] = {"input": "1", "output": "1", field: "-0.01"}
    with pytest.raises(ValueError, match=field):
        ModelPrice(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["abc", "NaN", "Infinity", True, None, [1]])
def test_malformed_prices_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="input"):
        ModelPrice(input=bad, output="1")  # type: ignore[arg-type]


def test_floats_go_through_str() -> None:
    assert ModelPrice(input=0.15, output=0.6).input == Decimal("0.15")


@pytest.mark.parametrize("field", ["input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens"])
def test_negative_token_counts_are_refused_naming_the_field(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        PRICES.cost("plain", **{field: -1})
    with pytest.raises(ValueError, match=field):
        PRICES.cost("plain", **{field: 1.5})  # type: ignore[arg-type]


def test_table_values_may_be_mappings_and_bad_fields_are_named() -> None:
    table = PriceTable({"m": {"input": "0.5", "output": 2}})
    assert table["m"] == ModelPrice(input="0.5", output="2")
    with pytest.raises(ValueError, match="m: unknown price field"):
        PriceTable({"m": {"input": 1, "output": 1, "cahced_input": 1}})
    with pytest.raises(ValueError, match="m: missing price field output"):
        PriceTable({"m": {"input": 1}})
    with pytest.raises(ValueError, match="m: cache_write must be non-negative"):
        PriceTable({"m": {"input": 1, "output": 1, "cache_write": -1}})


def test_table_is_a_read_only_mapping() -> None:
    assert set(PRICES) == {"gpt-4o-mini", "claude-sonnet-4-5", "plain"}
    assert len(PRICES) == 3
    assert "plain" in PRICES


def test_from_json_file_reads_numbers_exactly(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text('{"gpt-4o-mini": {"input": 0.15, "output": "0.60", "cached_input": 0.075}}')
    table = PriceTable.from_file(path)
    assert table["gpt-4o-mini"] == PRICES["gpt-4o-mini"]
    assert table.cost("gpt-4o-mini-2024-07-18", input_tokens=1200, output_tokens=350) == 39_000


TOML = """
["gpt-4o-mini"]
input = 0.15
output = "0.60"
cached_input = 0.075

[claude-sonnet-4-5]
input = 3
output = 15
cached_input = 0.30
cache_write = 3.75
"""


def test_from_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(TOML)
    table = PriceTable.from_file(str(path))
    assert set(table) == {"gpt-4o-mini", "claude-sonnet-4-5"}
    assert dict(table) == {model: PRICES[model] for model in table}


def test_toml_without_a_reader_is_refused_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Python 3.10 without tomli: neither module importable.
    path = tmp_path / "prices.toml"
    path.write_text(TOML)
    monkeypatch.setitem(sys.modules, "tomllib", None)
    monkeypatch.setitem(sys.modules, "tomli", None)
    with pytest.raises(ImportError, match="install tomli"):
        PriceTable.from_file(path)


def test_toml_falls_back_to_tomli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Python 3.10 with tomli installed (tomli is the parser tomllib came from; stand in with this one).
    path = tmp_path / "prices.toml"
    path.write_text(TOML)
    tomli = types.ModuleType("tomli")
    tomli.loads = pricing._toml_loads()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tomllib", None)
    monkeypatch.setitem(sys.modules, "tomli", tomli)
    assert PriceTable.from_file(path)["claude-sonnet-4-5"].cache_write == Decimal("3.75")


def test_other_files_and_shapes_are_refused(tmp_path: Path) -> None:
    yaml_file = tmp_path / "prices.yaml"
    yaml_file.write_text("{}")
    with pytest.raises(ValueError, match=r"\.json or \.toml"):
        PriceTable.from_file(yaml_file)
    listing = tmp_path / "prices.json"
    listing.write_text("[1, 2]")
    with pytest.raises(ValueError, match="table of models"):
        PriceTable.from_file(listing)


# --- properties -------------------------------------------------------------------------------

prices_st = st.decimals(min_value=0, max_value=1000, places=6, allow_nan=False, allow_infinity=False)
counts_st = st.integers(min_value=0, max_value=10**9)
FIELDS = ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens")


@st.composite
def tables(draw: st.DrawFn) -> ModelPrice:
    return ModelPrice(
        input=draw(prices_st),
        output=draw(prices_st),
        cached_input=draw(st.none() | prices_st),
        cache_write=draw(st.none() | prices_st),
    )


def _exact(price: ModelPrice, counts: dict[str, int]) -> Fraction:
    cached = price.input if price.cached_input is None else price.cached_input
    write = price.input if price.cache_write is None else price.cache_write
    usd_per_million = (
        Fraction(price.input) * counts["input_tokens"]
        + Fraction(price.output) * counts["output_tokens"]
        + Fraction(cached) * counts["cached_input_tokens"]
        + Fraction(write) * counts["cache_write_tokens"]
    )
    return usd_per_million / 1_000_000 * 100_000_000


@given(tables(), st.fixed_dictionaries({f: counts_st for f in FIELDS}))
def test_cost_is_within_one_microcent_above_the_exact_value(price: ModelPrice, counts: dict[str, int]) -> None:
    cost = PriceTable({"m": price}).cost("m", **counts)
    exact = _exact(price, counts)
    assert exact <= cost < exact + 1


@given(tables(), st.fixed_dictionaries({f: counts_st for f in FIELDS}), st.sampled_from(FIELDS), counts_st)
def test_cost_is_monotone_in_every_token_count(
    price: ModelPrice, counts: dict[str, int], field: str, more: int
) -> None:
    table = PriceTable({"m": price})
    larger = dict(counts, **{field: counts[field] + more})
    assert table.cost("m", **larger) >= table.cost("m", **counts)
