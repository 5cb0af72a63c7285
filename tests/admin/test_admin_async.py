"""`AsyncCyclesAdminClient` on asyncio and trio, in process (`async_transport()`) and over real HTTP against a
`runcycles serve` subprocess."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from conftest import ADMIN_KEY, Served

from runcycles.admin import (
    AdminAuthError,
    AdminConflictError,
    AdminNotFoundError,
    AsyncCyclesAdminClient,
    BudgetStatus,
    TenantStatus,
)
from runcycles.errors import CyclesTransportError
from runcycles.local import LocalCyclesServer

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["inproc", "http"])
def target(request: pytest.FixtureRequest, server: LocalCyclesServer) -> tuple[str, httpx.AsyncBaseTransport | None]:
    if request.param == "inproc":
        return "http://cycles.local", server.async_transport()
    served: Served = request.getfixturevalue("served")
    return served.base_url, None


@pytest.fixture
async def admin(target: tuple[str, httpx.AsyncBaseTransport | None]) -> AsyncIterator[AsyncCyclesAdminClient]:
    base_url, transport = target
    async with AsyncCyclesAdminClient(base_url, ADMIN_KEY, transport=transport) as client:
        yield client


async def test_lifecycle(admin: AsyncCyclesAdminClient, tenant_id: str) -> None:
    tenant = await admin.create_tenant(tenant_id, "Async Co")
    assert tenant.status is TenantStatus.ACTIVE
    assert (await admin.get_tenant(tenant_id)).name == "Async Co"
    assert (await admin.update_tenant(tenant_id, name="Renamed")).name == "Renamed"
    assert (await admin.suspend_tenant(tenant_id)).status is TenantStatus.SUSPENDED
    assert (await admin.reactivate_tenant(tenant_id)).status is TenantStatus.ACTIVE

    key = await admin.create_api_key(tenant_id, "bot")
    assert [k.key_id async for k in admin.iter_api_keys(tenant_id=tenant_id)] == [key.key_id]
    assert (await admin.update_api_key(key.key_id, description="runs nightly")).description == "runs nightly"
    assert (await admin.revoke_api_key(key.key_id)).revoked_at

    scope = f"tenant:{tenant_id}"
    await admin.create_budget(scope, "USD_MICROCENTS", 100_000_000)
    funded = await admin.fund_budget(scope, "USD_MICROCENTS", "CREDIT", 50_000_000)
    assert funded.new_allocated.amount == 150_000_000
    assert (await admin.update_budget(scope, "USD_MICROCENTS", commit_overage_policy="REJECT")).commit_overage_policy
    assert (await admin.freeze_budget(scope, "USD_MICROCENTS")).status is BudgetStatus.FROZEN
    with pytest.raises(AdminConflictError):
        await admin.fund_budget(scope, "USD_MICROCENTS", "CREDIT", 1)
    assert (await admin.unfreeze_budget(scope, "USD_MICROCENTS")).status is BudgetStatus.ACTIVE
    assert (await admin.get_budget(scope, "USD_MICROCENTS")).allocated.amount == 150_000_000
    page = await admin.list_budgets(tenant_id=tenant_id)
    assert [b.scope for b in page.items] == [scope] and not page.has_more
    assert (await admin.close_tenant(tenant_id)).status is TenantStatus.CLOSED


async def test_pagination_and_errors(
    admin: AsyncCyclesAdminClient, target: tuple[str, httpx.AsyncBaseTransport | None], tenant_id: str
) -> None:
    mine = [f"{tenant_id}-{i}" for i in range(3)]
    for name in mine:
        await admin.create_tenant(name)
        await admin.create_budget(f"tenant:{name}", "TOKENS", 7)
    first = await admin.list_tenants(limit=1)
    assert len(first.items) == 1 and first.next_cursor
    seen = [t.tenant_id async for t in admin.iter_tenants(limit=1)]
    assert sorted(t for t in seen if t.startswith(tenant_id)) == mine
    assert len(seen) == len(set(seen))
    scopes = [b.scope async for b in admin.iter_budgets(scope_prefix=f"tenant:{tenant_id}-", limit=2)]
    assert sorted(scopes) == [f"tenant:{name}" for name in mine]

    with pytest.raises(AdminNotFoundError):
        await admin.get_budget(f"tenant:{tenant_id}", "CREDITS")
    base_url, transport = target
    async with AsyncCyclesAdminClient(base_url, "wrong", transport=transport) as intruder:
        with pytest.raises(AdminAuthError, match="Invalid admin API key"):
            await intruder.get_tenant(mine[0])


async def test_no_server_is_a_transport_error() -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with AsyncCyclesAdminClient(f"http://127.0.0.1:{port}", ADMIN_KEY) as admin:
        with pytest.raises(CyclesTransportError, match="list_tenants failed"):
            await admin.list_tenants()
