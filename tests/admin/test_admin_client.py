"""`CyclesAdminClient` end to end: in process (`LocalCyclesServer().transport()`) and over real HTTP against a
`runcycles serve` subprocess — tenants, API keys, budgets, every funding operation, pagination, errors."""

from __future__ import annotations

from collections.abc import Iterator

import attrs
import httpx
import pytest
from conftest import ADMIN_KEY, Served

from runcycles import CyclesClient, CyclesConfig
from runcycles.admin import (
    AdminAuthError,
    AdminBudgetExceededError,
    AdminConflictError,
    AdminNotFoundError,
    AdminTenantClosedError,
    ApiKeyStatus,
    BudgetStatus,
    CyclesAdminClient,
    FundingOperation,
    Permission,
    TenantStatus,
)
from runcycles.errors import TenantClosedError
from runcycles.local import LocalCyclesServer
from runcycles.models import CommitOveragePolicy, Unit

USD = "USD_MICROCENTS"


class Counting(httpx.BaseTransport):
    """Counts the requests that reach ``inner``."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


@attrs.define
class Plane:
    """One way to reach a server: its URL and a fresh transport per client."""

    mode: str
    base_url: str
    server: LocalCyclesServer | None

    def transport(self) -> Counting:
        inner = self.server.transport() if self.server is not None else httpx.HTTPTransport()
        return Counting(inner)

    def admin(self, admin_key: str = ADMIN_KEY, transport: httpx.BaseTransport | None = None) -> CyclesAdminClient:
        return CyclesAdminClient(self.base_url, admin_key, transport=transport or self.transport())

    def runtime(self, api_key: str) -> CyclesClient:
        config = CyclesConfig(self.base_url, api_key, journal_enabled=False)
        return CyclesClient(config, transport=self.transport())


@pytest.fixture(params=["inproc", "http"])
def plane(request: pytest.FixtureRequest) -> Iterator[Plane]:
    if request.param == "inproc":
        server = LocalCyclesServer(admin_key=ADMIN_KEY)
        yield Plane("inproc", "http://cycles.local", server)
        server.close()
    else:
        served: Served = request.getfixturevalue("served")
        yield Plane("http", served.base_url, None)


@pytest.fixture
def admin(plane: Plane) -> Iterator[CyclesAdminClient]:
    with plane.admin() as client:
        yield client


def test_tenants_create_get_update_and_close(admin: CyclesAdminClient, tenant_id: str) -> None:
    created = admin.create_tenant(tenant_id, "Acme", default_commit_overage_policy="REJECT", metadata={"team": "ml"})
    assert created.tenant_id == tenant_id
    assert created.status is TenantStatus.ACTIVE
    assert created.default_commit_overage_policy is CommitOveragePolicy.REJECT
    assert created.metadata == {"team": "ml"}
    again = admin.create_tenant(tenant_id, "Acme", default_commit_overage_policy="REJECT", metadata={"team": "ml"})
    assert again.created_at == created.created_at  # the spec's idempotent create
    with pytest.raises(AdminConflictError) as conflict:
        admin.create_tenant(tenant_id, "Someone else")
    assert conflict.value.code == "DUPLICATE_RESOURCE"

    assert admin.get_tenant(tenant_id).name == "Acme"
    updated = admin.update_tenant(tenant_id, name="Acme Corp", max_reservation_extensions=2)
    assert (updated.name, updated.max_reservation_extensions) == ("Acme Corp", 2)
    assert admin.suspend_tenant(tenant_id).status is TenantStatus.SUSPENDED
    assert tenant_id in {t.tenant_id for t in admin.iter_tenants(status="SUSPENDED")}
    assert admin.reactivate_tenant(tenant_id).status is TenantStatus.ACTIVE

    admin.create_budget(f"tenant:{tenant_id}", USD, 1000)
    closed = admin.close_tenant(tenant_id)
    assert closed.status is TenantStatus.CLOSED and closed.closed_at
    assert admin.get_budget(f"tenant:{tenant_id}", USD).status is BudgetStatus.CLOSED
    with pytest.raises(AdminTenantClosedError) as refused:
        admin.create_api_key(tenant_id, "late")
    assert isinstance(refused.value, TenantClosedError) and refused.value.status == 409


def test_unknown_tenant_and_bad_admin_key_are_typed_refusals(plane: Plane, admin: CyclesAdminClient) -> None:
    with pytest.raises(AdminNotFoundError) as missing:
        admin.get_tenant("no-such-tenant")
    assert (missing.value.status, missing.value.code) == (404, "TENANT_NOT_FOUND")
    with plane.admin("wrong-key") as intruder, pytest.raises(AdminAuthError) as denied:
        intruder.list_tenants()
    assert denied.value.status == 401
    assert denied.value.server_message == "Invalid admin API key"
    assert "Invalid admin API key" in str(denied.value)


def test_api_keys_create_list_update_revoke(plane: Plane, admin: CyclesAdminClient, tenant_id: str) -> None:
    admin.create_tenant(tenant_id)
    admin.create_budget(f"tenant:{tenant_id}", USD, 1000)
    key = admin.create_api_key(tenant_id, "bot", permissions=[Permission.BALANCES_READ, "reservations:list"])
    assert key.key_secret.startswith(key.key_prefix)
    assert key.permissions == ("balances:read", "reservations:list")
    with plane.runtime(key.key_secret) as runtime:
        assert runtime.get_balances(tenant=tenant_id).status == 200

    listed = list(admin.iter_api_keys(tenant_id=tenant_id))
    assert [k.key_id for k in listed] == [key.key_id]
    assert listed[0].status is ApiKeyStatus.ACTIVE
    assert "key_secret" not in listed[0].extra

    changed = admin.update_api_key(key.key_id, name="renamed", permissions=["budgets:read"])
    assert (changed.name, changed.permissions) == ("renamed", ("budgets:read",))

    revoked = admin.revoke_api_key(key.key_id, reason="rotated")
    assert revoked.status is ApiKeyStatus.REVOKED and revoked.revoked_reason == "rotated"
    with plane.runtime(key.key_secret) as runtime:
        assert runtime.get_balances(tenant=tenant_id).status == 401
    with pytest.raises(AdminConflictError) as again:
        admin.revoke_api_key(key.key_id)
    assert again.value.code == "KEY_REVOKED"
    with pytest.raises(AdminConflictError):
        admin.update_api_key(key.key_id, name="zombie")
    assert [k.status for k in admin.iter_api_keys(tenant_id=tenant_id, status="REVOKED")] == [ApiKeyStatus.REVOKED]


def test_budgets_create_list_show_update(admin: CyclesAdminClient, tenant_id: str) -> None:
    admin.create_tenant(tenant_id)
    scope = f"tenant:{tenant_id}"
    ledger = admin.create_budget(scope, USD, 100_000_000, commit_overage_policy="ALLOW_WITH_OVERDRAFT")
    assert ledger.unit is Unit.USD_MICROCENTS
    assert (ledger.allocated.amount, ledger.remaining.amount, ledger.tenant_id) == (100_000_000, 100_000_000, tenant_id)
    admin.create_budget(f"{scope}/workspace:eng", "TOKENS", 5000)
    with pytest.raises(AdminConflictError) as duplicate:
        admin.create_budget(scope, USD, 1)
    assert duplicate.value.code == "DUPLICATE_RESOURCE"

    assert {b.scope for b in admin.iter_budgets(tenant_id=tenant_id)} == {scope, f"{scope}/workspace:eng"}
    assert [b.unit for b in admin.iter_budgets(tenant_id=tenant_id, unit="TOKENS")] == [Unit.TOKENS]
    assert [b.scope for b in admin.iter_budgets(scope_prefix=f"{scope}/workspace")] == [f"{scope}/workspace:eng"]
    assert admin.get_budget(scope, "USD_MICROCENTS").ledger_id == ledger.ledger_id
    with pytest.raises(AdminNotFoundError):
        admin.get_budget(scope, "CREDITS")

    updated = admin.update_budget(scope, USD, overdraft_limit=500, metadata={"owner": "ops"})
    assert updated.overdraft_limit is not None and updated.overdraft_limit.amount == 500


def test_every_funding_operation(admin: CyclesAdminClient, tenant_id: str) -> None:
    admin.create_tenant(tenant_id)
    scope = f"tenant:{tenant_id}"
    admin.create_budget(scope, "TOKENS", 1000)

    credit = admin.fund_budget(scope, "TOKENS", FundingOperation.CREDIT, 500)
    assert credit.operation is FundingOperation.CREDIT
    assert (credit.previous_allocated.amount, credit.new_allocated.amount) == (1000, 1500)
    assert (credit.previous_remaining.amount, credit.new_remaining.amount) == (1000, 1500)
    assert admin.fund_budget(scope, "TOKENS", "debit", 200).new_allocated.amount == 1300
    with pytest.raises(AdminBudgetExceededError):
        admin.fund_budget(scope, "TOKENS", "DEBIT", 10_000)
    reset = admin.fund_budget(scope, "TOKENS", "RESET", 800)
    assert (reset.new_allocated.amount, reset.new_remaining.amount) == (800, 800)
    period = admin.fund_budget(scope, "TOKENS", "RESET_SPENT", 900, spent=100)
    assert period.new_spent is not None and period.new_spent.amount == 100
    assert period.new_remaining.amount == 800
    repay = admin.fund_budget(scope, "TOKENS", "REPAY_DEBT", 5)
    assert repay.new_debt is not None and repay.new_debt.amount == 0
    assert admin.get_budget(scope, "TOKENS").allocated.amount == 900


def test_funding_replays_by_idempotency_key(admin: CyclesAdminClient, tenant_id: str) -> None:
    admin.create_tenant(tenant_id)
    scope = f"tenant:{tenant_id}"
    admin.create_budget(scope, "CREDITS", 10)
    first = admin.fund_budget(scope, "CREDITS", "CREDIT", 5, idempotency_key="topup-1", reason="monthly")
    replay = admin.fund_budget(scope, "CREDITS", "CREDIT", 5, idempotency_key="topup-1", reason="monthly")
    assert replay == first
    assert admin.get_budget(scope, "CREDITS").allocated.amount == 15  # credited once
    with pytest.raises(AdminConflictError) as mismatch:
        admin.fund_budget(scope, "CREDITS", "CREDIT", 6, idempotency_key="topup-1", reason="monthly")
    assert mismatch.value.code == "IDEMPOTENCY_MISMATCH"


def test_freeze_and_unfreeze(admin: CyclesAdminClient, tenant_id: str) -> None:
    admin.create_tenant(tenant_id)
    scope = f"tenant:{tenant_id}"
    admin.create_budget(scope, USD, 1000)
    assert admin.freeze_budget(scope, USD, reason="incident").status is BudgetStatus.FROZEN
    with pytest.raises(AdminConflictError) as frozen:
        admin.fund_budget(scope, USD, "CREDIT", 1)
    assert frozen.value.code == "BUDGET_FROZEN"
    with pytest.raises(AdminConflictError):
        admin.freeze_budget(scope, USD)
    assert admin.unfreeze_budget(scope, USD).status is BudgetStatus.ACTIVE
    with pytest.raises(AdminConflictError):
        admin.unfreeze_budget(scope, USD)


def test_iterators_follow_the_cursor_page_by_page(plane: Plane, tenant_id: str) -> None:
    transport = plane.transport()
    with plane.admin(transport=transport) as admin:
        mine = [f"{tenant_id}-{i}" for i in range(5)]
        for name in mine:
            admin.create_tenant(name)
            admin.create_budget(f"tenant:{name}", "TOKENS", 1)
        first = admin.list_tenants(limit=2)
        assert len(first.items) == 2 and first.has_more and first.next_cursor
        second = admin.list_tenants(limit=2, cursor=first.next_cursor)
        assert {t.tenant_id for t in first.items}.isdisjoint(t.tenant_id for t in second.items)

        transport.paths.clear()
        seen = [t.tenant_id for t in admin.iter_tenants(limit=2)]
        assert sorted(t for t in seen if t.startswith(tenant_id)) == mine
        assert len(seen) == len(set(seen))
        assert len(transport.paths) == -(-len(seen) // 2)  # one request per page of two
        budgets = [b.scope for b in admin.iter_budgets(scope_prefix=f"tenant:{tenant_id}-", limit=2)]
        assert sorted(budgets) == [f"tenant:{name}" for name in mine]


def test_config_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, server: LocalCyclesServer) -> None:
    monkeypatch.setenv("CYCLES_BASE_URL", "http://from-env")
    monkeypatch.setenv("CYCLES_ADMIN_API_KEY", ADMIN_KEY)
    with CyclesAdminClient(transport=server.transport()) as admin:
        assert admin.config.base_url == "http://from-env"
        assert admin.create_tenant("env-tenant").tenant_id == "env-tenant"
    monkeypatch.delenv("CYCLES_ADMIN_API_KEY")
    with pytest.raises(ValueError, match="CYCLES_ADMIN_API_KEY"):
        CyclesAdminClient()


def test_client_side_checks_send_nothing(plane: Plane) -> None:
    transport = plane.transport()
    with plane.admin(transport=transport) as admin:
        with pytest.raises(ValueError, match=r"permissions\[0\]"):
            admin.create_api_key("acme", "bot", permissions=["root"])
        with pytest.raises(ValueError, match="tenant_id"):
            admin.create_tenant("BAD ID")
    assert transport.paths == []
