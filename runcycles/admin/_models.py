"""Enums and attrs value types for the governance admin spec's tenant, API-key and budget schemas.

Readers follow the wire clients' conventions (:mod:`runcycles._wire`): unknown fields go to ``extra``, unknown
enum values stay raw strings, a missing required field or a wrongly typed value raises
:class:`~runcycles.errors.ResponseFormatError` naming the field. Admin timestamps are ISO 8601 strings and are
kept as sent.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

import attrs

from .. import _wire as w
from ..models import Amount, CommitOveragePolicy, SignedAmount, Unit
from ..models._fields import Paged, extra

__all__ = [
    "ApiKey",
    "ApiKeyStatus",
    "BudgetFunding",
    "BudgetLedger",
    "BudgetStatus",
    "CreatedApiKey",
    "ExpiryPolicy",
    "FundingOperation",
    "Page",
    "Permission",
    "RolloverPolicy",
    "Tenant",
    "TenantStatus",
    "as_dict",
]

T = TypeVar("T")


class TenantStatus(str, enum.Enum):
    """``Tenant.status``: CLOSED is terminal."""

    ACTIVE = "ACTIVE"
    SUSPENDED = "SUSPENDED"
    CLOSED = "CLOSED"


class BudgetStatus(str, enum.Enum):
    """``BudgetLedger.status``: FROZEN blocks reservations and funding; CLOSED is terminal."""

    ACTIVE = "ACTIVE"
    FROZEN = "FROZEN"
    CLOSED = "CLOSED"


class ApiKeyStatus(str, enum.Enum):
    """``ApiKey.status``."""

    ACTIVE = "ACTIVE"
    REVOKED = "REVOKED"
    EXPIRED = "EXPIRED"


class FundingOperation(str, enum.Enum):
    """``BudgetFundingRequest.operation``: every funding operation the admin spec defines."""

    CREDIT = "CREDIT"
    """allocated += amount (top-up)."""
    DEBIT = "DEBIT"
    """allocated -= amount; refused when remaining would go negative."""
    RESET = "RESET"
    """allocated = amount; spent, reserved and debt preserved."""
    RESET_SPENT = "RESET_SPENT"
    """New billing period: allocated = amount, spent = ``spent`` (default 0)."""
    REPAY_DEBT = "REPAY_DEBT"
    """debt -= amount."""


class RolloverPolicy(str, enum.Enum):
    """``BudgetLedger.rollover_policy``."""

    NONE = "NONE"
    CARRY_FORWARD = "CARRY_FORWARD"
    CAP_AT_ALLOCATED = "CAP_AT_ALLOCATED"


class ExpiryPolicy(str, enum.Enum):
    """``Tenant.reservation_expiry_policy``."""

    AUTO_RELEASE = "AUTO_RELEASE"
    MANUAL_CLEANUP = "MANUAL_CLEANUP"
    GRACE_ONLY = "GRACE_ONLY"


class Permission(str, enum.Enum):
    """API key permission names (the admin spec's ``Permission`` enum)."""

    RESERVATIONS_CREATE = "reservations:create"
    RESERVATIONS_COMMIT = "reservations:commit"
    RESERVATIONS_RELEASE = "reservations:release"
    RESERVATIONS_EXTEND = "reservations:extend"
    RESERVATIONS_LIST = "reservations:list"
    BALANCES_READ = "balances:read"
    BUDGETS_READ = "budgets:read"
    BUDGETS_WRITE = "budgets:write"
    POLICIES_READ = "policies:read"
    POLICIES_WRITE = "policies:write"
    WEBHOOKS_READ = "webhooks:read"
    WEBHOOKS_WRITE = "webhooks:write"
    EVENTS_READ = "events:read"
    ADMIN_READ = "admin:read"
    ADMIN_WRITE = "admin:write"
    ADMIN_TENANTS_READ = "admin:tenants:read"
    ADMIN_TENANTS_WRITE = "admin:tenants:write"
    ADMIN_BUDGETS_READ = "admin:budgets:read"
    ADMIN_BUDGETS_WRITE = "admin:budgets:write"
    ADMIN_POLICIES_READ = "admin:policies:read"
    ADMIN_POLICIES_WRITE = "admin:policies:write"
    ADMIN_APIKEYS_READ = "admin:apikeys:read"
    ADMIN_APIKEYS_WRITE = "admin:apikeys:write"
    ADMIN_WEBHOOKS_READ = "admin:webhooks:read"
    ADMIN_WEBHOOKS_WRITE = "admin:webhooks:write"
    ADMIN_EVENTS_READ = "admin:events:read"
    ADMIN_AUDIT_READ = "admin:audit:read"


_STR = w.STR
_INT = w.INT
_POLICY = w.enum_of(CommitOveragePolicy)


@attrs.frozen(kw_only=True)
class Tenant:
    """A tenant: the isolation boundary owning budgets, keys and reservations."""

    tenant_id: str = attrs.field(metadata=_STR)
    name: str = attrs.field(metadata=_STR)
    status: TenantStatus | str = attrs.field(metadata=w.enum_of(TenantStatus))
    created_at: str = attrs.field(metadata=_STR)
    parent_tenant_id: str | None = attrs.field(default=None, metadata=_STR)
    default_commit_overage_policy: CommitOveragePolicy | str | None = attrs.field(default=None, metadata=_POLICY)
    default_reservation_ttl_ms: int | None = attrs.field(default=None, metadata=_INT)
    max_reservation_ttl_ms: int | None = attrs.field(default=None, metadata=_INT)
    max_reservation_extensions: int | None = attrs.field(default=None, metadata=_INT)
    reservation_expiry_policy: ExpiryPolicy | str | None = attrs.field(default=None, metadata=w.enum_of(ExpiryPolicy))
    metadata: Mapping[str, Any] | None = attrs.field(default=None, metadata=w.OBJECT)
    updated_at: str | None = attrs.field(default=None, metadata=_STR)
    suspended_at: str | None = attrs.field(default=None, metadata=_STR)
    closed_at: str | None = attrs.field(default=None, metadata=_STR)
    extra: Mapping[str, Any] = extra()


@attrs.frozen(kw_only=True)
class BudgetLedger:
    """The ledger of one (scope, unit): allocated, remaining (may be negative), reserved, spent, debt."""

    ledger_id: str = attrs.field(metadata=_STR)
    scope: str = attrs.field(metadata=_STR)
    unit: Unit | str = attrs.field(metadata=w.enum_of(Unit))
    allocated: Amount = attrs.field(metadata=w.model(Amount))
    remaining: SignedAmount = attrs.field(metadata=w.model(SignedAmount))
    status: BudgetStatus | str = attrs.field(metadata=w.enum_of(BudgetStatus))
    created_at: str = attrs.field(metadata=_STR)
    tenant_id: str | None = attrs.field(default=None, metadata=_STR)
    scope_path: str | None = attrs.field(default=None, metadata=_STR)
    reserved: Amount | None = attrs.field(default=None, metadata=w.model(Amount))
    spent: Amount | None = attrs.field(default=None, metadata=w.model(Amount))
    debt: Amount | None = attrs.field(default=None, metadata=w.model(Amount))
    overdraft_limit: Amount | None = attrs.field(default=None, metadata=w.model(Amount))
    is_over_limit: bool | None = attrs.field(default=None, metadata=w.BOOL)
    commit_overage_policy: CommitOveragePolicy | str | None = attrs.field(default=None, metadata=_POLICY)
    rollover_policy: RolloverPolicy | str | None = attrs.field(default=None, metadata=w.enum_of(RolloverPolicy))
    period_start: str | None = attrs.field(default=None, metadata=_STR)
    period_end: str | None = attrs.field(default=None, metadata=_STR)
    updated_at: str | None = attrs.field(default=None, metadata=_STR)
    extra: Mapping[str, Any] = extra()


@attrs.frozen(kw_only=True)
class BudgetFunding:
    """The outcome of a funding operation: the ledger's amounts before and after."""

    operation: FundingOperation | str = attrs.field(metadata=w.enum_of(FundingOperation))
    previous_allocated: Amount = attrs.field(metadata=w.model(Amount))
    new_allocated: Amount = attrs.field(metadata=w.model(Amount))
    previous_remaining: SignedAmount = attrs.field(metadata=w.model(SignedAmount))
    new_remaining: SignedAmount = attrs.field(metadata=w.model(SignedAmount))
    previous_debt: Amount | None = attrs.field(default=None, metadata=w.model(Amount))
    new_debt: Amount | None = attrs.field(default=None, metadata=w.model(Amount))
    previous_spent: Amount | None = attrs.field(default=None, metadata=w.model(Amount))
    new_spent: Amount | None = attrs.field(default=None, metadata=w.model(Amount))
    timestamp: str | None = attrs.field(default=None, metadata=_STR)
    extra: Mapping[str, Any] = extra()


@attrs.frozen(kw_only=True)
class ApiKey:
    """An API key as listed, updated or revoked (never its secret)."""

    key_id: str = attrs.field(metadata=_STR)
    tenant_id: str = attrs.field(metadata=_STR)
    key_prefix: str = attrs.field(metadata=_STR)
    status: ApiKeyStatus | str = attrs.field(metadata=w.enum_of(ApiKeyStatus))
    created_at: str = attrs.field(metadata=_STR)
    expires_at: str = attrs.field(metadata=_STR)
    name: str | None = attrs.field(default=None, metadata=_STR)
    description: str | None = attrs.field(default=None, metadata=_STR)
    permissions: tuple[str, ...] | None = attrs.field(default=None, metadata=w.STR_LIST)
    scope_filter: tuple[str, ...] | None = attrs.field(default=None, metadata=w.STR_LIST)
    last_used_at: str | None = attrs.field(default=None, metadata=_STR)
    revoked_at: str | None = attrs.field(default=None, metadata=_STR)
    revoked_reason: str | None = attrs.field(default=None, metadata=_STR)
    metadata: Mapping[str, Any] | None = attrs.field(default=None, metadata=w.OBJECT)
    extra: Mapping[str, Any] = extra()


@attrs.frozen(kw_only=True)
class CreatedApiKey:
    """A new API key: ``key_secret`` is returned this once and never again (hidden from ``repr``)."""

    key_id: str = attrs.field(metadata=_STR)
    key_secret: str = attrs.field(metadata=_STR, repr=False)
    key_prefix: str = attrs.field(metadata=_STR)
    tenant_id: str = attrs.field(metadata=_STR)
    created_at: str = attrs.field(metadata=_STR)
    expires_at: str = attrs.field(metadata=_STR)
    permissions: tuple[str, ...] | None = attrs.field(default=None, metadata=w.STR_LIST)
    extra: Mapping[str, Any] = extra()


@attrs.frozen(kw_only=True)
class Page(Generic[T]):
    """One page of a list: ``items``, and ``next_cursor`` to pass as ``cursor=`` for the next page."""

    items: tuple[T, ...]
    next_cursor: str | None = None
    has_more: bool = False


@attrs.frozen(kw_only=True)
class _TenantPage(Paged):
    tenants: tuple[Tenant, ...] = attrs.field(metadata=w.model_list(Tenant))


@attrs.frozen(kw_only=True)
class _KeyPage(Paged):
    keys: tuple[ApiKey, ...] = attrs.field(metadata=w.model_list(ApiKey))


@attrs.frozen(kw_only=True)
class _LedgerPage(Paged):
    ledgers: tuple[BudgetLedger, ...] = attrs.field(metadata=w.model_list(BudgetLedger))


def as_dict(value: Any) -> dict[str, Any]:
    """A model as a JSON-ready dict: its wire fields plus the unknown fields the reader kept in ``extra``."""
    if isinstance(value, Page):
        return {"items": [as_dict(item) for item in value.items], "next_cursor": value.next_cursor}
    out = dict(value.extra)
    out.update(w.to_wire(value))
    return out
