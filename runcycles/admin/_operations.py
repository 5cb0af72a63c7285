"""Admin operations without I/O: each function checks its arguments and returns an :class:`AdminCall` — the
HTTP request plus the reader of its answer. The sync and async clients only send it and hand the response
back to :meth:`AdminCall.result`."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import attrs

from .._protocol.requests import dumps
from .._wire import from_wire
from ..errors import ResponseFormatError
from ..response import CyclesResponse
from . import _check as c
from ._errors import admin_error
from ._models import (
    ApiKey,
    ApiKeyStatus,
    BudgetFunding,
    BudgetLedger,
    BudgetStatus,
    CreatedApiKey,
    ExpiryPolicy,
    FundingOperation,
    Page,
    Permission,
    RolloverPolicy,
    Tenant,
    TenantStatus,
    _KeyPage,
    _LedgerPage,
    _TenantPage,
)

T = TypeVar("T")

_TENANTS = "/v1/admin/tenants"
_KEYS = "/v1/admin/api-keys"
_BUDGETS = "/v1/admin/budgets"


@attrs.frozen(kw_only=True)
class AdminCall(Generic[T]):
    """One admin request, ready for any transport, and how to read its answer."""

    what: str
    method: str
    path: str
    reader: Callable[[Any], T]
    params: tuple[tuple[str, str], ...] = ()
    body: Mapping[str, Any] | None = None

    @property
    def headers(self) -> dict[str, str]:
        """Per-request headers (the content type when there is a body)."""
        return {"Content-Type": "application/json"} if self.body is not None else {}

    @property
    def content(self) -> bytes | None:
        """The JSON body."""
        return None if self.body is None else dumps(self.body)

    def result(self, response: CyclesResponse) -> T:
        """The typed result of a 2xx answer; otherwise raises the typed error.

        Raises :class:`~runcycles.admin.CyclesAdminError` (the server said no),
        :class:`~runcycles.errors.CyclesTransportError` (no answer) or
        :class:`~runcycles.errors.ResponseFormatError` (a 2xx whose body is not what the spec says).
        """
        if not response.is_success:
            raise admin_error(response, f"{self.what} failed")
        if response.body is None:
            raise ResponseFormatError(f"{self.what}: the {response.status} answer has no JSON body")
        return self.reader(response.body)

    def with_cursor(self, cursor: str) -> AdminCall[T]:
        """The same list request, asking for the page after ``cursor``."""
        params = (*tuple(p for p in self.params if p[0] != "cursor"), ("cursor", cursor))
        return attrs.evolve(self, params=params)


def next_cursor(page: Page[Any], previous: str | None) -> str | None:
    """The cursor of the page after ``page``, or ``None`` when it was the last (or the server repeats itself)."""
    cursor = page.next_cursor
    if not page.has_more or not cursor or cursor == previous:
        return None
    return cursor


def _reader(cls: type[T]) -> Callable[[Any], T]:
    return lambda body: from_wire(cls, body)


def _page_reader(cls: type[Any], field: str) -> Callable[[Any], Page[Any]]:
    def read(body: Any) -> Page[Any]:
        raw = from_wire(cls, body)
        more = raw.has_more if raw.has_more is not None else raw.next_cursor is not None
        return Page(items=getattr(raw, field), next_cursor=raw.next_cursor, has_more=bool(more))

    return read


def _segment(name: str, value: object) -> str:
    return quote(c.text(name, value), safe="")


def _query(**values: object) -> tuple[tuple[str, str], ...]:
    return tuple((name, str(value)) for name, value in values.items() if value is not None)


def _limit(value: int | None) -> int | None:
    return None if value is None else c.integer("limit", value, minimum=1)


def _maybe(check: Callable[..., Any], name: str, value: object, *args: Any) -> Any:
    return None if value is None else check(name, value, *args)


def _fields(**values: object) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


# --- tenants ---------------------------------------------------------------------------------------------


def create_tenant(
    tenant_id: str,
    name: str | None = None,
    *,
    parent_tenant_id: str | None = None,
    metadata: Mapping[str, str] | None = None,
    default_commit_overage_policy: object = None,
    default_reservation_ttl_ms: int | None = None,
    max_reservation_ttl_ms: int | None = None,
    max_reservation_extensions: int | None = None,
    reservation_expiry_policy: object = None,
) -> AdminCall[Tenant]:
    """``POST /v1/admin/tenants`` (the existing tenant is returned if identical)."""
    body = _fields(
        tenant_id=c.new_tenant_id(tenant_id),
        name=c.text("name", tenant_id if name is None else name, max_len=256),
        parent_tenant_id=_maybe(c.text, "parent_tenant_id", parent_tenant_id),
        metadata=None if metadata is None else c.mapping("metadata", metadata, strings=True),
        **_tenant_settings(
            default_commit_overage_policy,
            default_reservation_ttl_ms,
            max_reservation_ttl_ms,
            max_reservation_extensions,
        ),
        reservation_expiry_policy=_maybe(
            c.choice, "reservation_expiry_policy", reservation_expiry_policy, ExpiryPolicy
        ),
    )
    return AdminCall(what="create_tenant", method="POST", path=_TENANTS, body=body, reader=_reader(Tenant))


def _tenant_settings(policy: object, ttl: int | None, max_ttl: int | None, extensions: int | None) -> dict[str, Any]:
    ttl_range = {"minimum": 1000, "maximum": 86_400_000}
    return _fields(
        default_commit_overage_policy=_maybe(c.policy, "default_commit_overage_policy", policy),
        default_reservation_ttl_ms=None if ttl is None else c.integer("default_reservation_ttl_ms", ttl, **ttl_range),
        max_reservation_ttl_ms=None if max_ttl is None else c.integer("max_reservation_ttl_ms", max_ttl, **ttl_range),
        max_reservation_extensions=(
            None if extensions is None else c.integer("max_reservation_extensions", extensions, minimum=0)
        ),
    )


def list_tenants(
    *,
    status: object = None,
    parent_tenant_id: str | None = None,
    search: str | None = None,
    sort_by: str | None = None,
    sort_dir: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> AdminCall[Page[Tenant]]:
    """``GET /v1/admin/tenants`` (one page)."""
    params = _query(
        status=_maybe(c.choice, "status", status, TenantStatus),
        parent_tenant_id=parent_tenant_id,
        search=search,
        sort_by=sort_by,
        sort_dir=sort_dir,
        limit=_limit(limit),
        cursor=cursor,
    )
    return AdminCall(
        what="list_tenants", method="GET", path=_TENANTS, params=params, reader=_page_reader(_TenantPage, "tenants")
    )


def get_tenant(tenant_id: str) -> AdminCall[Tenant]:
    """``GET /v1/admin/tenants/{tenant_id}``."""
    path = f"{_TENANTS}/{_segment('tenant_id', tenant_id)}"
    return AdminCall(what="get_tenant", method="GET", path=path, reader=_reader(Tenant))


def update_tenant(
    tenant_id: str,
    *,
    name: str | None = None,
    status: object = None,
    metadata: Mapping[str, str] | None = None,
    default_commit_overage_policy: object = None,
    default_reservation_ttl_ms: int | None = None,
    max_reservation_ttl_ms: int | None = None,
    max_reservation_extensions: int | None = None,
) -> AdminCall[Tenant]:
    """``PATCH /v1/admin/tenants/{tenant_id}``: only the given fields change."""
    body = _fields(
        name=_maybe(c.text, "name", name),
        status=_maybe(c.choice, "status", status, TenantStatus),
        metadata=None if metadata is None else c.mapping("metadata", metadata, strings=True),
        **_tenant_settings(
            default_commit_overage_policy,
            default_reservation_ttl_ms,
            max_reservation_ttl_ms,
            max_reservation_extensions,
        ),
    )
    if not body:
        raise ValueError("update_tenant needs at least one field to change")
    path = f"{_TENANTS}/{_segment('tenant_id', tenant_id)}"
    return AdminCall(what="update_tenant", method="PATCH", path=path, body=body, reader=_reader(Tenant))


# --- API keys --------------------------------------------------------------------------------------------


def _permissions(value: Sequence[object]) -> list[str]:
    return [c.choice(f"permissions[{i}]", item, Permission) for i, item in enumerate(c.strings("permissions", value))]


def create_api_key(
    tenant_id: str,
    name: str,
    *,
    description: str | None = None,
    permissions: Sequence[Permission | str] | None = None,
    scope_filter: Sequence[str] | None = None,
    expires_at: object = None,
    metadata: Mapping[str, Any] | None = None,
) -> AdminCall[CreatedApiKey]:
    """``POST /v1/admin/api-keys`` (201; the secret is in the answer only)."""
    body = _fields(
        tenant_id=c.text("tenant_id", tenant_id),
        name=c.text("name", name, max_len=256),
        description=_maybe(c.text, "description", description),
        permissions=None if permissions is None else _permissions(permissions),
        scope_filter=None if scope_filter is None else c.strings("scope_filter", scope_filter),
        expires_at=_maybe(c.timestamp, "expires_at", expires_at),
        metadata=None if metadata is None else c.mapping("metadata", metadata),
    )
    return AdminCall(what="create_api_key", method="POST", path=_KEYS, body=body, reader=_reader(CreatedApiKey))


def list_api_keys(
    *,
    tenant_id: str | None = None,
    status: object = None,
    search: str | None = None,
    sort_by: str | None = None,
    sort_dir: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> AdminCall[Page[ApiKey]]:
    """``GET /v1/admin/api-keys`` (one page; never secrets)."""
    params = _query(
        tenant_id=tenant_id,
        status=_maybe(c.choice, "status", status, ApiKeyStatus),
        search=search,
        sort_by=sort_by,
        sort_dir=sort_dir,
        limit=_limit(limit),
        cursor=cursor,
    )
    return AdminCall(
        what="list_api_keys", method="GET", path=_KEYS, params=params, reader=_page_reader(_KeyPage, "keys")
    )


def update_api_key(
    key_id: str,
    *,
    name: str | None = None,
    description: str | None = None,
    permissions: Sequence[Permission | str] | None = None,
    scope_filter: Sequence[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> AdminCall[ApiKey]:
    """``PATCH /v1/admin/api-keys/{key_id}``: only the given fields change."""
    body = _fields(
        name=_maybe(c.text, "name", name),
        description=_maybe(c.text, "description", description),
        permissions=None if permissions is None else _permissions(permissions),
        scope_filter=None if scope_filter is None else c.strings("scope_filter", scope_filter),
        metadata=None if metadata is None else c.mapping("metadata", metadata),
    )
    if not body:
        raise ValueError("update_api_key needs at least one field to change")
    path = f"{_KEYS}/{_segment('key_id', key_id)}"
    return AdminCall(what="update_api_key", method="PATCH", path=path, body=body, reader=_reader(ApiKey))


def revoke_api_key(key_id: str, *, reason: str | None = None) -> AdminCall[ApiKey]:
    """``DELETE /v1/admin/api-keys/{key_id}`` (permanent)."""
    path = f"{_KEYS}/{_segment('key_id', key_id)}"
    params = _query(reason=None if reason is None else c.text("reason", reason, max_len=512))
    return AdminCall(what="revoke_api_key", method="DELETE", path=path, params=params, reader=_reader(ApiKey))


# --- budgets ---------------------------------------------------------------------------------------------


def _scope_unit(scope: str, unit: object) -> tuple[tuple[str, str], ...]:
    return (("scope", c.text("scope", scope)), ("unit", c.unit(unit)))


def _tenant_for(scope: str, tenant_id: str | None, what: str) -> str:
    if tenant_id is not None:
        return c.text("tenant_id", tenant_id)
    found = c.tenant_of_scope(c.text("scope", scope))
    if found is None:
        raise ValueError(f"{what}: tenant_id is required when scope does not start with tenant:<id>")
    return found


def create_budget(
    scope: str,
    unit: object,
    allocated: object,
    *,
    tenant_id: str | None = None,
    overdraft_limit: object = None,
    commit_overage_policy: object = None,
    rollover_policy: object = None,
    period_start: object = None,
    period_end: object = None,
    metadata: Mapping[str, Any] | None = None,
) -> AdminCall[BudgetLedger]:
    """``POST /v1/admin/budgets`` (201). ``tenant_id`` defaults to the scope's ``tenant:<id>``."""
    wire_unit = c.unit(unit)
    body = _fields(
        tenant_id=_tenant_for(scope, tenant_id, "create_budget"),
        scope=c.text("scope", scope),
        unit=wire_unit,
        allocated=c.amount("allocated", allocated, wire_unit),
        overdraft_limit=None if overdraft_limit is None else c.amount("overdraft_limit", overdraft_limit, wire_unit),
        commit_overage_policy=_maybe(c.policy, "commit_overage_policy", commit_overage_policy),
        rollover_policy=_maybe(c.choice, "rollover_policy", rollover_policy, RolloverPolicy),
        period_start=_maybe(c.timestamp, "period_start", period_start),
        period_end=_maybe(c.timestamp, "period_end", period_end),
        metadata=None if metadata is None else c.mapping("metadata", metadata),
    )
    return AdminCall(what="create_budget", method="POST", path=_BUDGETS, body=body, reader=_reader(BudgetLedger))


def list_budgets(
    *,
    tenant_id: str | None = None,
    scope_prefix: str | None = None,
    unit: object = None,
    status: object = None,
    over_limit: bool | None = None,
    has_debt: bool | None = None,
    utilization_min: float | None = None,
    utilization_max: float | None = None,
    search: str | None = None,
    sort_by: str | None = None,
    sort_dir: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> AdminCall[Page[BudgetLedger]]:
    """``GET /v1/admin/budgets`` (one page; all tenants when ``tenant_id`` is omitted)."""
    for name, bound in (("utilization_min", utilization_min), ("utilization_max", utilization_max)):
        number = isinstance(bound, (int, float)) and not isinstance(bound, bool)
        if bound is not None and (not number or not 0 <= bound <= 1):
            raise ValueError(f"{name} must be a number between 0 and 1, got {bound!r}")
    if utilization_min is not None and utilization_max is not None and utilization_min > utilization_max:
        raise ValueError("utilization_min must not be greater than utilization_max")
    params = _query(
        tenant_id=tenant_id,
        scope_prefix=scope_prefix,
        unit=None if unit is None else c.unit(unit),
        status=_maybe(c.choice, "status", status, BudgetStatus),
        over_limit=_maybe(c.flag, "over_limit", over_limit),
        has_debt=_maybe(c.flag, "has_debt", has_debt),
        utilization_min=utilization_min,
        utilization_max=utilization_max,
        search=search,
        sort_by=sort_by,
        sort_dir=sort_dir,
        limit=_limit(limit),
        cursor=cursor,
    )
    return AdminCall(
        what="list_budgets", method="GET", path=_BUDGETS, params=params, reader=_page_reader(_LedgerPage, "ledgers")
    )


def get_budget(scope: str, unit: object) -> AdminCall[BudgetLedger]:
    """``GET /v1/admin/budgets/lookup?scope=&unit=`` (exact scope)."""
    return AdminCall(
        what="get_budget",
        method="GET",
        path=f"{_BUDGETS}/lookup",
        params=_scope_unit(scope, unit),
        reader=_reader(BudgetLedger),
    )


def update_budget(
    scope: str,
    unit: object,
    *,
    overdraft_limit: object = None,
    commit_overage_policy: object = None,
    metadata: Mapping[str, Any] | None = None,
) -> AdminCall[BudgetLedger]:
    """``PATCH /v1/admin/budgets?scope=&unit=``: only the given fields change."""
    params = _scope_unit(scope, unit)
    body = _fields(
        overdraft_limit=None if overdraft_limit is None else c.amount("overdraft_limit", overdraft_limit, params[1][1]),
        commit_overage_policy=_maybe(c.policy, "commit_overage_policy", commit_overage_policy),
        metadata=None if metadata is None else c.mapping("metadata", metadata),
    )
    if not body:
        raise ValueError("update_budget needs at least one field to change")
    return AdminCall(
        what="update_budget", method="PATCH", path=_BUDGETS, params=params, body=body, reader=_reader(BudgetLedger)
    )


def fund_budget(
    scope: str,
    unit: object,
    operation: FundingOperation | str,
    amount: object,
    *,
    tenant_id: str | None = None,
    spent: object = None,
    reason: str | None = None,
    idempotency_key: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> AdminCall[BudgetFunding]:
    """``POST /v1/admin/budgets/fund``. A missing ``idempotency_key`` is generated (the spec requires one);
    pass your own to make a retry safe."""
    params = _scope_unit(scope, unit)
    wire_unit = params[1][1]
    op = c.choice("operation", operation, FundingOperation)
    if spent is not None and op != FundingOperation.RESET_SPENT.value:
        raise ValueError("spent is only allowed with RESET_SPENT")
    body = _fields(
        operation=op,
        amount=c.amount("amount", amount, wire_unit),
        spent=None if spent is None else c.amount("spent", spent, wire_unit),
        reason=None if reason is None else c.text("reason", reason, max_len=512),
        idempotency_key=c.text("idempotency_key", idempotency_key or str(uuid.uuid4()), max_len=256),
        metadata=None if metadata is None else c.mapping("metadata", metadata),
    )
    query = (*params, ("tenant_id", _tenant_for(scope, tenant_id, "fund_budget")))
    return AdminCall(
        what="fund_budget",
        method="POST",
        path=f"{_BUDGETS}/fund",
        params=query,
        body=body,
        reader=_reader(BudgetFunding),
    )


def set_budget_frozen(
    scope: str, unit: object, frozen: bool, *, reason: str | None = None, metadata: Mapping[str, Any] | None = None
) -> AdminCall[BudgetLedger]:
    """``POST /v1/admin/budgets/freeze`` (``frozen=True``) or ``/unfreeze``."""
    body = _fields(
        reason=None if reason is None else c.text("reason", reason, max_len=512),
        metadata=None if metadata is None else c.mapping("metadata", metadata),
    )
    action = "freeze" if frozen else "unfreeze"
    return AdminCall(
        what=f"{action}_budget",
        method="POST",
        path=f"{_BUDGETS}/{action}",
        params=_scope_unit(scope, unit),
        body=body,
        reader=_reader(BudgetLedger),
    )
