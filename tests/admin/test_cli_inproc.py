"""The operator CLI against an in-process embedded server: tables with dollars, ``--json`` parsed back,
options from flags or variables, exit codes (0 done, 1 refused with the server's message, 2 usage)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import ADMIN_KEY

from runcycles import cli
from runcycles._cli_ops import dispatch
from runcycles.local import LocalCyclesServer
from runcycles.models import Action, Amount, ReservationCreateRequest, Subject

ENV = {"CYCLES_BASE_URL": "http://cycles.local", "CYCLES_ADMIN_API_KEY": ADMIN_KEY}


class Cli:
    """Runs ``runcycles ...`` in process against one server."""

    def __init__(self, server: LocalCyclesServer, capsys: pytest.CaptureFixture[str]) -> None:
        self.server = server
        self.capsys = capsys
        self.env = dict(ENV)

    def __call__(self, *argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        args = cli._parser().parse_args(list(argv))
        code = dispatch(args, transport=self.server.transport(), environ=self.env if env is None else env)
        assert code is not None
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *argv: str) -> Any:
        code, out, err = self(*argv, "--json")
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def run(server: LocalCyclesServer, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(server, capsys)


def test_tenants_create_list_close(run: Cli) -> None:
    code, out, _ = run("tenants", "create", "acme", "--name", "Acme Corp", "--overage-policy", "reject",
                       "--max-extensions", "3", "--metadata", "team=ml")
    assert code == 0
    assert "tenant:          acme" in out and "REJECT" in out
    code, out, _ = run("tenants", "list")
    assert out.splitlines()[0].split() == ["TENANT", "NAME", "STATUS", "CREATED"]
    assert out.splitlines()[1].split()[:4] == ["acme", "Acme", "Corp", "ACTIVE"]
    rows = run.json("tenants", "list", "--status", "active")
    assert [(r["tenant_id"], r["metadata"], r["max_reservation_extensions"]) for r in rows] == [
        ("acme", {"team": "ml"}, 3)
    ]
    closed = run.json("tenants", "close", "acme")
    assert closed["status"] == "CLOSED"
    assert run.json("tenants", "list", "--status", "ACTIVE") == []
    assert run("tenants", "list", "--status", "active")[1] == "no tenants\n"


def test_keys_create_list_revoke(run: Cli, server: LocalCyclesServer) -> None:
    server.create_tenant("acme")
    code, out, _ = run("keys", "create", "--tenant", "acme", "--name", "bot", "--permission", "balances:read")
    assert code == 0
    secret = next(line.split()[1] for line in out.splitlines() if line.startswith("secret:"))
    assert secret.startswith("cyc_live_") and "shown only now" in out
    created = run.json("keys", "create", "--tenant", "acme", "--scope-filter", "workspace:eng")
    assert created["key_secret"].startswith(created["key_prefix"])
    keys = run.json("keys", "list", "--tenant", "acme")
    assert len(keys) == 2 and all("key_secret" not in k for k in keys)
    assert keys[0]["permissions"] == ["balances:read"]
    code, out, _ = run("keys", "revoke", created["key_id"], "--reason", "rotated")
    assert code == 0 and f"revoked {created['key_id']}" in out
    assert [k["key_id"] for k in run.json("keys", "list", "--status", "revoked")] == [created["key_id"]]
    code, _, err = run("keys", "revoke", created["key_id"])
    assert code == 1 and "API key is already revoked" in err and "KEY_REVOKED" in err
    code, _, err = run("keys", "create", "--tenant", "acme", "--permission", "root")
    assert code == 2 and "permissions[0] must be one of" in err


def test_budgets_in_units_and_dollars(run: Cli, server: LocalCyclesServer) -> None:
    server.create_tenant("acme")
    code, out, _ = run("budgets", "create", "tenant:acme", "$5")
    assert code == 0
    assert "allocated:        500,000,000 USD_MICROCENTS ($5.00)" in out
    code, out, _ = run("budgets", "fund", "tenant:acme", "credit", "$0.50", "--reason", "bonus")
    assert code == 0
    assert "allocated:  500,000,000 USD_MICROCENTS ($5.00) -> 550,000,000 USD_MICROCENTS ($5.50)" in out
    run("budgets", "create", "tenant:acme/workspace:eng", "5_000", "--unit", "tokens")
    code, out, _ = run("budgets", "list")
    header, usd, tokens = out.splitlines()
    assert header.split() == ["SCOPE", "UNIT", "STATUS", "ALLOCATED", "REMAINING", "RESERVED", "SPENT", "DEBT"]
    assert usd.split()[:5] == ["tenant:acme", "USD_MICROCENTS", "ACTIVE", "550,000,000", "($5.50)"]
    assert tokens.split()[:4] == ["tenant:acme/workspace:eng", "TOKENS", "ACTIVE", "5,000"]
    assert "$" not in tokens
    shown = run.json("budgets", "show", "tenant:acme/workspace:eng", "--unit", "TOKENS")
    assert shown["allocated"] == {"unit": "TOKENS", "amount": 5000}
    assert [b["scope"] for b in run.json("budgets", "list", "--unit", "TOKENS")] == ["tenant:acme/workspace:eng"]
    assert run.json("budgets", "list", "--has-debt", "true") == []
    assert len(run.json("budgets", "list", "--over-limit", "false", "--tenant", "acme")) == 2


def test_every_funding_operation_from_the_cli(run: Cli, server: LocalCyclesServer) -> None:
    server.create_tenant("acme")
    run("budgets", "create", "tenant:acme", "1000", "--unit", "CREDITS")
    steps = [
        (["credit", "500"], 1500),
        (["debit", "100"], 1400),
        (["reset", "900"], 900),
        (["reset-spent", "800", "--spent", "50"], 800),
        (["repay-debt", "1"], 800),
    ]
    for argv, allocated in steps:
        result = run.json("budgets", "fund", "tenant:acme", *argv, "--unit", "credits")
        assert result["new_allocated"]["amount"] == allocated, argv
    assert server.get_budget("tenant:acme", "CREDITS")["spent"] == 50
    first = run.json("budgets", "fund", "tenant:acme", "credit", "10", "--unit", "CREDITS", "--idempotency-key", "k1")
    again = run.json("budgets", "fund", "tenant:acme", "credit", "10", "--unit", "CREDITS", "--idempotency-key", "k1")
    assert first == again and server.get_budget("tenant:acme", "CREDITS")["allocated"] == 810


def test_freeze_unfreeze_and_refusals(run: Cli, server: LocalCyclesServer) -> None:
    server.create_tenant("acme")
    server.create_budget("tenant:acme", "USD_MICROCENTS", 100)
    code, out, _ = run("budgets", "freeze", "tenant:acme", "--reason", "incident")
    assert code == 0 and out.startswith("froze budget tenant:acme") and "FROZEN" in out
    code, _, err = run("budgets", "fund", "tenant:acme", "credit", "1")
    assert code == 1 and "Budget is FROZEN" in err and "[BUDGET_FROZEN, HTTP 409]" in err
    code, _, err = run("budgets", "freeze", "tenant:acme", "--json")
    assert code == 1
    assert json.loads(err) == {
        "error": "BUDGET_FROZEN",
        "message": "Budget is already FROZEN",
        "status": 409,
        "request_id": json.loads(err)["request_id"],
    }
    assert run.json("budgets", "unfreeze", "tenant:acme")["status"] == "ACTIVE"
    code, _, err = run("budgets", "show", "tenant:nobody")
    assert code == 1 and "Budget not found" in err


def test_usage_errors_exit_2(run: Cli, server: LocalCyclesServer) -> None:
    code, _, err = run("tenants", "list", env={"CYCLES_BASE_URL": "http://cycles.local"})
    assert code == 2 and "--admin-key or CYCLES_ADMIN_API_KEY is required" in err
    code, _, err = run("tenants", "list", env={"CYCLES_ADMIN_API_KEY": ADMIN_KEY})
    assert code == 2 and "--base-url or CYCLES_BASE_URL is required" in err
    assert run("tenants", "list", "--base-url", "http://cycles.local", env={"CYCLES_ADMIN_API_KEY": ADMIN_KEY})[0] == 0
    code, _, err = run("budgets", "create", "tenant:acme", "1.5")
    assert code == 2 and "amount must be a non-negative integer in USD_MICROCENTS or dollars like $1.50" in err
    code, _, err = run("tenants", "create", "Not Valid")
    assert code == 2 and "tenant_id must be 3 to 64 characters" in err
    code, _, err = run("tenants", "create", "acme", "--metadata", "novalue")
    assert code == 2 and "KEY=VALUE" in err
    with pytest.raises(SystemExit) as parse_error:
        cli._parser().parse_args(["budgets", "fund", "tenant:acme", "refund", "1"])
    assert parse_error.value.code == 2


def test_bad_admin_key_is_refused_with_the_servers_message(run: Cli) -> None:
    code, out, err = run("tenants", "list", "--admin-key", "wrong")
    assert (code, out) == (1, "")
    assert "Invalid admin API key" in err and "UNAUTHORIZED" in err and "401" in err


def _reserve(server: LocalCyclesServer, key: str, amount: int) -> str:
    from runcycles import CyclesClient, CyclesConfig

    config = CyclesConfig("http://cycles.local", key, journal_enabled=False)
    request = ReservationCreateRequest(
        idempotency_key=f"r-{amount}",
        subject=Subject(tenant="acme", agent="bot"),
        action=Action(kind="llm.completion", name="gpt-4o"),
        estimate=Amount(unit="USD_MICROCENTS", amount=amount),
    )
    with CyclesClient(config, transport=server.transport()) as client:
        response = client.create_reservation(request)
    assert response.status == 200, response.body
    return str(response.body["reservation_id"])


def test_balances_and_reservations_with_the_tenant_key(run: Cli, server: LocalCyclesServer) -> None:
    server.create_tenant("acme")
    server.create_budget("tenant:acme", "USD_MICROCENTS", 100_000_000)
    server.create_budget("tenant:acme/agent:bot", "USD_MICROCENTS", 10_000_000)
    key = server.create_api_key("acme")
    run.env = {"CYCLES_BASE_URL": "http://cycles.local", "CYCLES_API_KEY": key}
    rid = _reserve(server, key, 2_500_000)

    code, out, _ = run("balances")  # the tenant comes from the key (X-Cycles-Tenant)
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["SCOPE", "UNIT", "ALLOCATED", "REMAINING", "RESERVED", "SPENT", "DEBT"]
    assert rows[0].split()[:7] == ["tenant:acme", "USD_MICROCENTS", "100,000,000", "($1.00)", "97,500,000", "($0.975)",
                                   "2,500,000"]
    scoped = run.json("balances", "--scope", "tenant:acme/agent:bot")
    assert [b["scope_path"] for b in scoped] == ["tenant:acme/agent:bot"]
    assert scoped[0]["reserved"]["amount"] == 2_500_000
    everything = run.json("balances", "--tenant", "acme")
    assert [b["scope_path"] for b in everything] == ["tenant:acme", "tenant:acme/agent:bot"]
    code, _, err = run("balances", "--scope", "galaxy:far")
    assert code == 2 and "--scope segments must be level:value" in err

    code, out, _ = run("reservations", "list")
    assert rid in out and "ACTIVE" in out and "2,500,000 USD_MICROCENTS ($0.025)" in out
    shown = run.json("reservations", "show", rid)
    assert (shown["status"], shown["reserved"]["amount"]) == ("ACTIVE", 2_500_000)
    code, out, _ = run("reservations", "show", rid)
    assert "action:           llm.completion/gpt-4o" in out
    code, out, _ = run("reservations", "release", rid, "--reason", "stuck job")
    assert code == 0 and f"released {rid}: 2,500,000 USD_MICROCENTS ($0.025) back" in out
    assert [r["reservation_id"] for r in run.json("reservations", "list", "--status", "released")] == [rid]
    code, _, err = run("reservations", "release", rid)
    assert code == 1 and "RESERVATION_FINALIZED" in err
    code, _, err = run("reservations", "show", "no-such-reservation")
    assert code == 1 and "404" in err
    code, _, err = run("balances", env={"CYCLES_BASE_URL": "http://cycles.local"})
    assert code == 2 and "--api-key or CYCLES_API_KEY is required" in err
