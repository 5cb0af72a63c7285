"""Runtime-plane writes: reserve, decide, commit, release, extend, events.

Every handler returns ``(status, body_bytes)`` or raises :class:`LocalServerError`. Mutations and the
idempotency record of one request happen in one ledger transaction.
"""

from __future__ import annotations

from typing import Any

from . import _ledger as db
from . import _overage as overage
from ._base import (
    Env,
    LocalServerError,
    Request,
    amount,
    dumps,
    new_id,
)
from ._ledger import Reservation
from ._runtime_shared import (
    DAY_MS,
    Evaluation,
    Idem,
    Response,
    balance,
    budgets_for,
    check_subject_tenant,
    closed_error,
    derive_scopes,
    evaluate,
    owned_reservation,
    refresh_ttl,
    save_all,
    tenant_closed,
    tenant_doc,
    tenant_setting,
)
from ._validate import (
    COMMIT_REQUEST,
    DECISION_REQUEST,
    EVENT_REQUEST,
    EXTEND_REQUEST,
    RELEASE_REQUEST,
    RESERVATION_CREATE_REQUEST,
)

# --- reserve / decide ------------------------------------------------------------------------------------


def create_reservation(env: Env, req: Request) -> Response:
    """``POST /v1/reservations`` (live and dry run)."""
    body = req.idempotent_json(RESERVATION_CREATE_REQUEST)
    assert req.tenant is not None
    check_subject_tenant(req, body["subject"])
    # Live and dry-run reserves share one key namespace, as in the reference server.
    idem = Idem.of(req.tenant, "reserve", body, "reserve")
    dry_run = bool(body.get("dry_run", False))
    estimate = body["estimate"]
    with env.ledger.write() as conn:
        now, replay = idem.begin(env, conn, req)
        if replay is not None:
            return replay[0], refresh_ttl(conn, replay[1], None, now)
        ev = evaluate(env, conn, req.tenant, body["subject"], estimate, idem.epoch)
        result: dict[str, Any] = {}
        if dry_run:
            result = dry_run_result(ev, estimate)
            return idem.store(conn, 200, result, now + DAY_MS)
        if ev.denial is not None:
            raise ev.live_error()
        tenant = ev.tenant
        ttl = min(
            body.get("ttl_ms", tenant_setting(tenant, "default_reservation_ttl_ms")),
            tenant_setting(tenant, "max_reservation_ttl_ms"),
        )
        grace = body.get("grace_period_ms", 5_000)
        policy = body.get("overage_policy", tenant_setting(tenant, "default_commit_overage_policy"))
        res = Reservation(
            reservation_id=new_id(),
            tenant_id=req.tenant,
            status="ACTIVE",
            unit=estimate["unit"],
            reserved=estimate["amount"],
            committed=None,
            created_at_ms=now,
            expires_at_ms=now + ttl,
            grace_ms=grace,
            finalized_at_ms=None,
            extension_count=0,
            overage_policy=policy,
            scope_path=ev.scope_path,
            idempotency_key=body["idempotency_key"],
            budget_scopes=[b.scope for b in ev.budgets],
            doc={
                "subject": body["subject"],
                "action": body["action"],
                "affected_scopes": ev.scopes,
                **({"metadata": body["metadata"]} if "metadata" in body else {}),
            },
        )
        for budget in ev.budgets:
            budget.reserved += res.reserved
        save_all(conn, ev.budgets, now)
        db.insert_reservation(conn, res)
        result = {
            "decision": "ALLOW_WITH_CAPS" if ev.caps else "ALLOW",
            "reservation_id": res.reservation_id,
            "reserved": amount(res.unit, res.reserved),
            "expires_at_ms": res.expires_at_ms,
            "remaining_ttl_ms": ttl,
            "scope_path": ev.scope_path,
            "affected_scopes": ev.scopes,
            **({"caps": ev.caps} if ev.caps else {}),
        }
        return idem.store(conn, 200, result, now + max(ttl + grace, DAY_MS), ev.budgets)


def dry_run_result(ev: Evaluation, estimate: dict[str, Any]) -> dict[str, Any]:
    """The body of a dry-run reserve: a decision without any mutation."""
    if ev.denial is not None:
        return {
            "decision": "DENY",
            "reason_code": ev.denial,
            "affected_scopes": ev.scopes,
            "scope_path": ev.scope_path,
        }
    return {
        "decision": "ALLOW_WITH_CAPS" if ev.caps else "ALLOW",
        "reserved": dict(estimate),
        "scope_path": ev.scope_path,
        "affected_scopes": ev.scopes,
        **({"caps": ev.caps} if ev.caps else {}),
        "balances": [balance(b) for b in ev.budgets],
    }


def decide(env: Env, req: Request) -> Response:
    """``POST /v1/decide``: a preflight decision; budget-state problems are a 200 DENY."""
    body = req.idempotent_json(DECISION_REQUEST)
    assert req.tenant is not None
    check_subject_tenant(req, body["subject"])
    idem = Idem.of(req.tenant, "decide", body)
    with env.ledger.write() as conn:
        now, replay = idem.begin(env, conn, req)
        if replay is not None:
            return replay
        ev = evaluate(env, conn, req.tenant, body["subject"], body["estimate"], idem.epoch)
        if ev.denial is not None:
            result: dict[str, Any] = {
                "decision": "DENY",
                "reason_code": ev.denial,
                "affected_scopes": ev.scopes,
            }
        else:
            result = {
                "decision": "ALLOW_WITH_CAPS" if ev.caps else "ALLOW",
                **({"caps": ev.caps} if ev.caps else {}),
                "affected_scopes": ev.scopes,
            }
        return idem.store(conn, 200, result, now + DAY_MS)


# --- commit / release / extend ---------------------------------------------------------------------------


def check_settleable(res: Reservation, now: int, *, grace: bool) -> None:
    """State checks shared by commit/release (grace applies) and extend (no grace)."""
    if res.status == "EXPIRED":
        raise LocalServerError(410, "RESERVATION_EXPIRED", "Reservation has expired")
    if res.status in ("COMMITTED", "RELEASED"):
        raise LocalServerError(409, "RESERVATION_FINALIZED", f"Reservation is already {res.status}")
    deadline = res.expires_at_ms + (res.grace_ms if grace else 0)
    if now > deadline:
        raise LocalServerError(410, "RESERVATION_EXPIRED", "Reservation has expired")


def commit_reservation(env: Env, req: Request, reservation_id: str) -> Response:
    """``POST /v1/reservations/{id}/commit``: charge the actual amount under the reservation's policy."""
    body = req.idempotent_json(COMMIT_REQUEST)
    assert req.tenant is not None
    idem = Idem.of(req.tenant, f"commit:{reservation_id}", body)
    actual = body["actual"]
    with env.ledger.write() as conn:
        now, replay = idem.begin(env, conn, req)
        if replay is not None:
            return replay
        res = owned_reservation(conn, req, reservation_id)
        if tenant_closed(env, conn, res.tenant_id, idem.epoch):
            raise closed_error()
        check_settleable(res, now, grace=True)
        if actual["unit"] != res.unit:
            raise LocalServerError(400, "UNIT_MISMATCH", f"actual.unit must be {res.unit}")
        budgets = db.load_unit_budgets(conn, res.tenant_id, res.budget_scopes, res.unit)
        charged = overage.charge(budgets, res.reserved, actual["amount"], res.overage_policy, commit=True)
        save_all(conn, budgets, now)
        res.status = "COMMITTED"
        res.committed = charged
        res.finalized_at_ms = now
        if "metadata" in body:
            res.doc["committed_metadata"] = body["metadata"]
        if "metrics" in body:
            res.doc["metrics"] = body["metrics"]
        db.save_reservation(conn, res, doc="metadata" in body or "metrics" in body)
        result: dict[str, Any] = {"status": "COMMITTED", "charged": amount(res.unit, charged)}
        if charged < res.reserved:
            result["released"] = amount(res.unit, res.reserved - charged)
        return idem.store(conn, 200, result, now + 30 * DAY_MS, budgets)


def release_reservation(env: Env, req: Request, reservation_id: str) -> Response:
    """``POST /v1/reservations/{id}/release``: return the whole hold."""
    body = req.idempotent_json(RELEASE_REQUEST)
    with env.ledger.write() as conn:
        tenant = req.tenant
        if tenant is None:  # admin force-release: keys are scoped by the reservation's tenant
            found = db.get_reservation(conn, reservation_id)
            tenant = found.tenant_id if found else ""
        idem = Idem.of(tenant, f"release:{reservation_id}", body)
        now, replay = idem.begin(env, conn, req)
        if replay is not None:
            return replay
        res = owned_reservation(conn, req, reservation_id)
        if tenant_closed(env, conn, res.tenant_id, idem.epoch):
            raise closed_error()
        check_settleable(res, now, grace=True)
        if "reason" in body:
            res.doc["release_reason"] = body["reason"]
        budgets = db.settle_reservation(conn, res, "RELEASED", now, doc="reason" in body)
        result = {
            "status": "RELEASED",
            "released": amount(res.unit, res.reserved),
        }
        return idem.store(conn, 200, result, now + 30 * DAY_MS, budgets)


def extend_reservation(env: Env, req: Request, reservation_id: str) -> Response:
    """``POST /v1/reservations/{id}/extend``: move the expiry by ``extend_by_ms`` from its current value."""
    body = req.idempotent_json(EXTEND_REQUEST)
    assert req.tenant is not None
    idem = Idem.of(req.tenant, f"extend:{reservation_id}", body)
    with env.ledger.write() as conn:
        now, replay = idem.begin(env, conn, req)
        if replay is not None:
            return replay[0], refresh_ttl(conn, replay[1], reservation_id, now)
        res = owned_reservation(conn, req, reservation_id)
        if tenant_closed(env, conn, res.tenant_id, idem.epoch):
            raise closed_error()
        check_settleable(res, now, grace=False)
        limit = tenant_setting(tenant_doc(env, conn, res.tenant_id, idem.epoch), "max_reservation_extensions")
        if res.extension_count >= limit:
            raise LocalServerError(
                409, "MAX_EXTENSIONS_EXCEEDED", f"Reservation has reached the maximum of {limit} extensions"
            )
        res.expires_at_ms += body["extend_by_ms"]
        res.extension_count += 1
        db.save_reservation(conn, res, doc=False)
        budgets = db.load_unit_budgets(conn, res.tenant_id, res.budget_scopes, res.unit)
        result = {
            "status": "ACTIVE",
            "expires_at_ms": res.expires_at_ms,
            "remaining_ttl_ms": res.expires_at_ms - now,
        }
        return idem.store(conn, 200, result, res.expires_at_ms + res.grace_ms, budgets)


# --- events ----------------------------------------------------------------------------------------------


def create_event(env: Env, req: Request) -> Response:
    """``POST /v1/events``: a direct debit without a reservation (201)."""
    body = req.idempotent_json(EVENT_REQUEST)
    assert req.tenant is not None
    check_subject_tenant(req, body["subject"])
    idem = Idem.of(req.tenant, "event", body, "event")
    actual = body["actual"]
    with env.ledger.write() as conn:
        now, replay = idem.begin(env, conn, req)
        if replay is not None:
            return replay
        tenant = tenant_doc(env, conn, req.tenant, idem.epoch)
        if tenant is not None and tenant.get("status") == "CLOSED":
            raise closed_error()
        scopes = derive_scopes(body["subject"])
        budgets = budgets_for(conn, req.tenant, scopes, actual["unit"])
        if not budgets:
            raise LocalServerError(404, "NOT_FOUND", f"Budget not found for provided scope: {scopes[-1]}")
        policy = body.get("overage_policy", tenant_setting(tenant, "default_commit_overage_policy"))
        charged = overage.charge(budgets, 0, actual["amount"], policy, commit=False)
        save_all(conn, budgets, now)
        event_id = new_id()
        conn.execute(
            "INSERT INTO events VALUES (?,?,?,?)",
            (event_id, req.tenant, now, dumps({**body, "charged": charged, "scopes": scopes}).decode()),
        )
        result = {
            "status": "APPLIED",
            "event_id": event_id,
            "charged": amount(actual["unit"], charged),
        }
        return idem.store(conn, 201, result, now + 7 * DAY_MS, budgets)


# --- reads -----------------------------------------------------------------------------------------------
