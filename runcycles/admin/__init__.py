"""The admin client of the Cycles governance plane: tenants, API keys and budgets.

Not imported by ``import runcycles``; ``import runcycles.admin`` when you need it::

    from runcycles.admin import CyclesAdminClient

    with CyclesAdminClient("http://127.0.0.1:7878", admin_key) as admin:   # or CYCLES_BASE_URL / CYCLES_ADMIN_API_KEY
        admin.create_tenant("acme", "Acme Corp")
        key = admin.create_api_key("acme", "agents")          # key.key_secret: shown this once
        admin.create_budget("tenant:acme", "USD_MICROCENTS", 100_000_000)   # $1.00
        admin.fund_budget("tenant:acme", "USD_MICROCENTS", "CREDIT", 50_000_000)
        for ledger in admin.iter_budgets(tenant_id="acme"):
            print(ledger.scope, ledger.remaining.amount)

:class:`AsyncCyclesAdminClient` has the same methods for asyncio and trio. Both follow the governance admin
spec (``cycles-governance-admin-v0.1.25``), so they work against ``runcycles serve`` and any conforming
admin server. Requests are built once, without I/O, in :mod:`runcycles.admin._operations`.
"""

from ._client import AsyncCyclesAdminClient, CyclesAdminClient
from ._config import AdminConfig
from ._errors import (
    AdminAuthError,
    AdminBudgetExceededError,
    AdminConflictError,
    AdminInvalidRequestError,
    AdminNotFoundError,
    AdminTenantClosedError,
    CyclesAdminError,
)
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
    as_dict,
)

__all__ = [
    "AdminAuthError",
    "AdminBudgetExceededError",
    "AdminConfig",
    "AdminConflictError",
    "AdminInvalidRequestError",
    "AdminNotFoundError",
    "AdminTenantClosedError",
    "ApiKey",
    "ApiKeyStatus",
    "AsyncCyclesAdminClient",
    "BudgetFunding",
    "BudgetLedger",
    "BudgetStatus",
    "CreatedApiKey",
    "CyclesAdminClient",
    "CyclesAdminError",
    "ExpiryPolicy",
    "FundingOperation",
    "Page",
    "Permission",
    "RolloverPolicy",
    "Tenant",
    "TenantStatus",
    "as_dict",
]
