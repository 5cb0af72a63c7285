"""Admin plane, tenants: create, list, get, update (closing cascades to the tenant's keys and budgets)."""

from __future__ import annotations

from typing import Any

from . import _ledger as db
from ._admin_schemas import TENANT_CREATE, TENANT_UPDATE, paged
from ._base import (
    Env,
    LocalServerError,
    Request,
    dumps,
    iso,
)
from ._runtime_shared import TENANT_DEFAULTS, Response


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


def h_create_tenant(env: Env, req: Request) -> Response:
    """``POST /v1/admin/tenants``."""
    status, tenant = create_tenant(env, req.json(TENANT_CREATE))
    return status, dumps(tenant)


def h_list_tenants(env: Env, req: Request) -> Response:
    """``GET /v1/admin/tenants``."""
    status = req.param("status")
    with env.ledger.read() as conn:
        tenants = [t for t in db.list_tenants(conn) if status is None or t["status"] == status]
    return paged(env, req, tenants, "tenants", status)


def h_get_tenant(env: Env, req: Request, tenant_id: str) -> Response:
    """``GET /v1/admin/tenants/{tenant_id}``."""
    with env.ledger.read() as conn:
        return 200, dumps(tenant_or_404(conn, tenant_id))


def h_update_tenant(env: Env, req: Request, tenant_id: str) -> Response:
    """``PATCH /v1/admin/tenants/{tenant_id}``."""
    return 200, dumps(update_tenant(env, tenant_id, req.json(TENANT_UPDATE)))
