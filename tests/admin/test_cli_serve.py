"""The `runcycles` command as an operator runs it: a subprocess talking over real HTTP to a `runcycles serve`
subprocess, with ``--json`` output parsed back and the documented exit codes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from typing import Any

from conftest import ROOT, Served


def _runcycles(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CYCLES_")}
    return subprocess.run(
        [sys.executable, "-m", "runcycles", *argv],
        cwd=ROOT,
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _json(*argv: str, env: dict[str, str]) -> Any:
    done = _runcycles(*argv, "--json", env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_operator_flow_over_http(served: Served, tenant_id: str) -> None:
    admin = {"CYCLES_BASE_URL": served.base_url, "CYCLES_ADMIN_API_KEY": served.admin_key}
    assert _json("tenants", "create", tenant_id, "--name", "Ops Test", env=admin)["status"] == "ACTIVE"
    key = _json("keys", "create", "--tenant", tenant_id, "--name", "agents", env=admin)
    assert key["key_secret"].startswith("cyc_live_")
    scope = f"tenant:{tenant_id}"
    ledger = _json("budgets", "create", scope, "$1", env=admin)
    assert ledger["allocated"] == {"unit": "USD_MICROCENTS", "amount": 100_000_000}
    funded = _json("budgets", "fund", scope, "credit", "50_000_000", env=admin)
    assert (funded["previous_allocated"]["amount"], funded["new_allocated"]["amount"]) == (100_000_000, 150_000_000)
    assert tenant_id in {t["tenant_id"] for t in _json("tenants", "list", env=admin)}
    assert [k["key_id"] for k in _json("keys", "list", "--tenant", tenant_id, env=admin)] == [key["key_id"]]

    table = _runcycles("budgets", "show", scope, env=admin)
    assert table.returncode == 0
    assert "allocated:        150,000,000 USD_MICROCENTS ($1.50)" in table.stdout

    runtime = {"CYCLES_BASE_URL": served.base_url}
    balances = _json("balances", "--api-key", key["key_secret"], env=runtime)
    assert [(b["scope_path"], b["remaining"]["amount"]) for b in balances] == [(scope, 150_000_000)]
    assert _json("reservations", "list", "--api-key", key["key_secret"], env=runtime) == []

    frozen = _runcycles("budgets", "freeze", scope, env=admin)
    assert frozen.returncode == 0 and "FROZEN" in frozen.stdout
    refused = _runcycles("budgets", "fund", scope, "credit", "1", env=admin)
    assert refused.returncode == 1 and "Budget is FROZEN" in refused.stderr
    assert _json("tenants", "close", tenant_id, env=admin)["status"] == "CLOSED"


def test_bad_admin_key_exits_1_with_the_servers_message(served: Served) -> None:
    done = _runcycles("tenants", "list", env={"CYCLES_BASE_URL": served.base_url, "CYCLES_ADMIN_API_KEY": "wrong"})
    assert done.returncode == 1
    assert done.stdout == ""
    assert "Invalid admin API key" in done.stderr and "UNAUTHORIZED" in done.stderr
    as_json = _runcycles("budgets", "list", "--json", "--admin-key", "wrong", "--base-url", served.base_url, env={})
    assert as_json.returncode == 1
    assert json.loads(as_json.stderr)["message"] == "Invalid admin API key"


def test_usage_errors_exit_2(served: Served) -> None:
    admin = {"CYCLES_BASE_URL": served.base_url, "CYCLES_ADMIN_API_KEY": served.admin_key}
    bad_amount = _runcycles("budgets", "create", "tenant:acme", "ten dollars", env=admin)
    assert bad_amount.returncode == 2 and "amount must be a non-negative integer" in bad_amount.stderr
    unknown = _runcycles("tenants", "delete", "acme", env=admin)
    assert unknown.returncode == 2 and "invalid choice" in unknown.stderr
    no_key = _runcycles("keys", "list", env={"CYCLES_BASE_URL": served.base_url})
    assert no_key.returncode == 2 and "--admin-key or CYCLES_ADMIN_API_KEY is required" in no_key.stderr


def test_unreachable_server_exits_3() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    nowhere = {"CYCLES_BASE_URL": f"http://127.0.0.1:{port}", "CYCLES_ADMIN_API_KEY": "k"}
    done = _runcycles("tenants", "list", env=nowhere)
    assert done.returncode == 3
    assert "no usable answer from the server" in done.stderr
