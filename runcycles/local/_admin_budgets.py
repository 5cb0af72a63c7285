"""Admin plane, budgets: create, list, lookup, update, fund, freeze/unfreeze.

The operations take validated wire dicts and are shared by the HTTP handlers (``h_*``) and the Python
methods of :class:`~runcycles.local.LocalCyclesServer`.
"""

from __future__ import annotations

import json
from typing import Any

from . import _ledger as db
from ._admin_schemas import BUDGET_CREATE, BUDGET_UPDATE, FUNDING, STATUS_TRANSITION, paged, required_param, scope_unit
from ._base import (
    Env,
    LocalServerError,
    Request,
    amount,
    dumps,
    invalid,
    iso,
    new_id,
    payload_hash,
)
from ._ledger import Budget
from ._runtime_shared import DAY_MS, Response, check_scope_access
from ._validate import (
    INT64_MAX,
    SCOPE_LEVELS,
    SUBJECT_VALUE,
)


def canonical_scope(scope: str, tenant_id: str) -> str:
    """Check and lower-case a budget scope: ``tenant:<id>[/level:value...]`` in canonical level order."""
    parts: list[str] = []
    last = -1
    for segment in scope.split("/"):
        level, sep, value = segment.partition(":")
        if not sep or level not in SCOPE_LEVELS or not SUBJECT_VALUE.match(value):
            raise invalid(f"scope segment {segment!r} is not level:value")
        index = SCOPE_LEVELS.index(level)
        if index <= last:
            raise invalid("scope levels must follow tenant/workspace/app/workflow/agent/toolset order")
        last = index
        parts.append(f"{level}:{value.lower()}")
    if not parts[0] == f"tenant:{tenant_id.lower()}":
        raise invalid(f"scope must start with tenant:{tenant_id}")
    return "/".join(parts)


def ledger_wire(budget: Budget) -> dict[str, Any]:
    """A ``BudgetLedger`` wire object (exactly the schema's fields)."""
    unit = budget.unit
    out: dict[str, Any] = {
        "ledger_id": budget.ledger_id,
        "tenant_id": budget.tenant_id,
        "scope": budget.scope,
        "scope_path": budget.scope,
        "unit": unit,
        "allocated": amount(unit, budget.allocated),
        "remaining": amount(unit, budget.remaining),
        "reserved": amount(unit, budget.reserved),
        "spent": amount(unit, budget.spent),
        "debt": amount(unit, budget.debt),
        "overdraft_limit": amount(unit, budget.overdraft_limit),
        "is_over_limit": budget.is_over_limit,
        "status": budget.status,
        "created_at": iso(budget.created_at_ms),
        "updated_at": iso(budget.updated_at_ms),
    }
    # BudgetLedger has additionalProperties: false, so the stored metadata and caps stay off the wire.
    for field in ("commit_overage_policy", "rollover_policy", "period_start", "period_end"):
        if field in budget.doc:
            out[field] = budget.doc[field]
    return out


def _same_unit(unit: str, value: dict[str, Any] | None, name: str) -> int:
    if value is None:
        return 0
    if value["unit"] != unit:
        raise LocalServerError(400, "UNIT_MISMATCH", f"{name}.unit must be {unit}")
    return int(value["amount"])


def create_budget(env: Env, tenant_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Create the (scope, unit) ledger for ``tenant_id``; 409 DUPLICATE_RESOURCE if it exists."""
    unit = body["unit"]
    scope = canonical_scope(body["scope"], tenant_id)
    allocated = _same_unit(unit, body["allocated"], "allocated")
    overdraft = _same_unit(unit, body.get("overdraft_limit"), "overdraft_limit")
    with env.ledger.write() as conn:
        now = env.clock()
        tenant = db.get_tenant(conn, tenant_id)
        if tenant is None:
            raise invalid(f"Tenant not found: {tenant_id}")
        if tenant["status"] == "CLOSED":
            raise LocalServerError(409, "TENANT_CLOSED", "Tenant is closed")
        if db.get_budget(conn, scope, unit) is not None:
            raise LocalServerError(409, "DUPLICATE_RESOURCE", f"Budget already exists for {scope} in {unit}")
        doc: dict[str, Any] = {
            "commit_overage_policy": body.get(
                "commit_overage_policy", tenant.get("default_commit_overage_policy", "ALLOW_IF_AVAILABLE")
            ),
            "rollover_policy": body.get("rollover_policy", "NONE"),
            **{k: body[k] for k in ("period_start", "period_end", "metadata", "caps") if k in body},
        }
        budget = Budget(
            scope=scope,
            unit=unit,
            tenant_id=tenant_id,
            ledger_id="led_" + new_id().replace("-", ""),
            allocated=allocated,
            overdraft_limit=overdraft,
            created_at_ms=now,
            updated_at_ms=now,
            doc=doc,
        )
        db.insert_budget(conn, budget)
        return ledger_wire(budget)


def budget_or_404(conn: Any, scope: str, unit: str, tenant_id: str | None) -> Budget:
    """The budget at (scope, unit) visible to ``tenant_id`` (``None``: any tenant), or 404."""
    budget = db.get_budget(conn, scope.lower(), unit)
    if budget is None or (tenant_id is not None and budget.tenant_id != tenant_id):
        raise LocalServerError(404, "BUDGET_NOT_FOUND", f"Budget not found for {scope} in {unit}")
    return budget


def update_budget(env: Env, scope: str, unit: str, body: dict[str, Any]) -> dict[str, Any]:
    """Patch overdraft limit, default policy, metadata or caps (and reconcile ``is_over_limit``)."""
    with env.ledger.write() as conn:
        now = env.clock()
        budget = budget_or_404(conn, scope, unit, None)
        if budget.status == "CLOSED":
            raise LocalServerError(409, "BUDGET_CLOSED", "Budget is closed")
        if "overdraft_limit" in body:
            budget.overdraft_limit = _same_unit(unit, body["overdraft_limit"], "overdraft_limit")
        budget.doc.update({k: body[k] for k in ("commit_overage_policy", "metadata", "caps") if k in body})
        budget.reconcile()
        db.save_budget(conn, budget, now)
        return ledger_wire(budget)


def fund_budget(env: Env, scope: str, unit: str, tenant_id: str | None, body: dict[str, Any]) -> dict[str, Any]:
    """CREDIT / DEBIT / RESET / RESET_SPENT / REPAY_DEBT on one ledger (replayable by ``idempotency_key``)."""
    with env.ledger.write() as conn:
        now = env.clock()
        budget = budget_or_404(conn, scope, unit, tenant_id)
        key = body.get("idempotency_key")
        endpoint = f"fund:{budget.scope}:{unit}"
        digest = payload_hash(body)
        if key is not None:
            found = db.get_idempotent(conn, budget.tenant_id, endpoint, key, now)
            if found is not None:
                if found[0] != digest:
                    raise LocalServerError(409, "IDEMPOTENCY_MISMATCH", "Idempotency key reused with a different body")
                result: dict[str, Any] = json.loads(found[2])
                return result
        if budget.status in ("FROZEN", "CLOSED"):
            raise LocalServerError(409, f"BUDGET_{budget.status}", f"Budget is {budget.status}")
        value = _same_unit(unit, body["amount"], "amount")
        before = (budget.allocated, budget.remaining, budget.debt, budget.spent)
        operation = body["operation"]
        if operation == "CREDIT":
            budget.allocated += value
        elif operation == "DEBIT":
            if budget.remaining - value < 0:
                raise LocalServerError(409, "BUDGET_EXCEEDED", "DEBIT would make remaining negative")
            budget.allocated -= value
        elif operation == "RESET":
            budget.allocated = value
        elif operation == "RESET_SPENT":
            budget.allocated = value
            budget.spent = _same_unit(unit, body.get("spent"), "spent")
        else:  # REPAY_DEBT: capped at the outstanding debt
            budget.debt -= min(value, budget.debt)
        if budget.allocated > INT64_MAX:
            raise invalid(f"{operation} would take allocated past {INT64_MAX}")
        budget.reconcile()
        db.save_budget(conn, budget, now)
        result = {
            "operation": operation,
            "previous_allocated": amount(unit, before[0]),
            "new_allocated": amount(unit, budget.allocated),
            "previous_remaining": amount(unit, before[1]),
            "new_remaining": amount(unit, budget.remaining),
            "previous_debt": amount(unit, before[2]),
            "new_debt": amount(unit, budget.debt),
            "previous_spent": amount(unit, before[3]),
            "new_spent": amount(unit, budget.spent),
            "timestamp": iso(now),
        }
        if key is not None:
            db.put_idempotent(conn, budget.tenant_id, endpoint, key, digest, 200, dumps(result), now + 30 * DAY_MS)
        return result


def set_budget_status(env: Env, scope: str, unit: str, target: str) -> dict[str, Any]:
    """Freeze (``target="FROZEN"``), unfreeze (``"ACTIVE"``) or close (``"CLOSED"``) a budget."""
    with env.ledger.write() as conn:
        now = env.clock()
        budget = budget_or_404(conn, scope, unit, None)
        if budget.status == "CLOSED":
            raise LocalServerError(409, "BUDGET_CLOSED", "Budget is closed (irreversible)")
        if budget.status == target:
            code = "BUDGET_FROZEN" if target == "FROZEN" else "INVALID_REQUEST"
            raise LocalServerError(409, code, f"Budget is already {target}")
        budget.status = target
        db.save_budget(conn, budget, now)
        return ledger_wire(budget)


# --- HTTP handlers ---------------------------------------------------------------------------------------


def _budget_tenant(req: Request, body_tenant: str | None) -> str:
    """Dual auth: the admin key names the tenant explicitly; a tenant key must not."""
    if req.admin:
        if body_tenant is None:
            raise invalid("tenant_id is required when using admin key authentication")
        return body_tenant
    if body_tenant is not None:
        raise invalid("tenant_id must not be sent with a tenant API key")
    assert req.tenant is not None
    return req.tenant


def h_create_budget(env: Env, req: Request) -> Response:
    """``POST /v1/admin/budgets`` (201)."""
    body = req.json(BUDGET_CREATE)
    tenant_id = _budget_tenant(req, body.get("tenant_id"))
    check_scope_access(req, canonical_scope(body["scope"], tenant_id))
    return 201, dumps(create_budget(env, tenant_id, body))


def h_list_budgets(env: Env, req: Request) -> Response:
    """``GET /v1/admin/budgets`` with tenant, scope prefix, unit, status, over-limit and debt filters."""
    tenant_id = req.param("tenant_id") if req.admin else req.tenant
    prefix, unit, status = req.param("scope_prefix"), req.param("unit"), req.param("status")
    over_limit, has_debt = req.param("over_limit"), req.param("has_debt")
    with env.ledger.read() as conn:
        budgets = db.tenant_budgets(conn, tenant_id)
    rows = [
        ledger_wire(b)
        for b in budgets
        if (prefix is None or b.scope.startswith(prefix.lower()))
        and (unit is None or b.unit == unit)
        and (status is None or b.status == status)
        and (over_limit is None or b.is_over_limit == (over_limit.lower() == "true"))
        and (has_debt is None or (b.debt > 0) == (has_debt.lower() == "true"))
        and (req.grant is None or req.grant.covers(b.scope))
    ]
    return paged(env, req, rows, "ledgers", tenant_id, prefix, unit, status, over_limit, has_debt)


def h_lookup_budget(env: Env, req: Request) -> Response:
    """``GET /v1/admin/budgets/lookup?scope=&unit=``."""
    scope, unit = scope_unit(req)
    with env.ledger.read() as conn:
        budget = budget_or_404(conn, scope, unit, None if req.admin else req.tenant)
    check_scope_access(req, budget.scope)
    return 200, dumps(ledger_wire(budget))


def h_update_budget(env: Env, req: Request) -> Response:
    """``PATCH /v1/admin/budgets?scope=&unit=``."""
    scope, unit = scope_unit(req)
    return 200, dumps(update_budget(env, scope, unit, req.json(BUDGET_UPDATE)))


def h_fund_budget(env: Env, req: Request) -> Response:
    """``POST /v1/admin/budgets/fund?scope=&unit=[&tenant_id=]``."""
    scope, unit = scope_unit(req)
    tenant_id = required_param(req, "tenant_id") if req.admin else req.tenant
    body = req.json(FUNDING)
    check_scope_access(req, scope)
    return 200, dumps(fund_budget(env, scope, unit, tenant_id, body))


def _transition(env: Env, req: Request, target: str) -> Response:
    scope, unit = scope_unit(req)
    if req.body.strip():
        req.json(STATUS_TRANSITION)
    return 200, dumps(set_budget_status(env, scope, unit, target))


def h_freeze_budget(env: Env, req: Request) -> Response:
    """``POST /v1/admin/budgets/freeze?scope=&unit=``."""
    return _transition(env, req, "FROZEN")


def h_unfreeze_budget(env: Env, req: Request) -> Response:
    """``POST /v1/admin/budgets/unfreeze?scope=&unit=``."""
    return _transition(env, req, "ACTIVE")
