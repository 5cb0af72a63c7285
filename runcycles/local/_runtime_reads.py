"""Runtime-plane reads: one reservation, the reservation list, balances (with the lazy expiry sweep)."""

from __future__ import annotations

from typing import Any

from . import _ledger as db
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
    page_limit,
    parse_iso,
)
from ._ledger import Reservation
from ._runtime_shared import Response, balance, owned_reservation
from ._validate import (
    SCOPE_LEVELS,
)


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


def _equality_filters(req: Request, where: list[str], params: list[Any], bound: dict[str, Any]) -> None:
    """The ``idempotency_key``, ``status`` and subject-level filters."""
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


def _window_filters(req: Request, where: list[str], params: list[Any], bound: dict[str, Any]) -> None:
    """The ``*_from`` / ``*_to`` time windows."""
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


def _sort_order(req: Request) -> tuple[str, str]:
    """The sort column and direction (``asc`` / ``desc``)."""
    column = _SORT_COLUMNS.get(req.param("sort_by") or "created_at_ms", "created_at_ms")
    sort_dir = req.param("sort_dir") or "desc"
    if sort_dir not in ("asc", "desc"):
        raise invalid("sort_dir must be asc or desc")
    return column, sort_dir


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
    _equality_filters(req, where, params, bound)
    _window_filters(req, where, params, bound)
    column, sort_dir = _sort_order(req)
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
        raise invalid("at least one subject filter (tenant, workspace, app, workflow, agent, toolset) is required")
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
