"""Runtime-plane handlers: reserve, commit, release, extend, decide, events, reads, balances.

Every handler returns ``(status, body_bytes)`` or raises :class:`LocalServerError`. Mutations and the
idempotency record of one request happen in one ledger transaction.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import attrs

from . import _ledger as db
from . import _overage as overage
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
    new_id,
    page_limit,
    parse_iso,
    payload_hash,
)
from ._ledger import Budget, Reservation
from ._validate import (
    COMMIT_REQUEST,
    DECISION_REQUEST,
    DEFAULTS,
    EVENT_REQUEST,
    EXTEND_REQUEST,
    RELEASE_REQUEST,
    RESERVATION_CREATE_REQUEST,
    SCOPE_LEVELS,
)

DAY_MS = 86_400_000
TENANT_DEFAULTS = {
    "default_reservation_ttl_ms": 60_000,
    "max_reservation_ttl_ms": 3_600_000,
    "max_reservation_extensions": 10,
    "default_commit_overage_policy": "ALLOW_IF_AVAILABLE",
}
Response = tuple[int, bytes]


# --- shared pieces ---------------------------------------------------------------------------------------


def derive_scopes(subject: dict[str, Any]) -> list[str]:
    """Cumulative ``level:value`` scope ids in canonical order (values lower-cased, gaps skipped)."""
    scopes: list[str] = []
    path = ""
    for level in SCOPE_LEVELS:
        value = subject.get(level)
        if isinstance(value, str):
            path = f"{path}/{level}:{value.lower()}" if path else f"{level}:{value.lower()}"
            scopes.append(path)
    return scopes


def balance(budget: Budget) -> dict[str, Any]:
    """A ``Balance`` wire object (``scope`` is the leaf segment, ``scope_path`` the full id)."""
    unit = budget.unit
    return {
        "scope": budget.scope.rsplit("/", 1)[-1],
        "scope_path": budget.scope,
        "remaining": amount(unit, budget.remaining),
        "reserved": amount(unit, budget.reserved),
        "spent": amount(unit, budget.spent),
        "allocated": amount(unit, budget.allocated),
        "debt": amount(unit, budget.debt),
        "overdraft_limit": amount(unit, budget.overdraft_limit),
        "is_over_limit": budget.is_over_limit,
    }


def tenant_setting(tenant: dict[str, Any] | None, name: str) -> Any:
    """A tenant governance setting, falling back to the governance default."""
    if tenant is not None and tenant.get(name) is not None:
        return tenant[name]
    return TENANT_DEFAULTS[name]


def check_subject_tenant(req: Request, subject: dict[str, Any]) -> None:
    """``subject.tenant`` must be the key's tenant, and the subject inside the key's scope filter (403)."""
    tenant = subject.get("tenant")
    if tenant is not None and tenant != req.tenant:
        raise LocalServerError(403, "FORBIDDEN", "subject.tenant does not match the authenticated tenant")
    scopes = derive_scopes(subject)
    check_scope_access(req, scopes[-1] if scopes else "")


def check_scope_access(req: Request, scope_path: str) -> None:
    """403 FORBIDDEN unless ``scope_path`` lies inside the API key's ``scope_filter``."""
    if req.grant is not None and not req.grant.covers(scope_path):
        raise LocalServerError(403, "FORBIDDEN", f"API key scope_filter does not cover {scope_path}")


def tenant_closed(conn: sqlite3.Connection, tenant_id: str) -> bool:
    """Whether the tenant record exists and is CLOSED."""
    tenant = db.get_tenant(conn, tenant_id)
    return tenant is not None and tenant.get("status") == "CLOSED"


def closed_error() -> LocalServerError:
    """409 TENANT_CLOSED."""
    return LocalServerError(409, "TENANT_CLOSED", "Tenant is closed")


def _settle_clock(env: Env, conn: sqlite3.Connection) -> int:
    """Server time for a write transaction, after expiring what has lapsed (lazy expiry)."""
    now = env.clock()
    db.sweep_expired(conn, now)
    return now


@attrs.define(kw_only=True)
class Idem:
    """The idempotency slot of one request: where its response is stored and what it must match."""

    tenant: str
    endpoint: str
    key: str
    digest: str

    @classmethod
    def of(cls, tenant: str, endpoint: str, body: dict[str, Any], defaults: str | None = None) -> Idem:
        """The slot for ``body`` (hashed with the schema defaults of ``defaults`` filled in)."""
        return cls(
            tenant=tenant,
            endpoint=endpoint,
            key=body["idempotency_key"],
            digest=payload_hash(body, DEFAULTS.get(defaults or "")),
        )

    def replay(self, conn: sqlite3.Connection, now: int) -> tuple[int, bytes] | None:
        """The stored response for a replay, or ``None``; 409 IDEMPOTENCY_MISMATCH for a different body."""
        found = db.get_idempotent(conn, self.tenant, self.endpoint, self.key, now)
        if found is None:
            return None
        digest, status, body = found
        if digest != self.digest:
            raise LocalServerError(
                409,
                "IDEMPOTENCY_MISMATCH",
                "Idempotency key was already used with a different request payload",
            )
        return status, body

    def store(
        self, conn: sqlite3.Connection, status: int, body: dict[str, Any], expires_at_ms: int
    ) -> Response:
        """Store a successful response and return it."""
        raw = dumps(body)
        db.put_idempotent(conn, self.tenant, self.endpoint, self.key, self.digest, status, raw, expires_at_ms)
        return status, raw


def refresh_ttl(conn: sqlite3.Connection, body: bytes, reservation_id: str | None, now: int) -> bytes:
    """A replayed create/extend body with ``remaining_ttl_ms`` recomputed (0 once no longer ACTIVE)."""
    data = json.loads(body)
    if "remaining_ttl_ms" not in data:
        return body
    res = db.get_reservation(conn, reservation_id or data.get("reservation_id", ""))
    active = res is not None and res.status == "ACTIVE"
    data["remaining_ttl_ms"] = max(0, data["expires_at_ms"] - now) if active else 0
    return dumps(data)


@attrs.define(kw_only=True)
class Evaluation:
    """Outcome of evaluating an estimate against the budgets of the derived scopes."""

    scopes: list[str]
    budgets: list[Budget]
    denial: str | None
    message: str = ""
    caps: dict[str, Any] | None = None

    @property
    def scope_path(self) -> str:
        """The deepest derived scope."""
        return self.scopes[-1] if self.scopes else ""

    def live_error(self) -> LocalServerError:
        """The error a persisting operation reports for this denial."""
        if self.denial == "BUDGET_NOT_FOUND":
            return LocalServerError(404, "NOT_FOUND", self.message)
        return LocalServerError(409, str(self.denial), self.message)


def budgets_for(conn: sqlite3.Connection, tenant_id: str, scopes: list[str], unit: str) -> list[Budget]:
    """Budgets in ``unit`` at the derived scopes, canonical order; 400 UNIT_MISMATCH if only other units."""
    found = db.load_budgets(conn, tenant_id, scopes)
    order = {scope: i for i, scope in enumerate(scopes)}
    matching = sorted((b for b in found if b.unit == unit), key=lambda b: order[b.scope])
    if not matching and found:
        first = min(found, key=lambda b: order[b.scope])
        raise LocalServerError(
            400,
            "UNIT_MISMATCH",
            f"No budget in unit {unit} for scope {first.scope}",
            {"scope": first.scope, "requested_unit": unit, "expected_units": sorted({b.unit for b in found})},
        )
    return matching


def evaluate(
    conn: sqlite3.Connection, tenant_id: str, subject: dict[str, Any], estimate: dict[str, Any]
) -> Evaluation:
    """Run the reserve checks (first failing scope wins) without mutating anything."""
    scopes = derive_scopes(subject)
    if tenant_closed(conn, tenant_id):
        return Evaluation(scopes=scopes, budgets=[], denial="TENANT_CLOSED", message="Tenant is closed")
    budgets = budgets_for(conn, tenant_id, scopes, estimate["unit"])
    if not budgets:
        return Evaluation(
            scopes=scopes,
            budgets=[],
            denial="BUDGET_NOT_FOUND",
            message=f"Budget not found for provided scope: {scopes[-1] if scopes else ''}",
        )
    for budget in budgets:
        denial = budget_denial(budget, estimate["amount"])
        if denial is not None:
            return Evaluation(scopes=scopes, budgets=budgets, denial=denial[0], message=denial[1])
    deepest = budgets[-1]
    return Evaluation(scopes=scopes, budgets=budgets, denial=None, caps=deepest.caps)


def budget_denial(budget: Budget, estimate: int) -> tuple[str, str] | None:
    """Why ``budget`` cannot take a new reservation of ``estimate`` (code, message), if it cannot."""
    scope = budget.scope
    if budget.status == "FROZEN":
        return "BUDGET_FROZEN", f"Budget is frozen for scope {scope}"
    if budget.status == "CLOSED":
        return "BUDGET_CLOSED", f"Budget is closed for scope {scope}"
    if budget.is_over_limit:
        return "OVERDRAFT_LIMIT_EXCEEDED", f"Scope {scope} is over its overdraft limit"
    if budget.debt > 0 and budget.overdraft_limit == 0:
        return "DEBT_OUTSTANDING", f"Scope {scope} has outstanding debt"
    if budget.remaining < estimate:
        return "BUDGET_EXCEEDED", f"Insufficient remaining budget for scope {scope}"
    return None


def save_all(conn: sqlite3.Connection, budgets: list[Budget], now: int) -> None:
    """Write back every budget."""
    for budget in budgets:
        db.save_budget(conn, budget, now)


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
        now = _settle_clock(env, conn)
        replay = idem.replay(conn, now)
        if replay is not None:
            return replay[0], refresh_ttl(conn, replay[1], None, now)
        ev = evaluate(conn, req.tenant, body["subject"], estimate)
        result: dict[str, Any] = {}
        if dry_run:
            result = dry_run_result(ev, estimate)
            return idem.store(conn, 200, result, now + DAY_MS)
        if ev.denial is not None:
            raise ev.live_error()
        tenant = db.get_tenant(conn, req.tenant)
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
            "balances": [balance(b) for b in ev.budgets],
        }
        return idem.store(conn, 200, result, now + max(ttl + grace, DAY_MS))


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
        now = _settle_clock(env, conn)
        replay = idem.replay(conn, now)
        if replay is not None:
            return replay
        ev = evaluate(conn, req.tenant, body["subject"], body["estimate"])
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


def owned_reservation(conn: sqlite3.Connection, req: Request, reservation_id: str) -> Reservation:
    """The reservation, if it exists (404) and the caller may touch it (403)."""
    res = db.get_reservation(conn, reservation_id)
    if res is None:
        raise LocalServerError(404, "NOT_FOUND", f"Reservation not found: {reservation_id}")
    if not req.admin and res.tenant_id != req.tenant:
        raise LocalServerError(403, "FORBIDDEN", "Reservation belongs to another tenant")
    check_scope_access(req, res.scope_path)
    return res


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
        now = _settle_clock(env, conn)
        replay = idem.replay(conn, now)
        if replay is not None:
            return replay
        res = owned_reservation(conn, req, reservation_id)
        if tenant_closed(conn, res.tenant_id):
            raise closed_error()
        check_settleable(res, now, grace=True)
        if actual["unit"] != res.unit:
            raise LocalServerError(400, "UNIT_MISMATCH", f"actual.unit must be {res.unit}")
        budgets = [b for b in db.load_budgets(conn, res.tenant_id, res.budget_scopes) if b.unit == res.unit]
        charged = overage.charge(budgets, res.reserved, actual["amount"], res.overage_policy, commit=True)
        save_all(conn, budgets, now)
        res.status = "COMMITTED"
        res.committed = charged
        res.finalized_at_ms = now
        if "metadata" in body:
            res.doc["committed_metadata"] = body["metadata"]
        if "metrics" in body:
            res.doc["metrics"] = body["metrics"]
        db.save_reservation(conn, res)
        result: dict[str, Any] = {"status": "COMMITTED", "charged": amount(res.unit, charged)}
        if charged < res.reserved:
            result["released"] = amount(res.unit, res.reserved - charged)
        result["balances"] = [balance(b) for b in budgets]
        return idem.store(conn, 200, result, now + 30 * DAY_MS)


def release_reservation(env: Env, req: Request, reservation_id: str) -> Response:
    """``POST /v1/reservations/{id}/release``: return the whole hold."""
    body = req.idempotent_json(RELEASE_REQUEST)
    with env.ledger.write() as conn:
        now = _settle_clock(env, conn)
        tenant = req.tenant
        if tenant is None:  # admin force-release: keys are scoped by the reservation's tenant
            found = db.get_reservation(conn, reservation_id)
            tenant = found.tenant_id if found else ""
        idem = Idem.of(tenant, f"release:{reservation_id}", body)
        replay = idem.replay(conn, now)
        if replay is not None:
            return replay
        res = owned_reservation(conn, req, reservation_id)
        if tenant_closed(conn, res.tenant_id):
            raise closed_error()
        check_settleable(res, now, grace=True)
        if "reason" in body:
            res.doc["release_reason"] = body["reason"]
        budgets = db.settle_reservation(conn, res, "RELEASED", now)
        result = {
            "status": "RELEASED",
            "released": amount(res.unit, res.reserved),
            "balances": [balance(b) for b in budgets],
        }
        return idem.store(conn, 200, result, now + 30 * DAY_MS)


def extend_reservation(env: Env, req: Request, reservation_id: str) -> Response:
    """``POST /v1/reservations/{id}/extend``: move the expiry by ``extend_by_ms`` from its current value."""
    body = req.idempotent_json(EXTEND_REQUEST)
    assert req.tenant is not None
    idem = Idem.of(req.tenant, f"extend:{reservation_id}", body)
    with env.ledger.write() as conn:
        now = _settle_clock(env, conn)
        replay = idem.replay(conn, now)
        if replay is not None:
            return replay[0], refresh_ttl(conn, replay[1], reservation_id, now)
        res = owned_reservation(conn, req, reservation_id)
        if tenant_closed(conn, res.tenant_id):
            raise closed_error()
        check_settleable(res, now, grace=False)
        limit = tenant_setting(db.get_tenant(conn, res.tenant_id), "max_reservation_extensions")
        if res.extension_count >= limit:
            raise LocalServerError(
                409, "MAX_EXTENSIONS_EXCEEDED", f"Reservation has reached the maximum of {limit} extensions"
            )
        res.expires_at_ms += body["extend_by_ms"]
        res.extension_count += 1
        db.save_reservation(conn, res)
        budgets = [b for b in db.load_budgets(conn, res.tenant_id, res.budget_scopes) if b.unit == res.unit]
        result = {
            "status": "ACTIVE",
            "expires_at_ms": res.expires_at_ms,
            "remaining_ttl_ms": res.expires_at_ms - now,
            "balances": [balance(b) for b in budgets],
        }
        return idem.store(conn, 200, result, res.expires_at_ms + res.grace_ms)


# --- events ----------------------------------------------------------------------------------------------


def create_event(env: Env, req: Request) -> Response:
    """``POST /v1/events``: a direct debit without a reservation (201)."""
    body = req.idempotent_json(EVENT_REQUEST)
    assert req.tenant is not None
    check_subject_tenant(req, body["subject"])
    idem = Idem.of(req.tenant, "event", body, "event")
    actual = body["actual"]
    with env.ledger.write() as conn:
        now = _settle_clock(env, conn)
        replay = idem.replay(conn, now)
        if replay is not None:
            return replay
        tenant = db.get_tenant(conn, req.tenant)
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
            "balances": [balance(b) for b in budgets],
        }
        return idem.store(conn, 201, result, now + 7 * DAY_MS)


# --- reads -----------------------------------------------------------------------------------------------


def reservation_wire(res: Reservation, include: set[str], *, detail: bool) -> dict[str, Any]:
    """A ``ReservationDetail`` (``detail``) or ``ReservationSummary`` wire object."""
    out: dict[str, Any] = {
        "reservation_id": res.reservation_id,
        "status": res.status,
        "idempotency_key": res.idempotency_key,
        "subject": res.doc["subject"],
        "action": res.doc["action"],
        "reserved": amount(res.unit, res.reserved),
        "created_at_ms": res.created_at_ms,
        "expires_at_ms": res.expires_at_ms,
        "scope_path": res.scope_path,
        "affected_scopes": res.doc["affected_scopes"],
    }
    if res.committed is not None:
        out["committed"] = amount(res.unit, res.committed)
    if res.finalized_at_ms is not None:
        out["finalized_at_ms"] = res.finalized_at_ms
    for field in ("metadata", "committed_metadata"):
        if field in res.doc and (detail or field in include):
            out[field] = res.doc[field]
    return out


def sweep_if_due(env: Env) -> None:
    """Lazy expiry before a read: take the write lock only when something is actually due."""
    now = env.clock()
    with env.ledger.read() as conn:
        due = db.has_due(conn, now)
    if due:
        with env.ledger.write() as conn:
            db.sweep_expired(conn, now, limit=1_000_000)


def get_reservation(env: Env, req: Request, reservation_id: str) -> Response:
    """``GET /v1/reservations/{id}`` (410 once EXPIRED)."""
    sweep_if_due(env)
    with env.ledger.read() as conn:
        res = owned_reservation(conn, req, reservation_id)
    if res.status == "EXPIRED":
        raise LocalServerError(410, "RESERVATION_EXPIRED", "Reservation has expired")
    return 200, dumps(reservation_wire(res, set(), detail=True))


_SORT_COLUMNS = {
    "reservation_id": "reservation_id",
    "tenant": "tenant_id",
    "scope_path": "scope_path",
    "status": "status",
    "reserved": "reserved",
    "created_at_ms": "created_at_ms",
    "expires_at_ms": "expires_at_ms",
}
_STATUSES = ("ACTIVE", "COMMITTED", "RELEASED", "EXPIRED")
_WINDOWS = (
    ("from", "to", "created_at_ms"),
    ("expires_from", "expires_to", "expires_at_ms"),
    ("finalized_from", "finalized_to", "finalized_at_ms"),
)


def list_reservations(env: Env, req: Request) -> Response:
    """``GET /v1/reservations`` with filters, sorting and keyset cursor pagination."""
    tenant = effective_tenant(req)
    where = ["tenant_id = ?"]
    params: list[Any] = [tenant]
    if req.grant is not None:
        scoped, scoped_params = req.grant.reservation_filter()
        where.extend(scoped)
        params.extend(scoped_params)
    bound: dict[str, Any] = {}
    key = req.param("idempotency_key")
    if key is not None:
        where.append("idempotency_key = ?")
        params.append(key)
        bound["idempotency_key"] = key
    status = req.param("status")
    if status is not None:
        if status not in _STATUSES:
            raise invalid(f"status must be one of {', '.join(_STATUSES)}")
        where.append("status = ?")
        params.append(status)
        bound["status"] = status
    for level in SCOPE_LEVELS[1:]:
        value = req.param(level)
        if value is not None:
            where.append(f"s_{level} = ?")
            params.append(value.lower())
            bound[level] = value.lower()
    for low_name, high_name, column in _WINDOWS:
        low, high = req.param(low_name), req.param(high_name)
        low_ms = parse_iso(low, low_name) if low is not None else None
        high_ms = parse_iso(high, high_name) if high is not None else None
        if low_ms is not None and high_ms is not None and low_ms > high_ms:
            raise invalid(f"{low_name} must not be after {high_name}")
        if low_ms is not None:
            where.append(f"{column} >= ?")
            params.append(low_ms)
        if high_ms is not None:
            where.append(f"{column} <= ?")
            params.append(high_ms)
        bound[low_name], bound[high_name] = low_ms, high_ms
    sort_by = req.param("sort_by") or "created_at_ms"
    column = _SORT_COLUMNS.get(sort_by, "created_at_ms")
    sort_dir = req.param("sort_dir") or "desc"
    if sort_dir not in ("asc", "desc"):
        raise invalid("sort_dir must be asc or desc")
    limit = page_limit(req)
    include = {token.strip() for token in ",".join(req.query.get("include", [])).split(",") if token.strip()}
    cursor_binding = binding(tenant, bound, column, sort_dir)
    cursor = req.param("cursor")
    if cursor is not None:
        position = decode_cursor(env.ledger.cursor_secret, cursor, cursor_binding)
        op = "<" if sort_dir == "desc" else ">"
        where.append(f"({column} {op} ? OR ({column} = ? AND reservation_id {op} ?))")
        params.extend([position.get("v"), position.get("v"), position.get("id")])
    direction = sort_dir.upper()
    tail = f"ORDER BY {column} {direction}, reservation_id {direction} LIMIT {limit + 1}"
    sweep_if_due(env)
    with env.ledger.read() as conn:
        rows = db.query_reservations(conn, " AND ".join(where), params, tail)
    page, more = rows[:limit], len(rows) > limit
    result: dict[str, Any] = {
        "reservations": [reservation_wire(res, include, detail=False) for res in page],
        "has_more": more,
    }
    if more:
        last = page[-1]
        value = getattr(last, column)
        result["next_cursor"] = encode_cursor(
            env.ledger.cursor_secret, {"h": cursor_binding, "v": value, "id": last.reservation_id}
        )
    return 200, dumps(result)


def effective_tenant(req: Request) -> str:
    """The tenant a read covers: the key's (``?tenant=`` must match), or ``?tenant=`` for the admin key."""
    tenant = req.param("tenant")
    if req.admin:
        if tenant is None:
            raise invalid("tenant query parameter is required when using admin key authentication")
        return tenant
    if tenant is not None and tenant != req.tenant:
        raise LocalServerError(403, "FORBIDDEN", "tenant does not match the authenticated tenant")
    assert req.tenant is not None
    return req.tenant


def get_balances(env: Env, req: Request) -> Response:
    """``GET /v1/balances``: budgets whose scope contains every given subject filter segment."""
    filters = {level: req.param(level) for level in SCOPE_LEVELS}
    given = {level: value for level, value in filters.items() if value is not None}
    if not given:
        raise invalid(
            "at least one subject filter (tenant, workspace, app, workflow, agent, toolset) is required"
        )
    tenant = effective_tenant(req)
    segments = {f"{level}:{value.lower()}" for level, value in given.items()}
    limit = page_limit(req)
    cursor_binding = binding(tenant, sorted(segments))
    cursor = req.param("cursor")
    offset = cursor_offset(decode_cursor(env.ledger.cursor_secret, cursor, cursor_binding)) if cursor is not None else 0
    sweep_if_due(env)
    with env.ledger.read() as conn:
        budgets = [
            b
            for b in db.tenant_budgets(conn, tenant)
            if segments <= set(b.scope.split("/")) and (req.grant is None or req.grant.covers(b.scope))
        ]
    page = budgets[offset : offset + limit]
    more = offset + limit < len(budgets)
    result: dict[str, Any] = {"balances": [balance(b) for b in page], "has_more": more}
    if more:
        result["next_cursor"] = encode_cursor(env.ledger.cursor_secret, {"h": cursor_binding, "o": offset + limit})
    return 200, dumps(result)
