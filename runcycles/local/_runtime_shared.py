"""Runtime-plane pieces shared by the handlers: scopes, balances, tenant checks, idempotency, evaluation."""

from __future__ import annotations

import json
import sqlite3
from json.encoder import encode_basestring
from typing import Any

import attrs

from . import _ledger as db
from ._base import (
    Env,
    LocalServerError,
    Request,
    amount,
    dumps,
    dumps_with,
    payload_hash,
)
from ._ledger import Budget, Reservation
from ._validate import (
    DEFAULTS,
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


def balances_json(budgets: list[Budget]) -> str:
    """The JSON text of ``[balance(b) for b in budgets]`` as :func:`~._base.dumps` writes it, built directly
    (the generic encoder spends several microseconds on each balance's seven small objects)."""
    return "[" + ",".join(map(_balance_json, budgets)) + "]"


def _balance_json(budget: Budget) -> str:
    scope = budget.scope
    amount = '{"unit":' + encode_basestring(budget.unit) + ',"amount":'
    return (
        f'{{"scope":{encode_basestring(scope.rsplit("/", 1)[-1])},"scope_path":{encode_basestring(scope)},'
        f'"remaining":{amount}{int(budget.remaining)}}},"reserved":{amount}{int(budget.reserved)}}},'
        f'"spent":{amount}{int(budget.spent)}}},"allocated":{amount}{int(budget.allocated)}}},'
        f'"debt":{amount}{int(budget.debt)}}},"overdraft_limit":{amount}{int(budget.overdraft_limit)}}},'
        f'"is_over_limit":{"true" if budget.is_over_limit else "false"}}}'
    )


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


def tenant_closed(env: Env, conn: sqlite3.Connection, tenant_id: str, epoch: int) -> bool:
    """Whether the tenant record exists and is CLOSED (``epoch``: see :func:`tenant_doc`)."""
    doc = tenant_doc(env, conn, tenant_id, epoch)
    return doc is not None and doc.get("status") == "CLOSED"


def closed_error() -> LocalServerError:
    """409 TENANT_CLOSED."""
    return LocalServerError(409, "TENANT_CLOSED", "Tenant is closed")


_TENANT_CACHE_LIMIT = 4096


def tenant_doc(env: Env, conn: sqlite3.Connection, tenant_id: str, epoch: int) -> dict[str, Any] | None:
    """The tenant document (``None`` if there is no such tenant); do not mutate it, it may be shared.

    Cached while the ledger's ``auth_epoch`` (bumped by triggers on every tenant change, by any process) is
    the ``epoch`` read in this transaction and no write was rolled back since (a rollback may bring an epoch
    value back with another document behind it).
    """
    stamp = (epoch, env.ledger.rollbacks)
    cached = env.tenant_cache.get(tenant_id)
    if cached is not None and cached[0] == stamp:
        hit: dict[str, Any] | None = cached[1]
        return hit
    doc = db.get_tenant(conn, tenant_id)
    if len(env.tenant_cache) >= _TENANT_CACHE_LIMIT:
        env.tenant_cache.clear()
    env.tenant_cache[tenant_id] = (stamp, doc)
    return doc


@attrs.define(kw_only=True)
class Idem:
    """The idempotency slot of one request: where its response is stored and what it must match."""

    tenant: str
    endpoint: str
    key: str
    digest: str
    epoch: int = 0
    """The ledger's ``auth_epoch`` as read by :meth:`begin` in this transaction."""

    @classmethod
    def of(cls, tenant: str, endpoint: str, body: dict[str, Any], defaults: str | None = None) -> Idem:
        """The slot for ``body`` (hashed with the schema defaults of ``defaults`` filled in)."""
        return cls(
            tenant=tenant,
            endpoint=endpoint,
            key=body["idempotency_key"],
            digest=payload_hash(body, DEFAULTS.get(defaults or "")),
        )

    def begin(self, env: Env, conn: sqlite3.Connection, req: Request) -> tuple[int, tuple[int, bytes] | None]:
        """Start a write transaction's work: server time (after the lazy expiry sweep) and the stored
        response for a replay, or ``None``; 409 IDEMPOTENCY_MISMATCH for a different body.

        Raises :class:`~._base.StaleAuth` first if ``req`` was authenticated from a cache that may be stale.
        """
        now = env.clock()
        self.epoch, found = db.open_request(conn, now, self.tenant, self.endpoint, self.key, req.auth_stamp)
        req.check_auth(self.epoch, env.ledger.rollbacks)
        return now, self._matched(found)

    def replay(self, conn: sqlite3.Connection, now: int) -> tuple[int, bytes] | None:
        """The stored response for a replay, or ``None``; 409 IDEMPOTENCY_MISMATCH for a different body."""
        return self._matched(db.get_idempotent(conn, self.tenant, self.endpoint, self.key, now))

    def _matched(self, found: tuple[str, int, bytes] | None) -> tuple[int, bytes] | None:
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
        self,
        conn: sqlite3.Connection,
        status: int,
        body: dict[str, Any],
        expires_at_ms: int,
        balances: list[Budget] | None = None,
    ) -> Response:
        """Store a successful response and return it (with a last member ``balances`` of these budgets, if given)."""
        raw = dumps(body) if balances is None else dumps_with(body, "balances", balances_json(balances))
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
    tenant: dict[str, Any] | None = None
    """The tenant document read for the evaluation (``None`` if the tenant record does not exist)."""

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
    matching = db.load_unit_budgets(conn, tenant_id, scopes, unit)
    order = {scope: i for i, scope in enumerate(scopes)}
    if len(matching) > 1:
        matching.sort(key=lambda b: order[b.scope])
    found = matching or db.load_budgets(conn, tenant_id, scopes)  # other units: for the UNIT_MISMATCH error
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
    env: Env, conn: sqlite3.Connection, tenant_id: str, subject: dict[str, Any], estimate: dict[str, Any], epoch: int
) -> Evaluation:
    """Run the reserve checks (first failing scope wins) without mutating anything."""
    scopes = derive_scopes(subject)
    tenant = tenant_doc(env, conn, tenant_id, epoch)
    if tenant is not None and tenant.get("status") == "CLOSED":
        return Evaluation(scopes=scopes, budgets=[], denial="TENANT_CLOSED", message="Tenant is closed")
    budgets = budgets_for(conn, tenant_id, scopes, estimate["unit"])
    if not budgets:
        return Evaluation(
            scopes=scopes,
            budgets=[],
            denial="BUDGET_NOT_FOUND",
            message=f"Budget not found for provided scope: {scopes[-1] if scopes else ''}",
            tenant=tenant,
        )
    for budget in budgets:
        denial = budget_denial(budget, estimate["amount"])
        if denial is not None:
            return Evaluation(scopes=scopes, budgets=budgets, denial=denial[0], message=denial[1], tenant=tenant)
    deepest = budgets[-1]
    return Evaluation(scopes=scopes, budgets=budgets, denial=None, caps=deepest.caps, tenant=tenant)


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
    """Write back every budget's runtime counters (reserved, spent, debt, over-limit)."""
    db.save_counters(conn, budgets, now)


def owned_reservation(conn: sqlite3.Connection, req: Request, reservation_id: str) -> Reservation:
    """The reservation, if it exists (404) and the caller may touch it (403)."""
    res = db.get_reservation(conn, reservation_id)
    if res is None:
        raise LocalServerError(404, "NOT_FOUND", f"Reservation not found: {reservation_id}")
    if not req.admin and res.tenant_id != req.tenant:
        raise LocalServerError(403, "FORBIDDEN", "Reservation belongs to another tenant")
    check_scope_access(req, res.scope_path)
    return res
