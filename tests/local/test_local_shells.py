"""The thin shells around the core: async transport (asyncio and trio), ASGI lifespan, the CLI, imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from runcycles import cli
from runcycles.local import LocalCyclesServer

USD = "USD_MICROCENTS"


def seeded(path: str | None) -> tuple[LocalCyclesServer, str]:
    server = LocalCyclesServer(path)
    server.create_tenant("acme")
    server.create_budget("tenant:acme", USD, 1_000)
    return server, server.create_api_key("acme")


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["memory", "file"])
async def test_async_transport_round_trip(tmp_path: Path, kind: str) -> None:
    server, key = seeded(None if kind == "memory" else str(tmp_path / "a.db"))
    async with httpx.AsyncClient(
        transport=server.async_transport(), base_url="http://local", headers={"X-Cycles-API-Key": key}
    ) as client:
        created = await client.post(
            "/v1/reservations",
            json={
                "idempotency_key": "a1",
                "subject": {"tenant": "acme"},
                "action": {"kind": "k", "name": "n"},
                "estimate": {"unit": USD, "amount": 10},
            },
        )
        assert created.status_code == 200
        rid = created.json()["reservation_id"]
        committed = await client.post(
            f"/v1/reservations/{rid}/commit", json={"idempotency_key": "c1", "actual": {"unit": USD, "amount": 7}}
        )
        assert committed.json()["charged"]["amount"] == 7
        assert committed.headers["x-cycles-tenant"] == "acme"
    assert server.get_budget("tenant:acme", USD)["spent"] == 7
    server.close()


@pytest.mark.anyio
async def test_asgi_app_acknowledges_lifespan_and_serves_http() -> None:
    server, key = seeded(None)
    sent: list[dict[str, Any]] = []
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await server.asgi_app({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    sent.clear()
    inbox[:] = [{"type": "http.request", "body": b"", "more_body": False}]
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/v1/balances",
        "raw_path": b"/v1/balances",
        "query_string": b"tenant=acme",
        "headers": [(b"x-cycles-api-key", key.encode())],
    }
    await server.asgi_app(scope, receive, send)
    assert sent[0]["status"] == 200
    assert json.loads(sent[1]["body"])["balances"][0]["allocated"]["amount"] == 1_000
    server.close()


def test_internal_errors_are_500_with_an_error_body(monkeypatch: pytest.MonkeyPatch) -> None:
    server, key = seeded(None)
    from runcycles.local import _runtime_reads as _runtime

    def boom(*_args: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(_runtime.db, "tenant_budgets", boom)
    status, headers, body = server.handle("GET", "/v1/balances", "tenant=acme", {"X-Cycles-API-Key": key}, b"")
    data = json.loads(body)
    assert status == 500 and data["error"] == "INTERNAL_ERROR" and "disk" not in data["message"]
    assert dict(headers)["x-request-id"] == data["request_id"]
    server.close()


def test_handle_is_a_pure_sync_core() -> None:
    server, key = seeded(None)
    status, headers, body = server.handle("GET", "/v1/balances?tenant=acme", "", [("X-Cycles-API-Key", key)], b"")
    assert status == 200 and dict(headers)["x-cycles-tenant"] == "acme"
    server.close()


def test_cli_seed_is_idempotent_for_tenant_and_budget() -> None:
    server = LocalCyclesServer()
    first = cli.seed(server, "acme", 500, USD)
    second = cli.seed(server, "acme", 500, USD)
    assert first.api_key and second.api_key and first.api_key != second.api_key
    assert first.note is None and second.note is None
    assert server.get_budget("tenant:acme", USD)["allocated"] == 500
    assert cli.seed(server, None, None, USD).api_key is None
    server.close()


def test_cli_seed_reports_or_resets_a_different_budget() -> None:
    server = LocalCyclesServer()
    cli.seed(server, "acme", 500, USD)
    with pytest.raises(cli.BudgetMismatchError, match=r"--budget 600 .* allocated 500 .*--reset-budget"):
        cli.seed(server, "acme", 600, USD)
    assert server.get_budget("tenant:acme", USD)["allocated"] == 500
    reset = cli.seed(server, "acme", 600, USD, reset_budget=True)
    assert reset.note == "budget tenant:acme reset: allocated 500 -> 600 USD_MICROCENTS"
    assert server.get_budget("tenant:acme", USD)["allocated"] == 600
    assert cli.seed(server, "acme", None, USD).note is None  # no --budget: whatever is there is kept
    server.close()


def test_cli_reports_missing_uvicorn(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    assert cli.main(["serve"]) == 2
    assert "runcycles[server]" in capsys.readouterr().err


def test_cli_budget_needs_tenant(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["serve", "--budget", "5"]) == 2
    assert cli.main(["serve", "--tenant", "acme", "--reset-budget"]) == 2
    assert "--reset-budget needs --budget" in capsys.readouterr().err


def test_importing_runcycles_does_not_load_the_server_or_uvicorn() -> None:
    code = (
        "import sys, runcycles; "
        "print(sorted(m for m in sys.modules if m == 'uvicorn' or m.startswith('runcycles.local')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_python_m_runcycles_serve_help() -> None:
    result = subprocess.run([sys.executable, "-m", "runcycles", "serve", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--admin-key" in result.stdout
