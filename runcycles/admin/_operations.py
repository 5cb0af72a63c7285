"""Admin operations without I/O: each function checks its arguments and returns an :class:`AdminCall` — the
HTTP request plus the reader of its answer. The sync and async clients only send it and hand the response
back to :meth:`AdminCall.result`."""

from __future__ import annotations

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
    CreatedApiKey,
    ExpiryPolicy,
    Page,
    Permission,
    Tenant,
    TenantStatus,
    _KeyPage,
    _TenantPage,
)

T = TypeVar("T")

_TENANTS = "/v1/admin/tenants"
_KEYS = "/v1/admin/api-keys"


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
