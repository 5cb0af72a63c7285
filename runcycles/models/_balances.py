"""Ledger balances: one (scope, unit) :class:`Balance` and the ``GET /v1/balances`` listing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from .. import _wire as w
from ._fields import Paged, extra
from ._values import Amount, SignedAmount

__all__ = ["BALANCES", "Balance", "BalanceResponse", "to_balances"]


@attrs.frozen(kw_only=True)
class Balance:
    """Ledger state of one (scope, unit) balance."""

    scope: str = attrs.field(metadata=w.STR)
    scope_path: str = attrs.field(metadata=w.STR)
    remaining: SignedAmount = attrs.field(metadata=w.model(SignedAmount))
    reserved: Amount | None = attrs.field(default=None, metadata=w.model(Amount))
    spent: Amount | None = attrs.field(default=None, metadata=w.model(Amount))
    debt: Amount | None = attrs.field(default=None, metadata=w.model(Amount))
    allocated: Amount | None = attrs.field(default=None, metadata=w.model(Amount))
    overdraft_limit: Amount | None = attrs.field(default=None, metadata=w.model(Amount))
    is_over_limit: bool | None = attrs.field(default=None, metadata=w.BOOL)
    extra: Mapping[str, Any] = extra()


def to_balances(value: Sequence[Balance] | None) -> tuple[Balance, ...] | None:
    """Converter of ``balances`` fields: a list of balances as a tuple."""
    return tuple(value) if isinstance(value, (list, tuple)) else value  # type: ignore[return-value]


def _to_balance_page(value: Sequence[Balance]) -> tuple[Balance, ...]:
    return tuple(value) if isinstance(value, (list, tuple)) else value  # type: ignore[return-value]


BALANCES = w.model_list(Balance, lenient=True)
"""Wire metadata of the informational ``balances`` of a response: a malformed list is kept in ``extra``."""


@attrs.frozen(kw_only=True)
class BalanceResponse(Paged):
    """``GET /v1/balances`` 200 body."""

    balances: tuple[Balance, ...] = attrs.field(converter=_to_balance_page, metadata=w.model_list(Balance))
