"""Output of the operator CLI: amounts (in the unit, and in dollars for USD_MICROCENTS), tables, key/value
blocks, JSON; and the parsing of amounts typed by an operator."""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Iterable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, TextIO

MICROCENTS_PER_DOLLAR = 100_000_000
"""``USD_MICROCENTS`` in one US dollar."""

_USD = "USD_MICROCENTS"
_INTEGER = re.compile(r"^[0-9][0-9_,]*$")


def dollars(microcents: int) -> str:
    """``150_000_000`` -> ``$1.50``; sub-cent amounts keep their digits (``150`` -> ``$0.0000015``)."""
    value = Decimal(abs(microcents)).scaleb(-8)
    text = f"{value:,.2f}" if value == value.quantize(Decimal("0.01")) else f"{value.normalize():,f}"
    return f"{'-' if microcents < 0 else ''}${text}"


def amount_text(amount: int | None, unit: object) -> str:
    """An amount for people: ``100,000,000 USD_MICROCENTS ($1.00)``, ``5,000 TOKENS``; ``-`` when absent."""
    if amount is None:
        return "-"
    name = str(getattr(unit, "value", unit))
    text = f"{amount:,} {name}"
    return f"{text} ({dollars(amount)})" if name == _USD else text


def cell(amount: int | None, unit: object) -> str:
    """An amount in a table column: ``100,000,000 ($1.00)`` (the unit has its own column)."""
    if amount is None:
        return "-"
    return f"{amount:,} ({dollars(amount)})" if str(getattr(unit, "value", unit)) == _USD else f"{amount:,}"


def parse_amount(text: str, unit: str, name: str = "amount") -> int:
    """An operator's amount: an integer in ``unit`` (``_`` and ``,`` allowed as separators), or for
    USD_MICROCENTS a dollar amount written ``$1.50``. Raises ``ValueError`` naming ``name``."""
    raw = text.strip()
    if raw.startswith("$"):
        if unit != _USD:
            raise ValueError(f"{name}: a $ amount needs --unit USD_MICROCENTS, not {unit}")
        try:
            value = Decimal(raw[1:].replace(",", "").replace("_", "")) * MICROCENTS_PER_DOLLAR
        except InvalidOperation:
            raise ValueError(f"{name} must be a number of dollars like $1.50, got {text!r}") from None
        if value != value.to_integral_value() or value < 0:
            raise ValueError(f"{name} must be a whole, non-negative number of microcents, got {text!r}")
        return int(value)
    if not _INTEGER.match(raw):
        hint = " or dollars like $1.50" if unit == _USD else ""
        raise ValueError(f"{name} must be a non-negative integer in {unit}{hint}, got {text!r}")
    return int(raw.replace("_", "").replace(",", ""))


def epoch_ms(value: int | None) -> str:
    """Epoch milliseconds as an ISO 8601 UTC time (runtime-plane timestamps)."""
    if value is None:
        return "-"
    moment = _dt.datetime.fromtimestamp(value / 1000, tz=_dt.timezone.utc)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def plain(value: object) -> str:
    """A value as table text: enum values unwrapped, lists comma-joined, ``None`` as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return ",".join(plain(v) for v in value) or "-"
    return str(getattr(value, "value", value))


def table(out: TextIO, headers: Sequence[str], rows: Iterable[Sequence[str]], empty: str) -> None:
    """Left-aligned columns, or ``empty`` when there is no row."""
    lines = [list(headers), *[list(r) for r in rows]]
    if len(lines) == 1:
        print(empty, file=out)
        return
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    for line in lines:
        print("  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip(), file=out)


def block(out: TextIO, pairs: Sequence[tuple[str, str]]) -> None:
    """``key:  value`` lines, aligned."""
    width = max(len(key) for key, _ in pairs) + 1
    for key, value in pairs:
        print(f"{key + ':':<{width}}  {value}", file=out)


def emit_json(out: TextIO, value: Any) -> None:
    """Indented JSON (one document) for scripts."""
    print(json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False), file=out)
