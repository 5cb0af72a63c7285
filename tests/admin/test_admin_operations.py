"""The admin operations without I/O: requests built from arguments (checked, naming the field), answers read
leniently but strictly typed, refusals mapped to typed errors; configuration; CLI amount formatting."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from runcycles._cli_format import amount_text, dollars, parse_amount
from runcycles._protocol.requests import parse_response, transport_failure
from runcycles.admin import (
    AdminAuthError,
    AdminBudgetExceededError,
    AdminConfig,
    AdminConflictError,
    AdminInvalidRequestError,
    AdminNotFoundError,
    AdminTenantClosedError,
    BudgetStatus,
    CyclesAdminError,
    FundingOperation,
    Page,
    Permission,
    Tenant,
    TenantStatus,
    as_dict,
)
from runcycles.admin import _budget_ops as budget_ops
from runcycles.admin import _operations as ops
from runcycles.errors import BudgetExceededError, CyclesTransportError, ResponseFormatError, TenantClosedError
from runcycles.models import Amount

TENANT = {"tenant_id": "acme", "name": "Acme", "status": "ACTIVE", "created_at": "2026-01-01T00:00:00Z"}


def _answer(status: int, body: Any) -> Any:
    return parse_response(status, httpx.Headers({"x-request-id": "req-1"}), json.dumps(body).encode())


def test_create_tenant_builds_the_spec_body_and_checks_the_id() -> None:
    call = ops.create_tenant("acme", default_commit_overage_policy="reject", max_reservation_extensions=3)
    assert (call.method, call.path) == ("POST", "/v1/admin/tenants")
    assert call.body == {
        "tenant_id": "acme",
        "name": "acme",
        "default_commit_overage_policy": "REJECT",
        "max_reservation_extensions": 3,
    }
    assert json.loads(call.content or b"") == call.body
    assert call.headers == {"Content-Type": "application/json"}
    with pytest.raises(ValueError, match="tenant_id"):
        ops.create_tenant("Acme Corp")
    with pytest.raises(ValueError, match="default_reservation_ttl_ms"):
        ops.create_tenant("acme", default_reservation_ttl_ms=10)
    with pytest.raises(TypeError, match=r"metadata\['team'\]"):
        ops.create_tenant("acme", metadata={"team": 1})


def test_paths_quote_identifiers() -> None:
    assert ops.get_tenant("a/b").path == "/v1/admin/tenants/a%2Fb"
    assert ops.revoke_api_key("key_1", reason="leaked").params == (("reason", "leaked"),)
    with pytest.raises(ValueError, match="key_id"):
        ops.revoke_api_key("  ")


def test_budget_calls_derive_the_tenant_and_check_amounts() -> None:
    limit = Amount(unit="USD_MICROCENTS", amount=2)
    call = budget_ops.create_budget("tenant:acme/workspace:eng", "usd_microcents", 5, overdraft_limit=limit)
    assert call.body == {
        "tenant_id": "acme",
        "scope": "tenant:acme/workspace:eng",
        "unit": "USD_MICROCENTS",
        "allocated": {"unit": "USD_MICROCENTS", "amount": 5},
        "overdraft_limit": {"unit": "USD_MICROCENTS", "amount": 2},
    }
    with pytest.raises(ValueError, match="tenant_id is required"):
        budget_ops.create_budget("workspace:eng", "TOKENS", 5)
    with pytest.raises(ValueError, match="allocated must be between"):
        budget_ops.create_budget("tenant:acme", "TOKENS", -1)
    with pytest.raises(TypeError, match="allocated must be an int"):
        budget_ops.create_budget("tenant:acme", "TOKENS", 1.5)
    with pytest.raises(TypeError, match="allocated must be an int"):
        budget_ops.create_budget("tenant:acme", "TOKENS", True)
    with pytest.raises(ValueError, match="allocated.unit must be TOKENS"):
        budget_ops.create_budget("tenant:acme", "TOKENS", Amount(unit="CREDITS", amount=1))
    with pytest.raises(ValueError, match="unit must be one of"):
        budget_ops.get_budget("tenant:acme", "EUROS")
    assert budget_ops.get_budget("tenant:acme", "TOKENS").params == (("scope", "tenant:acme"), ("unit", "TOKENS"))


@pytest.mark.parametrize("operation", [*FundingOperation, "credit", "reset-spent", "Repay_Debt"])
def test_fund_accepts_every_spec_operation(operation: Any) -> None:
    call = budget_ops.fund_budget("tenant:acme", "TOKENS", operation, 7)
    assert call.body is not None
    assert call.body["operation"] in {op.value for op in FundingOperation}
    assert call.body["amount"] == {"unit": "TOKENS", "amount": 7}
    assert ("tenant_id", "acme") in call.params


def test_fund_idempotency_key_is_generated_unless_given_and_spent_only_for_reset_spent() -> None:
    first = budget_ops.fund_budget("tenant:acme", "TOKENS", "CREDIT", 1).body
    second = budget_ops.fund_budget("tenant:acme", "TOKENS", "CREDIT", 1).body
    assert first is not None and second is not None
    assert first["idempotency_key"] != second["idempotency_key"]
    mine = budget_ops.fund_budget("tenant:acme", "TOKENS", "CREDIT", 1, idempotency_key="once").body
    assert mine is not None and mine["idempotency_key"] == "once"
    reset = budget_ops.fund_budget("tenant:acme", "TOKENS", "RESET_SPENT", 10, spent=3).body
    assert reset is not None and reset["spent"] == {"unit": "TOKENS", "amount": 3}
    with pytest.raises(ValueError, match="spent is only allowed with RESET_SPENT"):
        budget_ops.fund_budget("tenant:acme", "TOKENS", "CREDIT", 10, spent=3)
    with pytest.raises(ValueError, match="operation must be one of"):
        budget_ops.fund_budget("tenant:acme", "TOKENS", "REFUND", 10)


def test_permissions_must_be_spec_names() -> None:
    body = ops.create_api_key("acme", "bot", permissions=[Permission.BALANCES_READ, "reservations:create"]).body
    assert body is not None and body["permissions"] == ["balances:read", "reservations:create"]
    with pytest.raises(ValueError, match=r"permissions\[1\] must be one of"):
        ops.create_api_key("acme", "bot", permissions=["balances:read", "everything"])
    with pytest.raises(TypeError, match="permissions must be a list"):
        ops.create_api_key("acme", "bot", permissions="balances:read")  # type: ignore[arg-type]


def test_updates_need_a_field_and_list_filters_are_checked() -> None:
    for build in (
        lambda: ops.update_tenant("acme"),
        lambda: ops.update_api_key("key_1"),
        lambda: budget_ops.update_budget("tenant:acme", "TOKENS"),
    ):
        with pytest.raises(ValueError, match="at least one field"):
            build()
    call = budget_ops.list_budgets(tenant_id="acme", status=BudgetStatus.FROZEN, over_limit=True, limit=5)
    assert call.params == (("tenant_id", "acme"), ("status", "FROZEN"), ("over_limit", "true"), ("limit", "5"))
    with pytest.raises(ValueError, match="limit must be between"):
        ops.list_tenants(limit=0)
    with pytest.raises(ValueError, match="utilization_min must not be greater"):
        budget_ops.list_budgets(utilization_min=0.9, utilization_max=0.1)
    with pytest.raises(ValueError, match="status must be one of"):
        ops.list_tenants(status="GONE")


def test_reader_keeps_unknown_fields_and_enum_values() -> None:
    tenant = ops.get_tenant("acme").result(_answer(200, {**TENANT, "status": "ARCHIVED", "tier": "gold"}))
    assert isinstance(tenant, Tenant)
    assert tenant.status == "ARCHIVED"
    assert tenant.extra == {"tier": "gold"}
    assert as_dict(tenant)["tier"] == "gold"
    assert ops.get_tenant("acme").result(_answer(200, TENANT)).status is TenantStatus.ACTIVE


def test_malformed_success_answers_are_format_errors_never_successes() -> None:
    call = ops.get_tenant("acme")
    with pytest.raises(ResponseFormatError, match="Tenant.created_at is required"):
        call.result(_answer(200, {k: v for k, v in TENANT.items() if k != "created_at"}))
    with pytest.raises(ResponseFormatError, match="max_reservation_extensions must be an integer"):
        call.result(_answer(200, {**TENANT, "max_reservation_extensions": "10"}))
    with pytest.raises(ResponseFormatError, match="no JSON body"):
        call.result(parse_response(200, httpx.Headers(), b"<html>"))
    with pytest.raises(ResponseFormatError, match="BudgetLedger.unit is required"):
        budget_ops.get_budget("tenant:acme", "TOKENS").result(_answer(200, {"ledger_id": "l", "scope": "tenant:acme"}))


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "INVALID_REQUEST", AdminInvalidRequestError),
        (401, "UNAUTHORIZED", AdminAuthError),
        (403, "INSUFFICIENT_PERMISSIONS", AdminAuthError),
        (404, "TENANT_NOT_FOUND", AdminNotFoundError),
        (409, "DUPLICATE_RESOURCE", AdminConflictError),
        (409, "TENANT_CLOSED", AdminTenantClosedError),
        (409, "BUDGET_EXCEEDED", AdminBudgetExceededError),
        (500, "INTERNAL_ERROR", CyclesAdminError),
    ],
)
def test_refusals_are_typed(status: int, code: str, cls: type[CyclesAdminError]) -> None:
    body = {"error": code, "message": f"the server says {code}", "request_id": "req-9"}
    with pytest.raises(cls) as caught:
        ops.get_tenant("acme").result(_answer(status, body))
    error = caught.value
    assert type(error) is cls
    assert (error.status, error.code, error.server_message) == (status, code, f"the server says {code}")
    assert error.request_id == "req-9"  # the body's request_id first, then the X-Request-Id header (API.md §3)
    assert error.is_retryable() is (status >= 500)
    assert isinstance(error, TenantClosedError) is (code == "TENANT_CLOSED")
    assert isinstance(error, BudgetExceededError) is (code == "BUDGET_EXCEEDED")


def test_no_answer_is_a_transport_error() -> None:
    with pytest.raises(CyclesTransportError, match="get_tenant failed: ConnectError"):
        ops.get_tenant("acme").result(transport_failure(httpx.ConnectError("refused")))


def test_next_cursor_follows_the_spec_and_stops_on_a_repeat() -> None:
    assert ops.next_cursor(Page(items=(), next_cursor="c2", has_more=True), "c1") == "c2"
    assert ops.next_cursor(Page(items=(), next_cursor="c2", has_more=False), "c1") is None
    assert ops.next_cursor(Page(items=(), next_cursor="c1", has_more=True), "c1") is None
    assert ops.next_cursor(Page(items=(), next_cursor=None, has_more=True), None) is None
    read = ops.list_tenants().result
    page = read(_answer(200, {"tenants": [TENANT], "next_cursor": "abc"}))  # has_more absent: a cursor means more
    assert page.has_more and page.next_cursor == "abc" and page.items[0].tenant_id == "acme"
    assert ops.list_tenants(limit=10).with_cursor("abc").params == (("limit", "10"), ("cursor", "abc"))


def test_config_from_arguments_or_environment() -> None:
    env = {"CYCLES_BASE_URL": "http://admin:7979", "CYCLES_ADMIN_API_KEY": "s3cret"}
    config = AdminConfig.from_env(environ=env)
    assert (config.base_url, config.admin_key) == ("http://admin:7979", "s3cret")
    assert "s3cret" not in repr(config)
    assert AdminConfig.from_env("http://other", environ=env).base_url == "http://other"
    with pytest.raises(ValueError, match="CYCLES_ADMIN_API_KEY"):
        AdminConfig.from_env(environ={"CYCLES_BASE_URL": "http://admin"})
    with pytest.raises(ValueError, match="base_url must be an http"):
        AdminConfig("ftp://x", "k")


def test_secret_is_not_in_the_repr_of_a_created_key() -> None:
    body = {
        "key_id": "key_1",
        "key_secret": "cyc_live_secret",
        "key_prefix": "cyc_live_sec",
        "tenant_id": "acme",
        "created_at": "2026-01-01T00:00:00Z",
        "expires_at": "2027-01-01T00:00:00Z",
    }
    created = ops.create_api_key("acme", "bot").result(_answer(201, body))
    assert created.key_secret == "cyc_live_secret"
    assert "cyc_live_secret" not in repr(created)


@pytest.mark.parametrize(
    ("microcents", "text"),
    [(100_000_000, "$1.00"), (150_000_000, "$1.50"), (150, "$0.0000015"), (-50_000_000, "-$0.50"), (0, "$0.00"),
     (123_456_700_000_000, "$1,234,567.00")],
)
def test_dollars(microcents: int, text: str) -> None:
    assert dollars(microcents) == text


def test_amount_text_and_parsing() -> None:
    assert amount_text(100_000_000, "USD_MICROCENTS") == "100,000,000 USD_MICROCENTS ($1.00)"
    assert amount_text(5000, "TOKENS") == "5,000 TOKENS"
    assert amount_text(None, "TOKENS") == "-"
    assert parse_amount("$1.50", "USD_MICROCENTS") == 150_000_000
    assert parse_amount("1_000", "TOKENS") == 1000
    assert parse_amount("1,000", "TOKENS") == 1000
    with pytest.raises(ValueError, match="needs --unit USD_MICROCENTS"):
        parse_amount("$1", "TOKENS")
    with pytest.raises(ValueError, match="whole, non-negative number of microcents"):
        parse_amount("$0.000000001", "USD_MICROCENTS")
    with pytest.raises(ValueError, match="amount must be a non-negative integer in TOKENS"):
        parse_amount("1.5", "TOKENS")
    with pytest.raises(ValueError, match="--spent must be a non-negative integer"):
        parse_amount("-3", "TOKENS", "--spent")
