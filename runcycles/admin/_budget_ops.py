"""Budget operations without I/O (see :mod:`runcycles.admin._operations` for :class:`AdminCall`)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from . import _check as c
from ._models import BudgetFunding, BudgetLedger, BudgetStatus, FundingOperation, Page, RolloverPolicy, _LedgerPage
from ._operations import AdminCall, _fields, _limit, _maybe, _page_reader, _query, _reader

_BUDGETS = "/v1/admin/budgets"


def _scope_unit(scope: str, unit: object) -> tuple[tuple[str, str], ...]:
    return (("scope", c.text("scope", scope)), ("unit", c.unit(unit)))


def _tenant_for(scope: str, tenant_id: str | None, what: str) -> str:
    if tenant_id is not None:
        return c.text("tenant_id", tenant_id)
    found = c.tenant_of_scope(c.text("scope", scope))
    if found is None:
        raise ValueError(f"{what}: tenant_id is required when scope does not start with tenant:<id>")
    return found


def create_budget(
    scope: str,
    unit: object,
    allocated: object,
    *,
    tenant_id: str | None = None,
    overdraft_limit: object = None,
    commit_overage_policy: object = None,
    rollover_policy: object = None,
    period_start: object = None,
    period_end: object = None,
    metadata: Mapping[str, Any] | None = None,
) -> AdminCall[BudgetLedger]:
    """``POST /v1/admin/budgets`` (201). ``tenant_id`` defaults to the scope's ``tenant:<id>``."""
    wire_unit = c.unit(unit)
    body = _fields(
        tenant_id=_tenant_for(scope, tenant_id, "create_budget"),
        scope=c.text("scope", scope),
        unit=wire_unit,
        allocated=c.amount("allocated", allocated, wire_unit),
        overdraft_limit=None if overdraft_limit is None else c.amount("overdraft_limit", overdraft_limit, wire_unit),
        commit_overage_policy=_maybe(c.policy, "commit_overage_policy", commit_overage_policy),
        rollover_policy=_maybe(c.choice, "rollover_policy", rollover_policy, RolloverPolicy),
        period_start=_maybe(c.timestamp, "period_start", period_start),
        period_end=_maybe(c.timestamp, "period_end", period_end),
        metadata=None if metadata is None else c.mapping("metadata", metadata),
    )
    return AdminCall(what="create_budget", method="POST", path=_BUDGETS, body=body, reader=_reader(BudgetLedger))


def list_budgets(
    *,
    tenant_id: str | None = None,
    scope_prefix: str | None = None,
    unit: object = None,
    status: object = None,
    over_limit: bool | None = None,
    has_debt: bool | None = None,
    utilization_min: float | None = None,
    utilization_max: float | None = None,
    search: str | None = None,
    sort_by: str | None = None,
    sort_dir: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> AdminCall[Page[BudgetLedger]]:
    """``GET /v1/admin/budgets`` (one page; all tenants when ``tenant_id`` is omitted)."""
    for name, bound in (("utilization_min", utilization_min), ("utilization_max", utilization_max)):
        number = isinstance(bound, (int, float)) and not isinstance(bound, bool)
        if bound is not None and (not number or not 0 <= bound <= 1):
            raise ValueError(f"{name} must be a number between 0 and 1, got {bound!r}")
    if utilization_min is not None and utilization_max is not None and utilization_min > utilization_max:
        raise ValueError("utilization_min must not be greater than utilization_max")
    params = _query(
        tenant_id=tenant_id,
        scope_prefix=scope_prefix,
        unit=None if unit is None else c.unit(unit),
        status=_maybe(c.choice, "status", status, BudgetStatus),
        over_limit=_maybe(c.flag, "over_limit", over_limit),
        has_debt=_maybe(c.flag, "has_debt", has_debt),
        utilization_min=utilization_min,
        utilization_max=utilization_max,
        search=search,
        sort_by=sort_by,
        sort_dir=sort_dir,
        limit=_limit(limit),
        cursor=cursor,
    )
    return AdminCall(
        what="list_budgets", method="GET", path=_BUDGETS, params=params, reader=_page_reader(_LedgerPage, "ledgers")
    )


def get_budget(scope: str, unit: object) -> AdminCall[BudgetLedger]:
    """``GET /v1/admin/budgets/lookup?scope=&unit=`` (exact scope)."""
    return AdminCall(
        what="get_budget",
        method="GET",
        path=f"{_BUDGETS}/lookup",
        params=_scope_unit(scope, unit),
        reader=_reader(BudgetLedger),
    )


def update_budget(
    scope: str,
    unit: object,
    *,
    overdraft_limit: object = None,
    commit_overage_policy: object = None,
    metadata: Mapping[str, Any] | None = None,
) -> AdminCall[BudgetLedger]:
    """``PATCH /v1/admin/budgets?scope=&unit=``: only the given fields change."""
    params = _scope_unit(scope, unit)
    body = _fields(
        overdraft_limit=None if overdraft_limit is None else c.amount("overdraft_limit", overdraft_limit, params[1][1]),
        commit_overage_policy=_maybe(c.policy, "commit_overage_policy", commit_overage_policy),
        metadata=None if metadata is None else c.mapping("metadata", metadata),
    )
    if not body:
        raise ValueError("update_budget needs at least one field to change")
    return AdminCall(
        what="update_budget", method="PATCH", path=_BUDGETS, params=params, body=body, reader=_reader(BudgetLedger)
    )


def fund_budget(
    scope: str,
    unit: object,
    operation: FundingOperation | str,
    amount: object,
    *,
    tenant_id: str | None = None,
    spent: object = None,
    reason: str | None = None,
    idempotency_key: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> AdminCall[BudgetFunding]:
    """``POST /v1/admin/budgets/fund``. A missing ``idempotency_key`` is generated (the spec requires one);
    pass your own to make a retry safe."""
    params = _scope_unit(scope, unit)
    wire_unit = params[1][1]
    op = c.choice("operation", operation, FundingOperation)
    if spent is not None and op != FundingOperation.RESET_SPENT.value:
        raise ValueError("spent is only allowed with RESET_SPENT")
    body = _fields(
        operation=op,
        amount=c.amount("amount", amount, wire_unit),
        spent=None if spent is None else c.amount("spent", spent, wire_unit),
        reason=None if reason is None else c.text("reason", reason, max_len=512),
        idempotency_key=c.text("idempotency_key", idempotency_key or str(uuid.uuid4()), max_len=256),
        metadata=None if metadata is None else c.mapping("metadata", metadata),
    )
    query = (*params, ("tenant_id", _tenant_for(scope, tenant_id, "fund_budget")))
    return AdminCall(
        what="fund_budget",
        method="POST",
        path=f"{_BUDGETS}/fund",
        params=query,
        body=body,
        reader=_reader(BudgetFunding),
    )


def set_budget_frozen(
    scope: str, unit: object, frozen: bool, *, reason: str | None = None, metadata: Mapping[str, Any] | None = None
) -> AdminCall[BudgetLedger]:
    """``POST /v1/admin/budgets/freeze`` (``frozen=True``) or ``/unfreeze``."""
    body = _fields(
        reason=None if reason is None else c.text("reason", reason, max_len=512),
        metadata=None if metadata is None else c.mapping("metadata", metadata),
    )
    action = "freeze" if frozen else "unfreeze"
    return AdminCall(
        what=f"{action}_budget",
        method="POST",
        path=f"{_BUDGETS}/{action}",
        params=_scope_unit(scope, unit),
        body=body,
        reader=_reader(BudgetLedger),
    )
