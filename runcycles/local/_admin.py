"""Admin-plane subset: tenants, API keys, budgets (create, list, lookup, update, fund, freeze/unfreeze).

The operations take validated wire dicts and are shared by the HTTP handlers (``h_*``) and the Python
methods of :class:`~runcycles.local.LocalCyclesServer`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import string as _string
from typing import Any

from . import _ledger as db
from ._access import DEFAULT_PERMISSIONS, Grant, check_permissions, check_scope_filter
from ._base import (
    Env,
    LocalServerError,
    Request,
    amount,
    binding,
    cursor_offset,
    decode_cursor,
    dumps,
    encode_cursor,
    invalid,
    iso,
    new_id,
    page_limit,
    parse_iso,
    payload_hash,
)
from ._ledger import Budget
from ._runtime import DAY_MS, TENANT_DEFAULTS, Response, check_scope_access
from ._validate import (
    AMOUNT,
    CAPS,
    FREE_OBJECT,
    INT64_MAX,
    OVERAGE,
    SCOPE_LEVELS,
    SUBJECT_VALUE,
    UNIT,
    Check,
    SchemaError,
    integer,
    obj,
    string,
)

_TTL = integer(minimum=1000, maximum=86_400_000)
_TENANT_STATUS = ("ACTIVE", "SUSPENDED", "CLOSED")
_EXPIRY_POLICY = string(enum=("AUTO_RELEASE", "MANUAL_CLEANUP", "GRACE_ONLY"))
TENANT_CREATE = obj(
    {
        "tenant_id": string(min_len=3, max_len=64, pattern=re.compile(r"^[a-z0-9-]+$")),
        "name": string(max_len=256),
        "parent_tenant_id": string(),
        "metadata": obj(additional=string(), max_props=32),
        "default_commit_overage_policy": OVERAGE,
        "default_reservation_ttl_ms": _TTL,
        "max_reservation_ttl_ms": _TTL,
        "max_reservation_extensions": integer(minimum=0),
        "reservation_expiry_policy": _EXPIRY_POLICY,
    },
    required=("tenant_id", "name"),
)
TENANT_UPDATE = obj(
    {
        "name": string(max_len=256),
        "status": string(enum=_TENANT_STATUS),
        "metadata": obj(additional=string(), max_props=32),
        "default_commit_overage_policy": OVERAGE,
        "default_reservation_ttl_ms": _TTL,
        "max_reservation_ttl_ms": _TTL,
        "max_reservation_extensions": integer(minimum=0),
    }
)
API_KEY_CREATE = obj(
    {
        "tenant_id": string(),
        "name": string(max_len=256),
        "description": string(max_len=1024),
        "permissions": check_permissions,
        "scope_filter": check_scope_filter,
        "expires_at": string(max_len=64),
        "metadata": FREE_OBJECT,
    },
    required=("tenant_id", "name"),
)
BUDGET_CREATE = obj(
    {
        "tenant_id": string(),
        "scope": string(min_len=1),
        "unit": UNIT,
        "allocated": AMOUNT,
        "overdraft_limit": AMOUNT,
        "commit_overage_policy": OVERAGE,
        "rollover_policy": string(enum=("NONE", "CARRY_FORWARD", "CAP_AT_ALLOCATED")),
        "period_start": string(),
        "period_end": string(),
        "metadata": FREE_OBJECT,
        "caps": CAPS,  # local extension: returned as ALLOW_WITH_CAPS when this is the deepest budgeted scope
    },
    required=("scope", "unit", "allocated"),
)
BUDGET_UPDATE = obj(
    {"overdraft_limit": AMOUNT, "commit_overage_policy": OVERAGE, "metadata": FREE_OBJECT, "caps": CAPS}
)
FUNDING = obj(
    {
        "operation": string(enum=("CREDIT", "DEBIT", "RESET", "REPAY_DEBT", "RESET_SPENT")),
        "amount": AMOUNT,
        "spent": AMOUNT,
        "reason": string(max_len=512),
        "idempotency_key": string(min_len=1, max_len=256),
        "metadata": FREE_OBJECT,
    },
    required=("operation", "amount"),
)
STATUS_TRANSITION = obj({"reason": string(max_len=512), "metadata": FREE_OBJECT})
_KEY_ALPHABET = _string.ascii_letters + _string.digits
KEY_PREFIX_LEN = 14


def validated(schema: Check, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` checked against ``schema`` (400 INVALID_REQUEST otherwise)."""
    try:
        schema(body, "")
    except SchemaError as exc:
        raise invalid(str(exc)) from None
    return body


# --- API keys --------------------------------------------------------------------------------------------


def _digest(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode("utf-8")).digest()


def authenticate(env: Env, secret: str) -> tuple[str, Grant]:
    """The tenant and grant of a presented API key secret; 401 UNAUTHORIZED for anything not currently valid."""
    with env.ledger.read() as conn:
        candidates = db.keys_with_prefix(conn, secret[:KEY_PREFIX_LEN])
        match = next((c for c in candidates if hmac.compare_digest(_digest(c[2], secret), c[3])), None)
        if match is None:
            raise LocalServerError(401, "UNAUTHORIZED", "KEY_NOT_FOUND")
        key_id, tenant_id, _salt, _hash, status, expires_at_ms = match
        if status != "ACTIVE":
            raise LocalServerError(401, "UNAUTHORIZED", f"KEY_{status}")
        if expires_at_ms <= env.clock():
            raise LocalServerError(401, "UNAUTHORIZED", "KEY_EXPIRED")
        tenant = db.get_tenant(conn, tenant_id)
        doc = db.get_api_key(conn, key_id) or {}
    if tenant is None:
        raise LocalServerError(401, "UNAUTHORIZED", "KEY_NOT_OWNED_BY_TENANT")
    if tenant.get("status") == "SUSPENDED":
        raise LocalServerError(401, "UNAUTHORIZED", "TENANT_SUSPENDED")
    return tenant_id, Grant.of(doc)


def create_api_key(env: Env, body: dict[str, Any]) -> dict[str, Any]:
    """Create a key; the returned ``ApiKeyCreateResponse`` is the only place the secret ever appears."""
    secret = "cyc_live_" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(32))
    salt = os.urandom(16)
    with env.ledger.write() as conn:
        now = env.clock()
        tenant = db.get_tenant(conn, body["tenant_id"])
        if tenant is None:
            raise invalid(f"Tenant not found: {body['tenant_id']}")
        if tenant["status"] == "CLOSED":
            raise LocalServerError(409, "TENANT_CLOSED", "Tenant is closed")
        expires_ms = (
            parse_iso(body["expires_at"], "expires_at") if "expires_at" in body else now + 365 * DAY_MS
        )
        doc: dict[str, Any] = {
            "key_id": "key_" + new_id().replace("-", ""),
            "tenant_id": tenant["tenant_id"],
            "key_prefix": secret[:KEY_PREFIX_LEN],
            "name": body["name"],
            "permissions": body.get("permissions", DEFAULT_PERMISSIONS),
            "created_at": iso(now),
            "expires_at": iso(expires_ms),
            **{k: body[k] for k in ("description", "scope_filter", "metadata") if k in body},
        }
        db.insert_api_key(
            conn,
            key_id=doc["key_id"],
            tenant_id=doc["tenant_id"],
            key_prefix=doc["key_prefix"],
            salt=salt,
            key_hash=_digest(salt, secret),
            expires_at_ms=expires_ms,
            doc=doc,
        )
    fields = ("key_id", "key_prefix", "tenant_id", "permissions", "created_at", "expires_at")
    return {"key_secret": secret, **{k: doc[k] for k in fields}}


# --- tenants ---------------------------------------------------------------------------------------------


def create_tenant(env: Env, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Create a tenant (201), or return the identical existing one (200); a different one is 409."""
    with env.ledger.write() as conn:
        existing = db.get_tenant(conn, body["tenant_id"])
        if existing is not None:
            if all(existing.get(k) == v for k, v in body.items()):
                return 200, existing
            raise LocalServerError(409, "DUPLICATE_RESOURCE", f"Tenant {body['tenant_id']} already exists")
        now = iso(env.clock())
        doc = {
            **TENANT_DEFAULTS,
            "reservation_expiry_policy": "AUTO_RELEASE",
            **body,
            "status": "ACTIVE",
            "created_at": now,
            "updated_at": now,
        }
        db.put_tenant(conn, doc)
        return 201, doc


def tenant_or_404(conn: Any, tenant_id: str) -> dict[str, Any]:
    """The tenant document, or 404 TENANT_NOT_FOUND."""
    tenant = db.get_tenant(conn, tenant_id)
    if tenant is None:
        raise LocalServerError(404, "TENANT_NOT_FOUND", f"Tenant not found: {tenant_id}")
    return tenant


def update_tenant(env: Env, tenant_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Patch a tenant. Moving to CLOSED (terminal) releases its open reservations and closes its budgets."""
    with env.ledger.write() as conn:
        now = env.clock()
        tenant = tenant_or_404(conn, tenant_id)
        status = body.get("status", tenant["status"])
        if tenant["status"] == "CLOSED" and status != "CLOSED":
            raise LocalServerError(409, "TENANT_CLOSED", "A closed tenant cannot be reopened")
        if status != tenant["status"]:
            if status == "SUSPENDED":
                tenant["suspended_at"] = iso(now)
            if status == "CLOSED":
                tenant["closed_at"] = iso(now)
                close_cascade(conn, tenant_id, now)
        tenant.update(body)
        tenant["updated_at"] = iso(now)
        db.put_tenant(conn, tenant)
        return tenant


def close_cascade(conn: Any, tenant_id: str, now: int) -> None:
    """Release the tenant's ACTIVE reservations (reason ``tenant_closed``) and close its budgets."""
    for res in db.query_reservations(conn, "tenant_id = ? AND status = 'ACTIVE'", (tenant_id,), ""):
        res.doc["release_reason"] = "tenant_closed"
        db.settle_reservation(conn, res, "RELEASED", now)
    for budget in db.tenant_budgets(conn, tenant_id):
        budget.status = "CLOSED"
        db.save_budget(conn, budget, now)


# --- budgets ---------------------------------------------------------------------------------------------


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


def fund_budget(
    env: Env, scope: str, unit: str, tenant_id: str | None, body: dict[str, Any]
) -> dict[str, Any]:
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
                    raise LocalServerError(
                        409, "IDEMPOTENCY_MISMATCH", "Idempotency key reused with a different body"
                    )
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
            db.put_idempotent(
                conn, budget.tenant_id, endpoint, key, digest, 200, dumps(result), now + 30 * DAY_MS
            )
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


def _required_param(req: Request, name: str) -> str:
    value = req.param(name)
    if value is None:
        raise invalid(f"{name} query parameter is required")
    return value


def _scope_unit(req: Request) -> tuple[str, str]:
    unit = _required_param(req, "unit")
    try:
        UNIT(unit, "unit")
    except SchemaError as exc:
        raise invalid(str(exc)) from None
    return _required_param(req, "scope"), unit


def _page(env: Env, req: Request, items: list[dict[str, Any]], field: str, *bound: Any) -> Response:
    limit = page_limit(req, 50, 100)
    key = binding(field, *bound)
    cursor = req.param("cursor")
    offset = cursor_offset(decode_cursor(env.ledger.cursor_secret, cursor, key)) if cursor is not None else 0
    page = items[offset : offset + limit]
    result: dict[str, Any] = {field: page, "has_more": offset + limit < len(items)}
    if result["has_more"]:
        result["next_cursor"] = encode_cursor(env.ledger.cursor_secret, {"h": key, "o": offset + limit})
    return 200, dumps(result)


def h_create_tenant(env: Env, req: Request) -> Response:
    """``POST /v1/admin/tenants``."""
    status, tenant = create_tenant(env, req.json(TENANT_CREATE))
    return status, dumps(tenant)


def h_list_tenants(env: Env, req: Request) -> Response:
    """``GET /v1/admin/tenants``."""
    status = req.param("status")
    with env.ledger.read() as conn:
        tenants = [t for t in db.list_tenants(conn) if status is None or t["status"] == status]
    return _page(env, req, tenants, "tenants", status)


def h_get_tenant(env: Env, req: Request, tenant_id: str) -> Response:
    """``GET /v1/admin/tenants/{tenant_id}``."""
    with env.ledger.read() as conn:
        return 200, dumps(tenant_or_404(conn, tenant_id))


def h_update_tenant(env: Env, req: Request, tenant_id: str) -> Response:
    """``PATCH /v1/admin/tenants/{tenant_id}``."""
    return 200, dumps(update_tenant(env, tenant_id, req.json(TENANT_UPDATE)))


def h_create_api_key(env: Env, req: Request) -> Response:
    """``POST /v1/admin/api-keys`` (201)."""
    return 201, dumps(create_api_key(env, req.json(API_KEY_CREATE)))


def h_list_api_keys(env: Env, req: Request) -> Response:
    """``GET /v1/admin/api-keys`` (never secrets)."""
    tenant_id, status = req.param("tenant_id"), req.param("status")
    with env.ledger.read() as conn:
        keys = [k for k in db.list_api_keys(conn, tenant_id) if status is None or k["status"] == status]
    return _page(env, req, keys, "keys", tenant_id, status)


def h_revoke_api_key(env: Env, req: Request, key_id: str) -> Response:
    """``DELETE /v1/admin/api-keys/{key_id}``: revoke permanently."""
    with env.ledger.write() as conn:
        key = db.get_api_key(conn, key_id)
        if key is None:
            raise LocalServerError(404, "NOT_FOUND", f"API key not found: {key_id}")
        if key["status"] == "REVOKED":
            raise LocalServerError(409, "KEY_REVOKED", "API key is already revoked")
        key.update(status="REVOKED", revoked_at=iso(env.clock()))
        reason = req.param("reason")
        if reason is not None:
            if len(reason) > 512:
                raise invalid("reason must be at most 512 characters")
            key["revoked_reason"] = reason
        db.set_api_key_status(conn, key_id, "REVOKED", {k: v for k, v in key.items() if k != "status"})
    return 200, dumps(key)


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
    return _page(env, req, rows, "ledgers", tenant_id, prefix, unit, status, over_limit, has_debt)


def h_lookup_budget(env: Env, req: Request) -> Response:
    """``GET /v1/admin/budgets/lookup?scope=&unit=``."""
    scope, unit = _scope_unit(req)
    with env.ledger.read() as conn:
        budget = budget_or_404(conn, scope, unit, None if req.admin else req.tenant)
    check_scope_access(req, budget.scope)
    return 200, dumps(ledger_wire(budget))


def h_update_budget(env: Env, req: Request) -> Response:
    """``PATCH /v1/admin/budgets?scope=&unit=``."""
    scope, unit = _scope_unit(req)
    return 200, dumps(update_budget(env, scope, unit, req.json(BUDGET_UPDATE)))


def h_fund_budget(env: Env, req: Request) -> Response:
    """``POST /v1/admin/budgets/fund?scope=&unit=[&tenant_id=]``."""
    scope, unit = _scope_unit(req)
    tenant_id = _required_param(req, "tenant_id") if req.admin else req.tenant
    body = req.json(FUNDING)
    check_scope_access(req, scope)
    return 200, dumps(fund_budget(env, scope, unit, tenant_id, body))


def _transition(env: Env, req: Request, target: str) -> Response:
    scope, unit = _scope_unit(req)
    if req.body.strip():
        req.json(STATUS_TRANSITION)
    return 200, dumps(set_budget_status(env, scope, unit, target))


def h_freeze_budget(env: Env, req: Request) -> Response:
    """``POST /v1/admin/budgets/freeze?scope=&unit=``."""
    return _transition(env, req, "FROZEN")


def h_unfreeze_budget(env: Env, req: Request) -> Response:
    """``POST /v1/admin/budgets/unfreeze?scope=&unit=``."""
    return _transition(env, req, "ACTIVE")
