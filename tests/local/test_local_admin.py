"""Admin plane subset over HTTP (X-Admin-API-Key) and the same operations as Python methods."""

from __future__ import annotations

import enum
import sqlite3
from pathlib import Path

import pytest
from local_support import ADMIN_KEY, USD, FakeClock, World, error_of

from runcycles.local import LocalCyclesServer, LocalServerError


def test_provisioning_flow_over_http(world: World) -> None:
    admin = world.admin
    created = admin.post("/v1/admin/tenants", json={"tenant_id": "gamma", "name": "Gamma Corp"})
    assert created.status_code == 201
    tenant = created.json()
    assert tenant["status"] == "ACTIVE" and tenant["max_reservation_extensions"] == 10
    again = admin.post("/v1/admin/tenants", json={"tenant_id": "gamma", "name": "Gamma Corp"})
    assert again.status_code == 200 and again.json() == tenant
    conflict = admin.post("/v1/admin/tenants", json={"tenant_id": "gamma", "name": "Other"})
    assert conflict.status_code == 409 and error_of(conflict) == "DUPLICATE_RESOURCE"

    key = admin.post("/v1/admin/api-keys", json={"tenant_id": "gamma", "name": "ci"})
    assert key.status_code == 201
    secret = key.json()["key_secret"]
    assert secret.startswith("cyc_live_") and key.json()["key_prefix"] == secret[:14]
    listed = admin.get("/v1/admin/api-keys", params={"tenant_id": "gamma"}).json()["keys"]
    assert len(listed) == 1 and "key_secret" not in listed[0] and secret not in str(listed)

    tenant_client = world.client(api_key=secret)
    budget = tenant_client.post(
        "/v1/admin/budgets",
        json={"scope": "tenant:gamma", "unit": USD, "allocated": {"unit": USD, "amount": 100_000_000}},
    )
    assert budget.status_code == 201, budget.text
    ledger = budget.json()
    assert ledger["remaining"] == {"unit": USD, "amount": 100_000_000} and ledger["tenant_id"] == "gamma"
    duplicate = tenant_client.post(
        "/v1/admin/budgets", json={"scope": "tenant:gamma", "unit": USD, "allocated": {"unit": USD, "amount": 1}}
    )
    assert duplicate.status_code == 409
    by_admin = admin.post(
        "/v1/admin/budgets",
        json={
            "tenant_id": "gamma",
            "scope": "tenant:gamma/workspace:w",
            "unit": "TOKENS",
            "allocated": {"unit": "TOKENS", "amount": 5},
            "caps": {"max_tokens": 5},
        },
    )
    # caps are kept (they come back as ALLOW_WITH_CAPS) but BudgetLedger admits no extra fields.
    assert by_admin.status_code == 201 and "caps" not in by_admin.json()
    missing_tenant = admin.post(
        "/v1/admin/budgets", json={"scope": "tenant:gamma/app:x", "unit": USD, "allocated": {"unit": USD, "amount": 1}}
    )
    assert missing_tenant.status_code == 400

    reserve = tenant_client.post(
        "/v1/reservations",
        json={
            "idempotency_key": "g1",
            "subject": {"tenant": "gamma"},
            "action": {"kind": "k", "name": "n"},
            "estimate": {"unit": USD, "amount": 10},
        },
    )
    assert reserve.status_code == 200
    ledgers = admin.get("/v1/admin/budgets", params={"tenant_id": "gamma"}).json()["ledgers"]
    assert [(b["scope"], b["unit"]) for b in ledgers] == [("tenant:gamma", USD), ("tenant:gamma/workspace:w", "TOKENS")]
    assert tenant_client.get("/v1/admin/budgets", params={"unit": "TOKENS"}).json()["ledgers"][0]["unit"] == "TOKENS"
    looked = tenant_client.get("/v1/admin/budgets/lookup", params={"scope": "tenant:gamma", "unit": USD})
    assert looked.json()["reserved"]["amount"] == 10
    assert world.http.get("/v1/admin/budgets/lookup", params={"scope": "tenant:gamma", "unit": USD}).status_code == 404


def test_fund_freeze_unfreeze_over_http(world: World) -> None:
    admin, query = world.admin, {"scope": "tenant:acme", "unit": USD}
    missing_tenant = admin.post(
        "/v1/admin/budgets/fund", params=query, json={"operation": "CREDIT", "amount": {"unit": USD, "amount": 5}}
    )
    assert missing_tenant.status_code == 400
    body = {"operation": "CREDIT", "amount": {"unit": USD, "amount": 5}, "idempotency_key": "f1"}
    funded = admin.post("/v1/admin/budgets/fund", params={**query, "tenant_id": "acme"}, json=body)
    assert funded.status_code == 200
    assert funded.json()["previous_allocated"]["amount"] == 1_000_000
    assert funded.json()["new_allocated"]["amount"] == 1_000_005
    replay = world.http.post("/v1/admin/budgets/fund", params=query, json=body)  # dual auth, same key
    assert replay.json() == funded.json() and world.budget()["allocated"] == 1_000_005
    mismatch = world.http.post("/v1/admin/budgets/fund", params=query, json={**body, "reason": "x"})
    assert mismatch.status_code == 409 and error_of(mismatch) == "IDEMPOTENCY_MISMATCH"
    wrong_unit = world.http.post(
        "/v1/admin/budgets/fund", params=query, json={"operation": "CREDIT", "amount": {"unit": "TOKENS", "amount": 5}}
    )
    assert wrong_unit.status_code == 400 and error_of(wrong_unit) == "UNIT_MISMATCH"

    frozen = admin.post("/v1/admin/budgets/freeze", params=query)
    assert frozen.status_code == 200 and frozen.json()["status"] == "FROZEN"
    assert admin.post("/v1/admin/budgets/freeze", params=query, json={"reason": "again"}).status_code == 409
    blocked = world.http.post("/v1/admin/budgets/fund", params=query, json={**body, "idempotency_key": "f2"})
    assert blocked.status_code == 409 and error_of(blocked) == "BUDGET_FROZEN"
    assert world.http.post("/v1/admin/budgets/freeze", params=query).status_code == 401  # admin only
    assert admin.post("/v1/admin/budgets/unfreeze", params=query).json()["status"] == "ACTIVE"
    assert admin.post("/v1/admin/budgets/unfreeze", params=query).status_code == 409
    patched = admin.patch("/v1/admin/budgets", params=query, json={"overdraft_limit": {"unit": USD, "amount": 7}})
    assert patched.json()["overdraft_limit"]["amount"] == 7


def test_tenant_update_and_key_revocation_over_http(world: World) -> None:
    admin = world.admin
    patched = admin.patch("/v1/admin/tenants/acme", json={"max_reservation_extensions": 0})
    assert patched.status_code == 200 and patched.json()["max_reservation_extensions"] == 0
    assert error_of(world.extend(world.reserve_id(1))) == "MAX_EXTENSIONS_EXCEEDED"
    assert admin.patch("/v1/admin/tenants/acme", json={"max_reservation_extensions": -1}).status_code == 400
    assert admin.get("/v1/admin/tenants/nope").status_code == 404
    assert [t["tenant_id"] for t in admin.get("/v1/admin/tenants").json()["tenants"]] == ["acme", "beta"]
    key_id = admin.get("/v1/admin/api-keys", params={"tenant_id": "acme"}).json()["keys"][0]["key_id"]
    assert admin.delete(f"/v1/admin/api-keys/{key_id}").json()["status"] == "REVOKED"
    revoked = world.reserve(1)
    assert revoked.status_code == 401 and revoked.json()["message"] == "KEY_REVOKED"
    closed = admin.patch("/v1/admin/tenants/beta", json={"status": "CLOSED"})
    assert closed.json()["status"] == "CLOSED" and "closed_at" in closed.json()
    reopened = admin.patch("/v1/admin/tenants/beta", json={"status": "ACTIVE"})
    assert reopened.status_code == 409 and error_of(reopened) == "TENANT_CLOSED"
    assert admin.post("/v1/admin/api-keys", json={"tenant_id": "beta", "name": "x"}).status_code == 409


def test_admin_plane_requires_the_admin_key(world: World) -> None:
    assert world.anon.get("/v1/admin/tenants").status_code == 401
    assert world.http.get("/v1/admin/tenants").status_code == 401
    wrong = world.client()
    response = wrong.get("/v1/admin/tenants", headers={"X-Admin-API-Key": "wrong"})
    assert response.status_code == 401 and error_of(response) == "UNAUTHORIZED"
    assert world.admin.post("/v1/admin/tenants", json={"tenant_id": "x!", "name": "n"}).status_code == 400


# --- Python methods ----------------------------------------------------------------------------------


class Unit(str, enum.Enum):
    USD_MICROCENTS = "USD_MICROCENTS"
    TOKENS = "TOKENS"


@pytest.fixture
def local(clock: FakeClock) -> LocalCyclesServer:
    server = LocalCyclesServer(clock=clock)
    server.create_tenant("acme")
    return server


def test_funding_operations(local: LocalCyclesServer) -> None:
    local.create_budget("tenant:acme", Unit.USD_MICROCENTS, 1_000, overdraft_limit=500)
    assert local.fund_budget("tenant:acme", Unit.USD_MICROCENTS, "CREDIT", 500)["new_remaining"]["amount"] == 1_500
    assert local.fund_budget("tenant:acme", USD, "DEBIT", 200)["new_allocated"]["amount"] == 1_300
    with pytest.raises(LocalServerError) as info:
        local.fund_budget("tenant:acme", USD, "DEBIT", 2_000)
    assert (info.value.status, info.value.code) == (409, "BUDGET_EXCEEDED")
    assert local.fund_budget("tenant:acme", USD, "RESET", 800)["new_remaining"]["amount"] == 800
    result = local.fund_budget("tenant:acme", USD, "RESET_SPENT", 900, spent=100)
    assert (result["new_spent"]["amount"], result["new_remaining"]["amount"]) == (100, 800)
    budget = local.get_budget("tenant:acme", Unit.USD_MICROCENTS)
    assert budget["remaining"] == budget["allocated"] - budget["spent"] - budget["reserved"] - budget["debt"]
    assert local.fund_budget("tenant:acme", USD, "REPAY_DEBT", 50)["new_debt"]["amount"] == 0


def test_python_admin_errors_carry_status_and_code(local: LocalCyclesServer) -> None:
    with pytest.raises(LocalServerError) as info:
        local.create_budget("tenant:nobody", USD, 1)
    assert info.value.status == 400
    with pytest.raises(LocalServerError) as info:
        local.create_budget("tenant:acme/agent:a/workspace:w", USD, 1)  # out of canonical order
    assert info.value.code == "INVALID_REQUEST"
    with pytest.raises(LocalServerError) as info:
        local.get_budget("tenant:acme", USD)
    assert info.value.status == 404
    with pytest.raises(LocalServerError):
        local.create_tenant("acme", "a different name")
    with pytest.raises(LocalServerError):
        local.update_tenant("acme", status="GONE")
    local.create_budget("tenant:acme", USD, 1)
    local.freeze_budget("tenant:acme", USD)
    with pytest.raises(LocalServerError) as info:
        local.freeze_budget("tenant:acme", USD)
    assert (info.value.status, info.value.code) == (409, "BUDGET_FROZEN")


def test_api_keys_are_stored_hashed_and_expire(tmp_path: Path, clock: FakeClock) -> None:
    db = tmp_path / "cycles.db"
    server = LocalCyclesServer(str(db), admin_key=ADMIN_KEY, clock=clock)
    server.create_tenant("acme")
    secret = server.create_api_key("acme")
    server.create_budget("tenant:acme", USD, 10)
    import httpx

    with httpx.Client(
        transport=server.transport(), base_url="http://local", headers={"X-Cycles-API-Key": secret}
    ) as client:
        assert client.get("/v1/balances", params={"tenant": "acme"}).status_code == 200
        clock.advance(366 * 86_400_000)
        expired = client.get("/v1/balances", params={"tenant": "acme"})
        assert expired.status_code == 401 and expired.json()["message"] == "KEY_EXPIRED"
    server.close()
    raw = sqlite3.connect(db)
    dump = "\n".join(raw.iterdump())
    raw.close()
    assert secret not in dump and secret[14:] not in dump
