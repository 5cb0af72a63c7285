"""What LLM work costs, in ``USD_MICROCENTS``, computed exactly.

A :class:`PriceTable` maps model names to :class:`ModelPrice` entries in USD per one million
tokens. :meth:`PriceTable.cost` turns token counts into microcents ($1 = 100_000_000) with exact
rational arithmetic and rounds up to a whole microcent once per call, so a cost is never below the
exact value and never more than one microcent above it.

No prices ship with the library: they change, and a stale table would silently misbill. Build the
table in code or load it with :meth:`PriceTable.from_file` (JSON or TOML)::

    prices = PriceTable({
        "gpt-4o-mini": ModelPrice(input="0.15", output="0.60", cached_input="0.075"),
        "claude-sonnet-4-5": ModelPrice(input="3", output="15", cached_input="0.30", cache_write="3.75"),
    })
    prices.cost("gpt-4o-mini-2024-07-18", input_tokens=1200, output_tokens=350)
"""

from __future__ import annotations

import difflib
import importlib
import json
import math
import re
from collections.abc import Iterator, Mapping
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Any

import attrs

__all__ = ["ModelPrice", "PriceTable", "UnknownModelError"]

# USD per 1M tokens -> microcents per token: * 100_000_000 / 1_000_000.
_MICROCENTS_PER_USD_PER_MILLION = 100

_DATE_SUFFIX = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8})$")
_PRICE_FIELDS = ("input", "output", "cached_input", "cache_write")


def _to_decimal(value: object, field: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        raise ValueError(f"{field} must be a decimal string, an int or a Decimal, got {type(value).__name__}")
    try:
        number = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{field} is not a decimal number: {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"{field} must be a finite number, got {value!r}")
    if number < 0:
        raise ValueError(f"{field} must be non-negative, got {value!r}")
    return number


def _input_price(value: object) -> Decimal:
    return _to_decimal(value, "input")


def _output_price(value: object) -> Decimal:
    return _to_decimal(value, "output")


def _cached_input_price(value: object) -> Decimal | None:
    return None if value is None else _to_decimal(value, "cached_input")


def _cache_write_price(value: object) -> Decimal | None:
    return None if value is None else _to_decimal(value, "cache_write")


@attrs.frozen
class ModelPrice:
    """Prices of one model in USD per one million tokens, as exact decimals.

    ``cached_input`` bills prompt tokens served from the provider's cache (defaults to ``input``);
    ``cache_write`` bills prompt tokens written to the cache (defaults to ``input``).
    Negative or non-finite prices raise ``ValueError`` naming the field.
    """

    input: Decimal = attrs.field(converter=_input_price)
    output: Decimal = attrs.field(converter=_output_price)
    cached_input: Decimal | None = attrs.field(default=None, converter=_cached_input_price)
    cache_write: Decimal | None = attrs.field(default=None, converter=_cache_write_price)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, model: str = "price") -> ModelPrice:
        """Build a price from a mapping with the keys ``input``, ``output``, ``cached_input``, ``cache_write``."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{model}: a price must be a table of input/output prices, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_PRICE_FIELDS))
        if unknown:
            expected = ", ".join(_PRICE_FIELDS)
            raise ValueError(f"{model}: unknown price field(s) {', '.join(unknown)}; expected {expected}")
        for required in ("input", "output"):
            if required not in data:
                raise ValueError(f"{model}: missing price field {required}")
        try:
            return cls(**{key: data[key] for key in _PRICE_FIELDS if key in data})
        except ValueError as exc:
            raise ValueError(f"{model}: {exc}") from None


class UnknownModelError(LookupError):
    """No price is known for a model (neither its exact name nor the name without a date suffix)."""

    def __init__(self, model: str, suggestions: list[str]) -> None:
        self.model = model
        self.suggestions = suggestions
        hint = f"; closest known: {', '.join(suggestions)}" if suggestions else ""
        super().__init__(f"no price for model {model!r}{hint}")


def _count(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{field} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{field} must be non-negative, got {value}")
    return value


class PriceTable(Mapping[str, ModelPrice]):
    """Model name → :class:`ModelPrice`; computes costs in ``USD_MICROCENTS``.

    Values may be :class:`ModelPrice` objects or mappings of the same fields. The table is a
    read-only ``Mapping``. Lookups accept the exact name, else the name without a trailing date
    suffix (``gpt-4o-mini-2024-07-18`` → ``gpt-4o-mini``, ``claude-sonnet-4-5-20250929`` →
    ``claude-sonnet-4-5``).
    """

    def __init__(self, prices: Mapping[str, ModelPrice | Mapping[str, Any]]) -> None:
        table: dict[str, ModelPrice] = {}
        for model, price in prices.items():
            if not isinstance(model, str) or not model:
                raise ValueError(f"model names must be non-empty strings, got {model!r}")
            table[model] = price if isinstance(price, ModelPrice) else ModelPrice.from_mapping(price, model=model)
        self._prices = table

    def __getitem__(self, model: str) -> ModelPrice:
        return self._prices[model]

    def __iter__(self) -> Iterator[str]:
        return iter(self._prices)

    def __len__(self) -> int:
        return len(self._prices)

    def __repr__(self) -> str:
        return f"PriceTable({self._prices!r})"

    def resolve(self, model: str) -> str:
        """The table's name for ``model``: the exact name, else the name without its date suffix."""
        if model in self._prices:
            return model
        undated = _DATE_SUFFIX.sub("", model)
        if undated in self._prices:
            return undated
        close = difflib.get_close_matches(undated, list(self._prices), n=3, cutoff=0.5)
        raise UnknownModelError(model, close)

    def price(self, model: str) -> ModelPrice:
        """The :class:`ModelPrice` for ``model`` (dated names resolve); ``UnknownModelError`` if none."""
        return self._prices[self.resolve(model)]

    def cost(
        self,
        model: str,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cached_input_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> int:
        """Exact cost in ``USD_MICROCENTS``, rounded up once to a whole microcent.

        ``input_tokens`` excludes ``cached_input_tokens`` (billed at ``cached_input``, else ``input``)
        and ``cache_write_tokens`` (billed at ``cache_write``, else ``input``).
        """
        counts = (
            _count(input_tokens, "input_tokens"),
            _count(output_tokens, "output_tokens"),
            _count(cached_input_tokens, "cached_input_tokens"),
            _count(cache_write_tokens, "cache_write_tokens"),
        )
        price = self.price(model)
        rates = (
            price.input,
            price.output,
            price.input if price.cached_input is None else price.cached_input,
            price.input if price.cache_write is None else price.cache_write,
        )
        exact = sum((Fraction(rate) * n for rate, n in zip(rates, counts, strict=True)), Fraction(0))
        return math.ceil(exact * _MICROCENTS_PER_USD_PER_MILLION)

    def estimate(self, model: str, *, input_tokens: int, max_output_tokens: int) -> int:
        """Cost of ``input_tokens`` at the full input price plus ``max_output_tokens`` output tokens.

        Meant for a reservation: the prompt counted as uncached input and the largest answer the
        request allows.
        """
        return self.cost(model, input_tokens=input_tokens, output_tokens=max_output_tokens)

    @classmethod
    def from_file(cls, path: str | Path) -> PriceTable:
        """Load a table from a ``.json`` or ``.toml`` file shaped like the constructor's mapping.

        JSON: ``{"gpt-4o-mini": {"input": "0.15", "output": "0.60"}}``; TOML:
        ``[gpt-4o-mini]`` tables (quote names with dots: ``["gpt-4.1"]``). Numbers are read as exact
        decimals. TOML needs ``tomllib`` (Python 3.11+) or the ``tomli`` package on Python 3.10.
        """
        file = Path(path)
        suffix = file.suffix.lower()
        if suffix == ".json":
            data = json.loads(file.read_text(encoding="utf-8"), parse_float=Decimal)
        elif suffix == ".toml":
            loads = _toml_loads()
            data = loads(file.read_text(encoding="utf-8"), parse_float=Decimal)
        else:
            raise ValueError(f"price table file must end in .json or .toml: {file}")
        if not isinstance(data, dict):
            raise ValueError(f"price table file must hold a table of models: {file}")
        return cls(data)


def _toml_loads() -> Any:
    for name in ("tomllib", "tomli"):
        try:
            return importlib.import_module(name).loads
        except ImportError:
            continue
    raise ImportError(
        "reading a TOML price table needs a TOML reader: Python 3.11+ has tomllib; "
        "on Python 3.10 install tomli (pip install tomli) or use a JSON file"
    )
