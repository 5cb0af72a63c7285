"""Ledger balances: one (scope, unit) :class:`Balance` and the ``GET /v1/balances`` listing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from .. import _wire as w
from ._fields import Paged, extra, paged
from ._values import Amount, SignedAmount

__all__ = ["Balance", "BalanceResponse"]


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


@attrs.frozen(kw_only=True)
class BalanceResponse(Paged):
    """``GET /v1/balances`` 200 body."""

    balances: tuple[Balance, ...] = paged(Balance)
