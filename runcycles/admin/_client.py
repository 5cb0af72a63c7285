"""`CyclesAdminClient` and `AsyncCyclesAdminClient`: thin sync and async shells over `_operations`.

Every method builds its request with the same function of :mod:`runcycles.admin._operations` and reads the
answer with that call's reader; the shells only send. A method returns the typed model or raises:
:class:`~runcycles.admin.CyclesAdminError` (and subclasses) when the server says no,
:class:`~runcycles.errors.CyclesTransportError` when no answer came, and
:class:`~runcycles.errors.ResponseFormatError` when a success answer is not what the spec says. One attempt
per call (admin writes are operator actions; ``fund_budget`` takes an ``idempotency_key`` for safe retries).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import Any, TypeVar

import httpx

from .._protocol.requests import parse_response, transport_failure
from ..response import CyclesResponse
from . import _budget_ops as budget_ops
from . import _operations as ops
from ._config import AdminConfig
from ._models import ApiKey, BudgetFunding, BudgetLedger, CreatedApiKey, FundingOperation, Page, Tenant

__all__ = ["AsyncCyclesAdminClient", "CyclesAdminClient"]

T = TypeVar("T")


def _config(config: AdminConfig | None, base_url: str | None, admin_key: str | None) -> AdminConfig:
    if config is not None:
        if base_url is not None or admin_key is not None:
            raise ValueError("pass either config or base_url/admin_key, not both")
        if not isinstance(config, AdminConfig):
            raise TypeError(f"config must be an AdminConfig, got {type(config).__name__}")
        return config
    return AdminConfig.from_env(base_url, admin_key)


def _send_kwargs(call: ops.AdminCall[Any]) -> dict[str, Any]:
    return {"params": call.params or None, "content": call.content, "headers": call.headers}


class CyclesAdminClient:
    """The synchronous admin client (tenants, API keys, budgets) of a Cycles governance admin server.

    ``base_url`` and ``admin_key`` default to ``CYCLES_BASE_URL`` and ``CYCLES_ADMIN_API_KEY``; or pass a
    full :class:`AdminConfig` as ``config``. ``transport`` is any ``httpx`` transport (for example
    ``LocalCyclesServer().transport()``). Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        base_url: str | None = None,
        admin_key: str | None = None,
        *,
        config: AdminConfig | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.config = _config(config, base_url, admin_key)
        """The configuration in use."""
        self._http = httpx.Client(transport=transport, **self.config.http_options())

    def send(self, call: ops.AdminCall[Any]) -> CyclesResponse:
        """Send one prepared call and return the raw exchange (never raises for an HTTP status)."""
        try:
            reply = self._http.request(call.method, call.path, **_send_kwargs(call))
        except (httpx.HTTPError, OSError) as exc:
            return transport_failure(exc)
        return parse_response(reply.status_code, reply.headers, reply.content, reply.reason_phrase)

    def _run(self, call: ops.AdminCall[T]) -> T:
        return call.result(self.send(call))

    def _iter(self, call: ops.AdminCall[Page[T]]) -> Iterator[T]:
        cursor: str | None = None
        while True:
            page = self._run(call if cursor is None else call.with_cursor(cursor))
            yield from page.items
            cursor = ops.next_cursor(page, cursor)
            if cursor is None:
                return

    # --- tenants

    def create_tenant(self, tenant_id: str, name: str | None = None, **options: Any) -> Tenant:
        """Create a tenant (``name`` defaults to the id); an identical existing one is returned.

        ``options``: ``parent_tenant_id``, ``metadata``, ``default_commit_overage_policy``,
        ``default_reservation_ttl_ms``, ``max_reservation_ttl_ms``, ``max_reservation_extensions``,
        ``reservation_expiry_policy``.
        """
        return self._run(ops.create_tenant(tenant_id, name, **options))

    def list_tenants(self, **filters: Any) -> Page[Tenant]:
        """One page of tenants (``status``, ``parent_tenant_id``, ``search``, ``sort_by``, ``sort_dir``,
        ``limit``, ``cursor``)."""
        return self._run(ops.list_tenants(**filters))

    def iter_tenants(self, **filters: Any) -> Iterator[Tenant]:
        """Every tenant matching ``filters``, following the cursor page after page."""
        return self._iter(ops.list_tenants(**filters))

    def get_tenant(self, tenant_id: str) -> Tenant:
        """One tenant."""
        return self._run(ops.get_tenant(tenant_id))

    def update_tenant(self, tenant_id: str, **fields: Any) -> Tenant:
        """Change ``name``, ``status``, ``metadata`` or the reservation defaults of a tenant."""
        return self._run(ops.update_tenant(tenant_id, **fields))

    def suspend_tenant(self, tenant_id: str) -> Tenant:
        """ACTIVE -> SUSPENDED: no new reservations; existing ones may still commit or release."""
        return self.update_tenant(tenant_id, status="SUSPENDED")

    def reactivate_tenant(self, tenant_id: str) -> Tenant:
        """SUSPENDED -> ACTIVE."""
        return self.update_tenant(tenant_id, status="ACTIVE")

    def close_tenant(self, tenant_id: str) -> Tenant:
        """Close a tenant for good: its budgets close and its open reservations are released."""
        return self.update_tenant(tenant_id, status="CLOSED")

    # --- API keys

    def create_api_key(self, tenant_id: str, name: str = "default", **options: Any) -> CreatedApiKey:
        """Create an API key; its ``key_secret`` is in the result only (``options``: ``description``,
        ``permissions``, ``scope_filter``, ``expires_at``, ``metadata``)."""
        return self._run(ops.create_api_key(tenant_id, name, **options))

    def list_api_keys(self, **filters: Any) -> Page[ApiKey]:
        """One page of keys (``tenant_id``, ``status``, ``search``, ``sort_by``, ``sort_dir``, ``limit``,
        ``cursor``)."""
        return self._run(ops.list_api_keys(**filters))

    def iter_api_keys(self, **filters: Any) -> Iterator[ApiKey]:
        """Every key matching ``filters``, following the cursor."""
        return self._iter(ops.list_api_keys(**filters))

    def update_api_key(self, key_id: str, **fields: Any) -> ApiKey:
        """Change ``name``, ``description``, ``permissions``, ``scope_filter`` or ``metadata`` of a key."""
        return self._run(ops.update_api_key(key_id, **fields))

    def revoke_api_key(self, key_id: str, *, reason: str | None = None) -> ApiKey:
        """Revoke a key permanently."""
        return self._run(ops.revoke_api_key(key_id, reason=reason))

    # --- budgets

    def create_budget(self, scope: str, unit: Any, allocated: Any, **options: Any) -> BudgetLedger:
        """Create the ledger of (``scope``, ``unit``) with ``allocated`` (an int in ``unit`` or an ``Amount``).

        ``options``: ``tenant_id`` (default: the scope's tenant), ``overdraft_limit``,
        ``commit_overage_policy``, ``rollover_policy``, ``period_start``, ``period_end``, ``metadata``.
        """
        return self._run(budget_ops.create_budget(scope, unit, allocated, **options))

    def list_budgets(self, **filters: Any) -> Page[BudgetLedger]:
        """One page of ledgers (``tenant_id``, ``scope_prefix``, ``unit``, ``status``, ``over_limit``,
        ``has_debt``, ``utilization_min``, ``utilization_max``, ``search``, ``sort_by``, ``sort_dir``,
        ``limit``, ``cursor``)."""
        return self._run(budget_ops.list_budgets(**filters))

    def iter_budgets(self, **filters: Any) -> Iterator[BudgetLedger]:
        """Every ledger matching ``filters``, following the cursor."""
        return self._iter(budget_ops.list_budgets(**filters))

    def get_budget(self, scope: str, unit: Any) -> BudgetLedger:
        """The ledger of exactly (``scope``, ``unit``)."""
        return self._run(budget_ops.get_budget(scope, unit))

    def update_budget(self, scope: str, unit: Any, **fields: Any) -> BudgetLedger:
        """Change ``overdraft_limit``, ``commit_overage_policy`` or ``metadata`` of a ledger."""
        return self._run(budget_ops.update_budget(scope, unit, **fields))

    def fund_budget(
        self, scope: str, unit: Any, operation: FundingOperation | str, amount: Any, **options: Any
    ) -> BudgetFunding:
        """CREDIT, DEBIT, RESET, RESET_SPENT or REPAY_DEBT (``options``: ``tenant_id``, ``spent`` for
        RESET_SPENT, ``reason``, ``idempotency_key``, ``metadata``)."""
        return self._run(budget_ops.fund_budget(scope, unit, operation, amount, **options))

    def freeze_budget(self, scope: str, unit: Any, *, reason: str | None = None) -> BudgetLedger:
        """ACTIVE -> FROZEN: no reservations, commits or funding until unfrozen."""
        return self._run(budget_ops.set_budget_frozen(scope, unit, True, reason=reason))

    def unfreeze_budget(self, scope: str, unit: Any, *, reason: str | None = None) -> BudgetLedger:
        """FROZEN -> ACTIVE."""
        return self._run(budget_ops.set_budget_frozen(scope, unit, False, reason=reason))

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> CyclesAdminClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncCyclesAdminClient:
    """The asynchronous admin client (asyncio or trio); the same methods as :class:`CyclesAdminClient`,
    awaited, and ``iter_*`` as async iterators. Use ``async with``, or call :meth:`aclose`."""

    def __init__(
        self,
        base_url: str | None = None,
        admin_key: str | None = None,
        *,
        config: AdminConfig | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = _config(config, base_url, admin_key)
        """The configuration in use."""
        self._http = httpx.AsyncClient(transport=transport, **self.config.http_options())

    async def send(self, call: ops.AdminCall[Any]) -> CyclesResponse:
        """Send one prepared call and return the raw exchange (never raises for an HTTP status)."""
        try:
            reply = await self._http.request(call.method, call.path, **_send_kwargs(call))
        except (httpx.HTTPError, OSError) as exc:
            return transport_failure(exc)
        return parse_response(reply.status_code, reply.headers, reply.content, reply.reason_phrase)

    async def _run(self, call: ops.AdminCall[T]) -> T:
        return call.result(await self.send(call))

    async def _iter(self, call: ops.AdminCall[Page[T]]) -> AsyncIterator[T]:
        cursor: str | None = None
        while True:
            page = await self._run(call if cursor is None else call.with_cursor(cursor))
            for item in page.items:
                yield item
            cursor = ops.next_cursor(page, cursor)
            if cursor is None:
                return

    # --- tenants

    async def create_tenant(self, tenant_id: str, name: str | None = None, **options: Any) -> Tenant:
        """See :meth:`CyclesAdminClient.create_tenant`."""
        return await self._run(ops.create_tenant(tenant_id, name, **options))

    async def list_tenants(self, **filters: Any) -> Page[Tenant]:
        """See :meth:`CyclesAdminClient.list_tenants`."""
        return await self._run(ops.list_tenants(**filters))

    def iter_tenants(self, **filters: Any) -> AsyncIterator[Tenant]:
        """Every tenant matching ``filters`` (``async for``), following the cursor."""
        return self._iter(ops.list_tenants(**filters))

    async def get_tenant(self, tenant_id: str) -> Tenant:
        """One tenant."""
        return await self._run(ops.get_tenant(tenant_id))

    async def update_tenant(self, tenant_id: str, **fields: Any) -> Tenant:
        """See :meth:`CyclesAdminClient.update_tenant`."""
        return await self._run(ops.update_tenant(tenant_id, **fields))

    async def suspend_tenant(self, tenant_id: str) -> Tenant:
        """ACTIVE -> SUSPENDED."""
        return await self.update_tenant(tenant_id, status="SUSPENDED")

    async def reactivate_tenant(self, tenant_id: str) -> Tenant:
        """SUSPENDED -> ACTIVE."""
        return await self.update_tenant(tenant_id, status="ACTIVE")

    async def close_tenant(self, tenant_id: str) -> Tenant:
        """Close a tenant for good."""
        return await self.update_tenant(tenant_id, status="CLOSED")

    # --- API keys

    async def create_api_key(self, tenant_id: str, name: str = "default", **options: Any) -> CreatedApiKey:
        """See :meth:`CyclesAdminClient.create_api_key`."""
        return await self._run(ops.create_api_key(tenant_id, name, **options))

    async def list_api_keys(self, **filters: Any) -> Page[ApiKey]:
        """See :meth:`CyclesAdminClient.list_api_keys`."""
        return await self._run(ops.list_api_keys(**filters))

    def iter_api_keys(self, **filters: Any) -> AsyncIterator[ApiKey]:
        """Every key matching ``filters`` (``async for``), following the cursor."""
        return self._iter(ops.list_api_keys(**filters))

    async def update_api_key(self, key_id: str, **fields: Any) -> ApiKey:
        """See :meth:`CyclesAdminClient.update_api_key`."""
        return await self._run(ops.update_api_key(key_id, **fields))

    async def revoke_api_key(self, key_id: str, *, reason: str | None = None) -> ApiKey:
        """Revoke a key permanently."""
        return await self._run(ops.revoke_api_key(key_id, reason=reason))

    # --- budgets

    async def create_budget(self, scope: str, unit: Any, allocated: Any, **options: Any) -> BudgetLedger:
        """See :meth:`CyclesAdminClient.create_budget`."""
        return await self._run(budget_ops.create_budget(scope, unit, allocated, **options))

    async def list_budgets(self, **filters: Any) -> Page[BudgetLedger]:
        """See :meth:`CyclesAdminClient.list_budgets`."""
        return await self._run(budget_ops.list_budgets(**filters))

    def iter_budgets(self, **filters: Any) -> AsyncIterator[BudgetLedger]:
        """Every ledger matching ``filters`` (``async for``), following the cursor."""
        return self._iter(budget_ops.list_budgets(**filters))

    async def get_budget(self, scope: str, unit: Any) -> BudgetLedger:
        """The ledger of exactly (``scope``, ``unit``)."""
        return await self._run(budget_ops.get_budget(scope, unit))

    async def update_budget(self, scope: str, unit: Any, **fields: Any) -> BudgetLedger:
        """See :meth:`CyclesAdminClient.update_budget`."""
        return await self._run(budget_ops.update_budget(scope, unit, **fields))

    async def fund_budget(
        self, scope: str, unit: Any, operation: FundingOperation | str, amount: Any, **options: Any
    ) -> BudgetFunding:
        """See :meth:`CyclesAdminClient.fund_budget`."""
        return await self._run(budget_ops.fund_budget(scope, unit, operation, amount, **options))

    async def freeze_budget(self, scope: str, unit: Any, *, reason: str | None = None) -> BudgetLedger:
        """ACTIVE -> FROZEN."""
        return await self._run(budget_ops.set_budget_frozen(scope, unit, True, reason=reason))

    async def unfreeze_budget(self, scope: str, unit: Any, *, reason: str | None = None) -> BudgetLedger:
        """FROZEN -> ACTIVE."""
        return await self._run(budget_ops.set_budget_frozen(scope, unit, False, reason=reason))

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncCyclesAdminClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
