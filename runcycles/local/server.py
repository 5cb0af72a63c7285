"""``LocalCyclesServer``: the embedded Cycles server with its admin operations as Python methods."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

import httpx

from . import _admin_budgets as budgets
from . import _admin_keys as keys
from . import _admin_schemas as schemas
from . import _admin_tenants as tenants
from . import _ledger as db
from ._asgi import AsgiApp
from ._base import DEFAULT_MAX_BODY_BYTES, Env, LocalServerError
from ._http import App
from ._ledger_store import Ledger
from ._ops import OpsApp
from ._transports import AsyncLocalTransport, LocalTransport


def _unit(unit: Any) -> str:
    """A unit given as a ``str`` or a ``str`` enum member."""
    return str(getattr(unit, "value", unit))


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class LocalCyclesServer:
    """A Cycles-protocol server on SQLite, usable in process (transports) or over HTTP (``asgi_app``).

    ``path`` is a database file (shared safely by several processes) or ``None`` for private memory.
    ``admin_key`` is the ``X-Admin-API-Key`` secret (generated when omitted; see :attr:`admin_key`).
    ``clock`` returns epoch milliseconds; tests inject a fake one to drive expiry without sleeping.
    ``max_body_bytes`` bounds request bodies (413 above it). ``durability`` is ``"full"`` (default: an
    acknowledged write survives a power loss) or ``"normal"`` (it survives a process crash; the last
    commits may roll back on power loss). A damaged database file raises
    :class:`~runcycles.local.LocalDatabaseError` naming the file.
    Admin methods raise :class:`~runcycles.local.LocalServerError` with the HTTP status and error code
    the admin endpoint would answer.
    """

    def __init__(
        self,
        path: str | None = None,
        *,
        admin_key: str | None = None,
        clock: Callable[[], int] | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        durability: str = "full",
    ) -> None:
        if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int) or max_body_bytes < 1:
            raise ValueError("max_body_bytes must be a positive integer")
        self._env = Env(
            ledger=Ledger(None if path is None else str(path), durability=durability),
            clock=clock or _wall_clock_ms,
            admin_key=admin_key or "cyc_admin_" + secrets.token_urlsafe(24),
            max_body_bytes=max_body_bytes,
        )
        self._app = App(self._env)
        self.asgi_app = OpsApp(AsgiApp(self._app), self._env)
        """The ASGI 3 application (e.g. ``uvicorn.run(server.asgi_app)``), with health probes and ``/metrics``."""

    @property
    def admin_key(self) -> str:
        """The ``X-Admin-API-Key`` secret of this server."""
        return self._env.admin_key

    @property
    def durability(self) -> str:
        """``"full"``, ``"normal"`` or ``"memory"`` (an in-memory database keeps nothing)."""
        return self._env.ledger.durability

    @property
    def max_body_bytes(self) -> int:
        """The request body limit in bytes."""
        return self._env.max_body_bytes

    @property
    def path(self) -> str | None:
        """The database file, or ``None`` when in memory."""
        return self._env.ledger.path

    def handle(
        self, method: str, path: str, query: str | bytes, headers: Any, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """The pure core: one request in, ``(status, headers, body)`` out."""
        return self._app.handle(method, path, query, headers, body)

    def transport(self) -> httpx.BaseTransport:
        """An in-process sync transport for ``httpx.Client`` / ``CyclesClient``."""
        return LocalTransport(self._app)

    def async_transport(self) -> httpx.AsyncBaseTransport:
        """An in-process async transport for ``httpx.AsyncClient`` / ``AsyncCyclesClient``."""
        return AsyncLocalTransport(self._app)

    # --- admin -------------------------------------------------------------------------------------------

    def create_tenant(self, tenant_id: str, name: str | None = None, **options: Any) -> dict[str, Any]:
        """Create a tenant (``options``: TenantCreateRequest fields); an identical one is returned."""
        body = {"tenant_id": tenant_id, "name": name if name is not None else tenant_id, **options}
        return tenants.create_tenant(self._env, schemas.validated(schemas.TENANT_CREATE, body))[1]

    def update_tenant(self, tenant_id: str, **fields: Any) -> dict[str, Any]:
        """Patch a tenant (``status``, ``max_reservation_extensions``, TTL defaults...); CLOSED cascades."""
        return tenants.update_tenant(self._env, tenant_id, schemas.validated(schemas.TENANT_UPDATE, dict(fields)))

    def create_api_key(
        self,
        tenant_id: str,
        name: str = "default",
        *,
        permissions: list[str] | None = None,
        scope_filter: list[str] | None = None,
    ) -> str:
        """Create an API key for ``tenant_id`` and return its secret (stored only as a salted hash).

        Without ``permissions`` the key gets the admin spec's default tenant set (every runtime operation
        and budget reads and writes); ``scope_filter`` (``level:value`` / ``level:*`` entries) confines it.
        """
        fields: dict[str, Any] = {"tenant_id": tenant_id, "name": name}
        if permissions is not None:
            fields["permissions"] = list(permissions)
        if scope_filter is not None:
            fields["scope_filter"] = list(scope_filter)
        body = schemas.validated(schemas.API_KEY_CREATE, fields)
        return str(keys.create_api_key(self._env, body)["key_secret"])

    def create_budget(
        self,
        scope: str,
        unit: Any,
        allocated: int,
        overdraft_limit: int = 0,
        caps: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create the ledger at ``scope`` (``tenant:<id>[/...]``) in ``unit``; returns the BudgetLedger."""
        unit = _unit(unit)
        body: dict[str, Any] = {
            "scope": scope,
            "unit": unit,
            "allocated": {"unit": unit, "amount": allocated},
            "overdraft_limit": {"unit": unit, "amount": overdraft_limit},
        }
        if caps is not None:
            body["caps"] = caps
        schemas.validated(schemas.BUDGET_CREATE, body)
        tenant_id = scope.split("/", 1)[0].partition(":")[2]
        return budgets.create_budget(self._env, tenant_id, body)

    def fund_budget(
        self, scope: str, unit: Any, operation: str, amount: int, *, spent: int | None = None
    ) -> dict[str, Any]:
        """CREDIT, DEBIT, RESET, RESET_SPENT (with ``spent``) or REPAY_DEBT; returns the funding response."""
        unit = _unit(unit)
        body: dict[str, Any] = {
            "operation": str(getattr(operation, "value", operation)),
            "amount": {"unit": unit, "amount": amount},
        }
        if spent is not None:
            body["spent"] = {"unit": unit, "amount": spent}
        return budgets.fund_budget(self._env, scope, unit, None, schemas.validated(schemas.FUNDING, body))

    def update_budget(self, scope: str, unit: Any, **fields: Any) -> dict[str, Any]:
        """Patch ``overdraft_limit`` (an int), ``commit_overage_policy``, ``metadata`` or ``caps``."""
        unit = _unit(unit)
        if "overdraft_limit" in fields:
            fields["overdraft_limit"] = {"unit": unit, "amount": fields["overdraft_limit"]}
        return budgets.update_budget(self._env, scope, unit, schemas.validated(schemas.BUDGET_UPDATE, fields))

    def freeze_budget(self, scope: str, unit: Any) -> dict[str, Any]:
        """ACTIVE -> FROZEN (409 if already frozen or closed)."""
        return budgets.set_budget_status(self._env, scope, _unit(unit), "FROZEN")

    def unfreeze_budget(self, scope: str, unit: Any) -> dict[str, Any]:
        """FROZEN -> ACTIVE (409 if not frozen or closed)."""
        return budgets.set_budget_status(self._env, scope, _unit(unit), "ACTIVE")

    def close_budget(self, scope: str, unit: Any) -> dict[str, Any]:
        """Close a budget for good (local extension; the admin spec closes budgets via the tenant cascade)."""
        return budgets.set_budget_status(self._env, scope, _unit(unit), "CLOSED")

    def get_budget(self, scope: str, unit: Any) -> dict[str, Any]:
        """A flat view for assertions: allocated, remaining, reserved, spent, debt (ints), is_over_limit."""
        with self._env.ledger.read() as conn:
            budget = budgets.budget_or_404(conn, scope, _unit(unit), None)
        return {
            "scope": budget.scope,
            "unit": budget.unit,
            "tenant_id": budget.tenant_id,
            "allocated": budget.allocated,
            "remaining": budget.remaining,
            "reserved": budget.reserved,
            "spent": budget.spent,
            "debt": budget.debt,
            "overdraft_limit": budget.overdraft_limit,
            "is_over_limit": budget.is_over_limit,
            "status": budget.status,
            "caps": budget.caps,
        }

    def sweep_expired(self) -> int:
        """Expire every reservation past ``expires_at_ms + grace`` now (also done lazily on access)."""
        with self._env.ledger.write() as conn:
            return db.sweep_expired(conn, self._env.clock(), limit=1_000_000)

    def close(self) -> None:
        """Close the database connections."""
        self._env.ledger.close()

    def __enter__(self) -> LocalCyclesServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["LocalCyclesServer", "LocalServerError"]
