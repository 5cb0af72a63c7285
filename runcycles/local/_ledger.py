"""The ledger's row types (:class:`Budget`, :class:`Reservation`) and the SQL operations the handlers run.

Every function takes an open connection; transactions are :class:`~runcycles.local._ledger_store.Ledger`'s.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import Any

import attrs

from ._validate import compact_encoder


@attrs.define(kw_only=True, eq=False)
class Budget:
    """One budget ledger row, (scope, unit). ``remaining`` is derived, so the ledger identity always holds."""

    scope: str
    unit: str
    tenant_id: str
    ledger_id: str
    allocated: int
    reserved: int = 0
    spent: int = 0
    debt: int = 0
    overdraft_limit: int = 0
    is_over_limit: bool = False
    status: str = "ACTIVE"
    created_at_ms: int = 0
    updated_at_ms: int = 0
    doc: dict[str, Any] = attrs.field(factory=dict)

    @property
    def remaining(self) -> int:
        """``allocated - spent - reserved - debt`` (may be negative)."""
        return self.allocated - self.spent - self.reserved - self.debt

    def reconcile(self) -> None:
        """Operator reconciliation (funding, limit change): leave the over-limit state once debt fits.

        Only the runtime enters the state (an overdraft overshoot or a capped ALLOW_IF_AVAILABLE overage), so
        a debt left behind by lowering the limit to 0 surfaces as DEBT_OUTSTANDING rather than over-limit.
        """
        if self.is_over_limit and self.debt <= self.overdraft_limit:
            self.is_over_limit = False

    @property
    def caps(self) -> dict[str, Any] | None:
        """The budget's caps (local extension), if any."""
        caps = self.doc.get("caps")
        return caps if isinstance(caps, dict) else None


@attrs.define(kw_only=True)
class Reservation:
    """One reservation row."""

    reservation_id: str
    tenant_id: str
    status: str
    unit: str
    reserved: int
    committed: int | None
    created_at_ms: int
    expires_at_ms: int
    grace_ms: int
    finalized_at_ms: int | None
    extension_count: int
    overage_policy: str
    scope_path: str
    idempotency_key: str
    budget_scopes: list[str]
    doc: dict[str, Any]


_BUDGET_COLUMNS = (
    "scope, unit, tenant_id, ledger_id, allocated, reserved, spent, debt, overdraft_limit, is_over_limit, "
    "status, created_at_ms, updated_at_ms, doc"
)
_RESERVATION_COLUMNS = (
    "reservation_id, tenant_id, status, unit, reserved, committed, created_at_ms, expires_at_ms, grace_ms, "
    "finalized_at_ms, extension_count, overage_policy, scope_path, idempotency_key, budget_scopes, doc"
)


_dumps = compact_encoder()
"""Compact JSON text (ASCII) as stored in the ledger's document columns (one encoder, built once)."""


_SCAN = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _load(text: str) -> Any:
    """``json.loads`` of a document column (the scanner alone when the text is exactly one value, as the
    compact encoder writes it; anything else goes through ``json.loads``, errors included)."""
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:
        end = -1
    return value if end == len(text) else json.loads(text)


def _budget(row: sqlite3.Row | tuple[Any, ...]) -> Budget:
    return Budget(
        scope=row[0],
        unit=row[1],
        tenant_id=row[2],
        ledger_id=row[3],
        allocated=row[4],
        reserved=row[5],
        spent=row[6],
        debt=row[7],
        overdraft_limit=row[8],
        is_over_limit=bool(row[9]),
        status=row[10],
        created_at_ms=row[11],
        updated_at_ms=row[12],
        doc=_load(row[13]),
    )


def _reservation(row: sqlite3.Row | tuple[Any, ...]) -> Reservation:
    return Reservation(
        reservation_id=row[0],
        tenant_id=row[1],
        status=row[2],
        unit=row[3],
        reserved=row[4],
        committed=row[5],
        created_at_ms=row[6],
        expires_at_ms=row[7],
        grace_ms=row[8],
        finalized_at_ms=row[9],
        extension_count=row[10],
        overage_policy=row[11],
        scope_path=row[12],
        idempotency_key=row[13],
        budget_scopes=_load(row[14]),
        doc=_load(row[15]),
    )


# --- budgets ---------------------------------------------------------------------------------------------


def load_budgets(conn: sqlite3.Connection, tenant_id: str, scopes: Iterable[str]) -> list[Budget]:
    """Every budget (any unit) of ``tenant_id`` at the given scopes."""
    scopes = list(scopes)
    if not scopes:
        return []
    marks = ",".join("?" * len(scopes))
    rows = conn.execute(
        f"SELECT {_BUDGET_COLUMNS} FROM budgets WHERE tenant_id = ? AND scope IN ({marks})",
        (tenant_id, *scopes),
    ).fetchall()
    return [_budget(row) for row in rows]


def load_unit_budgets(conn: sqlite3.Connection, tenant_id: str, scopes: list[str], unit: str) -> list[Budget]:
    """The budgets of ``tenant_id`` in ``unit`` at the given scopes (the runtime's read: only matching rows),
    in the order of ``scopes``.

    One primary-key lookup per scope, joined with ``UNION ALL``: cheaper than ``scope IN (...)``, for which
    SQLite builds a temporary index of the list. (Derived scopes extend each other, so this order is also
    the sorted order the ``IN`` form gave.)
    """
    if not scopes:
        return []
    count = len(scopes)
    if len(set(scopes)) != count:
        scopes = list(dict.fromkeys(scopes))
        count = len(scopes)
    sql = _UNIT_BUDGETS.get(count)
    if sql is None:
        sql = _UNIT_BUDGETS[count] = " UNION ALL ".join([_UNIT_BUDGET] * count)
    params: list[str] = []
    for scope in scopes:
        params += (scope, unit, tenant_id)
    return [_budget(row) for row in conn.execute(sql, params).fetchall()]


_UNIT_BUDGET = f"SELECT {_BUDGET_COLUMNS} FROM budgets WHERE scope = ? AND unit = ? AND tenant_id = ?"
_UNIT_BUDGETS: dict[int, str] = {}


def get_budget(conn: sqlite3.Connection, scope: str, unit: str) -> Budget | None:
    """The budget at exactly (scope, unit), if any."""
    row = conn.execute(f"SELECT {_BUDGET_COLUMNS} FROM budgets WHERE scope = ? AND unit = ?", (scope, unit)).fetchone()
    return _budget(row) if row else None


def tenant_budgets(conn: sqlite3.Connection, tenant_id: str | None) -> list[Budget]:
    """All budgets of one tenant (or of every tenant), ordered by (scope, unit)."""
    if tenant_id is None:
        rows = conn.execute(f"SELECT {_BUDGET_COLUMNS} FROM budgets ORDER BY scope, unit").fetchall()
    else:
        rows = conn.execute(
            f"SELECT {_BUDGET_COLUMNS} FROM budgets WHERE tenant_id = ? ORDER BY scope, unit", (tenant_id,)
        ).fetchall()
    return [_budget(row) for row in rows]


def insert_budget(conn: sqlite3.Connection, budget: Budget) -> None:
    """Insert a new budget row."""
    conn.execute(
        f"INSERT INTO budgets ({_BUDGET_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            budget.scope,
            budget.unit,
            budget.tenant_id,
            budget.ledger_id,
            budget.allocated,
            budget.reserved,
            budget.spent,
            budget.debt,
            budget.overdraft_limit,
            int(budget.is_over_limit),
            budget.status,
            budget.created_at_ms,
            budget.updated_at_ms,
            _dumps(budget.doc),
        ),
    )


def save_budget(conn: sqlite3.Connection, budget: Budget, now: int) -> None:
    """Write back a budget's mutable fields."""
    budget.updated_at_ms = now
    conn.execute(
        "UPDATE budgets SET allocated=?, reserved=?, spent=?, debt=?, overdraft_limit=?, is_over_limit=?, "
        "status=?, updated_at_ms=?, doc=? WHERE scope=? AND unit=?",
        (
            budget.allocated,
            budget.reserved,
            budget.spent,
            budget.debt,
            budget.overdraft_limit,
            int(budget.is_over_limit),
            budget.status,
            now,
            _dumps(budget.doc),
            budget.scope,
            budget.unit,
        ),
    )


def save_counters(conn: sqlite3.Connection, budgets: list[Budget], now: int) -> None:
    """Write back what the runtime changes (reserved, spent, debt, over-limit) of budgets, in one call.

    The runtime never changes a budget's allocation, limit, status or document, so those are not rewritten.
    """
    for budget in budgets:
        budget.updated_at_ms = now
    conn.executemany(
        "UPDATE budgets SET reserved=?, spent=?, debt=?, is_over_limit=?, updated_at_ms=? WHERE scope=? AND unit=?",
        [(b.reserved, b.spent, b.debt, int(b.is_over_limit), now, b.scope, b.unit) for b in budgets],
    )


# --- reservations ----------------------------------------------------------------------------------------


def insert_reservation(conn: sqlite3.Connection, res: Reservation) -> None:
    """Insert a new reservation row (subject columns are kept lower-cased for filtering)."""
    subject = res.doc.get("subject", {})
    conn.execute(
        f"INSERT INTO reservations ({_RESERVATION_COLUMNS}, deadline_ms, s_tenant, s_workspace, s_app, "
        "s_workflow, s_agent, s_toolset) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            res.reservation_id,
            res.tenant_id,
            res.status,
            res.unit,
            res.reserved,
            res.committed,
            res.created_at_ms,
            res.expires_at_ms,
            res.grace_ms,
            res.finalized_at_ms,
            res.extension_count,
            res.overage_policy,
            res.scope_path,
            res.idempotency_key,
            _dumps(res.budget_scopes),
            _dumps(res.doc),
            res.expires_at_ms + res.grace_ms,
            *(
                subject[level].lower() if isinstance(subject.get(level), str) else None
                for level in ("tenant", "workspace", "app", "workflow", "agent", "toolset")
            ),
        ),
    )


def save_reservation(conn: sqlite3.Connection, res: Reservation, *, doc: bool = True) -> None:
    """Write back a reservation's mutable fields (its document only with ``doc``, when it changed)."""
    values = (
        res.status,
        res.committed,
        res.expires_at_ms,
        res.expires_at_ms + res.grace_ms,
        res.finalized_at_ms,
        res.extension_count,
    )
    if doc:
        text = _dumps(res.doc)
        conn.execute(_SAVE_RESERVATION + ", doc=? WHERE reservation_id=?", (*values, text, res.reservation_id))
    else:
        conn.execute(_SAVE_RESERVATION + " WHERE reservation_id=?", (*values, res.reservation_id))


_SAVE_RESERVATION = (
    "UPDATE reservations SET status=?, committed=?, expires_at_ms=?, deadline_ms=?, finalized_at_ms=?, "
    "extension_count=?"
)


def get_reservation(conn: sqlite3.Connection, reservation_id: str) -> Reservation | None:
    """The reservation with this id, if any."""
    row = conn.execute(
        f"SELECT {_RESERVATION_COLUMNS} FROM reservations WHERE reservation_id = ?", (reservation_id,)
    ).fetchone()
    return _reservation(row) if row else None


def query_reservations(conn: sqlite3.Connection, where: str, params: Iterable[Any], tail: str) -> list[Reservation]:
    """Reservations matching a prepared WHERE clause (``tail`` carries ORDER BY / LIMIT)."""
    rows = conn.execute(f"SELECT {_RESERVATION_COLUMNS} FROM reservations WHERE {where} {tail}", tuple(params))
    return [_reservation(row) for row in rows.fetchall()]


def settle_reservation(
    conn: sqlite3.Connection, res: Reservation, status: str, now: int, *, doc: bool = True
) -> list[Budget]:
    """Return a reservation's held amount to its budgets and mark it ``status`` (RELEASED or EXPIRED).

    ``doc``: also write back the reservation's document (pass ``False`` when it did not change).
    """
    budgets = load_unit_budgets(conn, res.tenant_id, res.budget_scopes, res.unit)
    for budget in budgets:
        budget.reserved -= res.reserved
    save_counters(conn, budgets, now)
    res.status = status
    if status != "EXPIRED":
        res.finalized_at_ms = now
    save_reservation(conn, res, doc=doc)
    return budgets


def sweep_expired(conn: sqlite3.Connection, now: int, limit: int = 1000) -> int:
    """Expire ACTIVE reservations past ``expires_at_ms + grace`` (refunding them); returns how many."""
    due = query_reservations(conn, "status = 'ACTIVE' AND deadline_ms < ?", (now,), f"LIMIT {int(limit)}")
    for res in due:
        settle_reservation(conn, res, "EXPIRED", now, doc=False)
    return len(due)


_OPEN_REQUEST = (
    "SELECT (SELECT n FROM auth_epoch WHERE id = 0),"
    " EXISTS (SELECT 1 FROM reservations WHERE status = 'ACTIVE' AND deadline_ms < ?),"
    " i.payload_hash, i.status, i.body, i.expires_at_ms"
    " FROM (SELECT 1) LEFT JOIN idempotency AS i ON i.tenant_id = ? AND i.endpoint = ? AND i.key = ?"
)


def open_request(
    conn: sqlite3.Connection, now: int, tenant_id: str, endpoint: str, key: str, stamp: tuple[int, int] | None = None
) -> tuple[int, tuple[str, int, bytes] | None]:
    """The first step of a runtime write, in one statement: the ``auth_epoch``, the lazy expiry sweep (run
    only when something is due) and the still-valid idempotency record (payload_hash, status, body), if any.

    With a ``stamp`` whose epoch differs (a cached authentication to redo) nothing else is done.
    """
    epoch, due, digest, status, body, expires_at_ms = conn.execute(
        _OPEN_REQUEST, (now, tenant_id, endpoint, key)
    ).fetchone()
    if stamp is not None and stamp[0] != epoch:
        return int(epoch), None
    if due:
        sweep_expired(conn, now)
    if digest is None:
        return int(epoch), None
    if expires_at_ms < now:
        conn.execute("DELETE FROM idempotency WHERE tenant_id=? AND endpoint=? AND key=?", (tenant_id, endpoint, key))
        return int(epoch), None
    return int(epoch), (digest, status, bytes(body))


def has_due(conn: sqlite3.Connection, now: int) -> bool:
    """Whether any ACTIVE reservation is past its grace deadline."""
    row = conn.execute(
        "SELECT 1 FROM reservations WHERE status = 'ACTIVE' AND deadline_ms < ? LIMIT 1", (now,)
    ).fetchone()
    return row is not None


# --- idempotency -----------------------------------------------------------------------------------------


def get_idempotent(
    conn: sqlite3.Connection, tenant_id: str, endpoint: str, key: str, now: int
) -> tuple[str, int, bytes] | None:
    """The stored (payload_hash, status, body) for a still-valid key, if any."""
    row = conn.execute(
        "SELECT payload_hash, status, body, expires_at_ms FROM idempotency WHERE tenant_id=? AND endpoint=? AND key=?",
        (tenant_id, endpoint, key),
    ).fetchone()
    if row is None:
        return None
    if row[3] < now:
        conn.execute("DELETE FROM idempotency WHERE tenant_id=? AND endpoint=? AND key=?", (tenant_id, endpoint, key))
        return None
    return row[0], row[1], bytes(row[2])


def put_idempotent(
    conn: sqlite3.Connection,
    tenant_id: str,
    endpoint: str,
    key: str,
    payload_hash: str,
    status: int,
    body: bytes,
    expires_at_ms: int,
) -> None:
    """Store a successful response under (tenant, endpoint, key)."""
    conn.execute(
        "INSERT OR REPLACE INTO idempotency VALUES (?,?,?,?,?,?,?)",
        (tenant_id, endpoint, key, payload_hash, status, body, expires_at_ms),
    )


# --- tenants and keys ------------------------------------------------------------------------------------


def get_tenant(conn: sqlite3.Connection, tenant_id: str) -> dict[str, Any] | None:
    """The stored tenant document (admin ``Tenant`` shape plus internal ``*_ms`` fields), if any."""
    row = conn.execute("SELECT doc FROM tenants WHERE tenant_id = ?", (tenant_id,)).fetchone()
    if row is None:
        return None
    doc: dict[str, Any] = json.loads(row[0])
    return doc


def tenant_status(conn: sqlite3.Connection, tenant_id: str) -> str | None:
    """The tenant's status (the column kept with its document), or ``None`` if there is no such tenant."""
    row = conn.execute("SELECT status FROM tenants WHERE tenant_id = ?", (tenant_id,)).fetchone()
    return None if row is None else str(row[0])


def put_tenant(conn: sqlite3.Connection, doc: dict[str, Any]) -> None:
    """Insert or replace a tenant document."""
    conn.execute("INSERT OR REPLACE INTO tenants VALUES (?,?,?)", (doc["tenant_id"], doc["status"], _dumps(doc)))


def list_tenants(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """All tenant documents ordered by id."""
    return [json.loads(row[0]) for row in conn.execute("SELECT doc FROM tenants ORDER BY tenant_id").fetchall()]


def insert_api_key(
    conn: sqlite3.Connection,
    *,
    key_id: str,
    tenant_id: str,
    key_prefix: str,
    salt: bytes,
    key_hash: bytes,
    expires_at_ms: int,
    doc: dict[str, Any],
) -> None:
    """Store a new API key (only its salted hash; never the secret)."""
    conn.execute(
        "INSERT INTO api_keys VALUES (?,?,?,?,?,?,?,?)",
        (key_id, tenant_id, key_prefix, salt, key_hash, "ACTIVE", expires_at_ms, _dumps(doc)),
    )


def auth_epoch(conn: sqlite3.Connection) -> int:
    """The count of API key and tenant changes so far (kept by triggers)."""
    return int(conn.execute("SELECT n FROM auth_epoch WHERE id = 0").fetchone()[0])


def key_candidates(
    conn: sqlite3.Connection, key_prefix: str
) -> list[tuple[str, str, bytes, bytes, str, int, str, str | None]]:
    """Candidate keys for a presented secret, with what authenticating needs, in one statement.

    Each row is (key_id, tenant_id, salt, hash, status, expires_at_ms, key document JSON, tenant status or
    ``None`` when the tenant does not exist).
    """
    rows = conn.execute(
        "SELECT k.key_id, k.tenant_id, k.salt, k.key_hash, k.status, k.expires_at_ms, k.doc, t.status"
        " FROM api_keys AS k LEFT JOIN tenants AS t ON t.tenant_id = k.tenant_id WHERE k.key_prefix = ?",
        (key_prefix,),
    ).fetchall()
    return [(r[0], r[1], bytes(r[2]), bytes(r[3]), r[4], r[5], r[6], r[7]) for r in rows]


def list_api_keys(conn: sqlite3.Connection, tenant_id: str | None) -> list[dict[str, Any]]:
    """Key documents (never secrets), optionally of one tenant, ordered by creation."""
    if tenant_id is None:
        rows = conn.execute("SELECT doc, status FROM api_keys ORDER BY rowid").fetchall()
    else:
        rows = conn.execute(
            "SELECT doc, status FROM api_keys WHERE tenant_id = ? ORDER BY rowid", (tenant_id,)
        ).fetchall()
    return [{**json.loads(row[0]), "status": row[1]} for row in rows]


def set_api_key_status(conn: sqlite3.Connection, key_id: str, status: str, doc: dict[str, Any]) -> None:
    """Change a key's status and document."""
    conn.execute("UPDATE api_keys SET status = ?, doc = ? WHERE key_id = ?", (status, _dumps(doc), key_id))


def get_api_key(conn: sqlite3.Connection, key_id: str) -> dict[str, Any] | None:
    """One key document (never the secret), if any."""
    row = conn.execute("SELECT doc, status FROM api_keys WHERE key_id = ?", (key_id,)).fetchone()
    return {**json.loads(row[0]), "status": row[1]} if row else None
