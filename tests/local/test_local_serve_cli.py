"""``runcycles serve`` as users run it: a real subprocess, its banner, its exit codes, real HTTP."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from runcycles import cli
from runcycles.local import LocalCyclesServer

USD = "USD_MICROCENTS"
pytestmark = pytest.mark.timeout(60)


class Served:
    """A running ``runcycles serve`` and what its banner said."""

    def __init__(self, process: subprocess.Popen[str], banner: list[str]) -> None:
        self.process = process
        self.banner = banner
        self.url = banner[0].split(" on ", 1)[1].split()[0]
        self.admin_key = self.field("X-Admin-API-Key): ")
        self.api_key = self.field("X-Cycles-API-Key): ")

    def field(self, marker: str) -> str:
        return next(line.split(marker, 1)[1].split()[0] for line in self.banner if marker in line)

    def stop(self) -> int:
        self.process.terminate()  # SIGTERM: uvicorn shuts down gracefully, the command exits 0
        out, err = self.process.communicate(timeout=20)
        assert "Traceback" not in err, err
        return self.process.returncode


def serve(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "runcycles", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def started(*args: str) -> Served:
    """Start the command and read its banner (it ends with the health line); the port is bound by then."""
    process = serve("--port", "0", *args)
    assert process.stdout is not None
    banner: list[str] = []
    while not banner or not banner[-1].lstrip().startswith("health:"):
        line = process.stdout.readline()
        if not line:
            process.kill()
            pytest.fail(f"runcycles serve exited before its banner: {process.communicate()[1]}")
        banner.append(line.rstrip("\n"))
    return Served(process, banner)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        yield holder.getsockname()[1]


def test_banner_comes_after_the_bind_and_everything_it_prints_works(tmp_path: Path) -> None:
    served = started("--db", str(tmp_path / "c.db"), "--tenant", "acme", "--budget", "42", "--admin-key", "adm")
    try:
        export = next(line for line in served.banner if "export " in line).split("export ", 1)[1].split()
        env = dict(item.split("=", 1) for item in export)
        assert env == {"CYCLES_BASE_URL": served.url, "CYCLES_API_KEY": served.api_key, "CYCLES_TENANT": "acme"}
        assert served.admin_key == "adm"
        # The banner is printed only once the port is bound: the very first request is answered.
        with httpx.Client(base_url=served.url, timeout=10) as http:
            balance = http.get(
                "/v1/balances", params={"tenant": "acme"}, headers={"X-Cycles-API-Key": served.api_key}
            )
            assert balance.json()["balances"][0]["allocated"]["amount"] == 42
            for path in ("/actuator/health", "/actuator/health/liveness", "/actuator/health/readiness"):
                probe = http.get(path)  # no credentials
                assert (probe.status_code, probe.json()) == (200, {"status": "UP"}), path
            families = {f.name: f for f in text_string_to_metric_families(http.get("/metrics").text)}
        remaining = [s for s in families["cycles_budget_remaining"].samples if s.labels["scope"] == "tenant:acme"]
        assert [(s.labels["tenant"], s.labels["unit"], s.value) for s in remaining] == [("acme", USD, 42)]
        served_requests = {
            (s.labels["route"], s.labels["status"]): s.value
            for s in families["cycles_http_requests"].samples
            if s.name == "cycles_http_requests_total"
        }
        assert served_requests[("/v1/balances", "200")] == 1
        assert served_requests[("/actuator/health/readiness", "200")] == 1
    finally:
        assert served.stop() == 0


def test_busy_port_is_one_line_on_stderr_exit_3_and_no_banner(tmp_path: Path, busy_port: int) -> None:
    db = tmp_path / "never.db"
    process = serve("--port", str(busy_port), "--db", str(db), "--tenant", "acme", "--budget", "5")
    out, err = process.communicate(timeout=30)
    assert process.returncode == cli.EXIT_CANNOT_LISTEN == 3
    assert out == ""  # no banner, no admin key, no API key
    [line] = err.strip().splitlines()
    assert line.startswith(f"runcycles serve: cannot listen on 127.0.0.1:{busy_port}: ") and "in use" in line
    assert not db.exists()  # nothing was seeded either


def test_budget_differing_from_the_database_is_refused_then_applied_with_reset(tmp_path: Path) -> None:
    db = str(tmp_path / "b.db")
    with LocalCyclesServer(db) as seeded:
        seeded.create_tenant("acme")
        seeded.create_budget("tenant:acme", USD, 500)
    refused = serve("--port", "0", "--db", db, "--tenant", "acme", "--budget", "600")
    out, err = refused.communicate(timeout=30)
    assert refused.returncode == cli.EXIT_USAGE == 2
    assert out == ""
    assert "--budget 600 differs" in err and "allocated 500" in err and "--reset-budget" in err
    with LocalCyclesServer(db) as check:
        assert check.get_budget("tenant:acme", USD)["allocated"] == 500
        _status, _headers, body = check.handle(
            "GET", "/v1/admin/api-keys", "tenant_id=acme", {"x-admin-api-key": check.admin_key}, b""
        )
        assert json.loads(body)["keys"] == []  # no API key was handed out either

    same = started("--db", db, "--tenant", "acme", "--budget", "500")  # the same amount is fine, nothing to say
    assert not any("reset" in line for line in same.banner)
    assert same.stop() == 0

    reset = started("--db", db, "--tenant", "acme", "--budget", "600", "--reset-budget")
    try:
        assert "  budget tenant:acme reset: allocated 500 -> 600 USD_MICROCENTS" in reset.banner
        balance = httpx.get(
            f"{reset.url}/v1/balances", params={"tenant": "acme"}, headers={"X-Cycles-API-Key": reset.api_key}
        )
        assert balance.json()["balances"][0]["allocated"]["amount"] == 600
    finally:
        assert reset.stop() == 0


def test_every_serve_option_has_help_text() -> None:
    parser = cli._parser()
    serve_parser = next(
        action for action in parser._actions if action.dest == "command"
    ).choices["serve"]  # type: ignore[union-attr, index]
    options = [action for action in serve_parser._actions if action.option_strings]
    assert len(options) >= 9
    for action in options:
        assert action.help and action.help.strip(), action.option_strings
    assert "exit codes" in (serve_parser.epilog or "")


def test_unusable_database_exits_1_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing_dir = tmp_path / "no" / "such" / "dir" / "c.db"
    assert cli.main(["serve", "--port", "0", "--db", str(missing_dir)]) == cli.EXIT_BAD_DATABASE == 1
    captured = capsys.readouterr()
    assert captured.out == "" and f"database {missing_dir} cannot be used" in captured.err
