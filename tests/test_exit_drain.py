"""A sync client drains its background settlements at interpreter exit (bounded by flush_timeout_ms)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

CHILD = textwrap.dedent(
    """
    import sys, httpx
    from runcycles import CyclesClient, CyclesConfig, with_cycles
    from runcycles.local import LocalCyclesServer

    db, journal, flush_ms = sys.argv[1], sys.argv[2], int(sys.argv[3])
    server = LocalCyclesServer(db)
    server.create_tenant("acme")
    key = server.create_api_key("acme")
    server.create_budget("tenant:acme", "USD_MICROCENTS", 1000)
    inner = server.transport()
    failures = {"left": 2}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/commit") and failures["left"]:
            failures["left"] -= 1
            return httpx.Response(503, json={"error": "INTERNAL_ERROR", "message": "busy", "request_id": "x"})
        return inner.handle_request(request)

    config = CyclesConfig(base_url="http://local", api_key=key, tenant="acme", journal_dir=journal,
                          retry_initial_delay_ms=50, flush_timeout_ms=flush_ms)
    client = CyclesClient(config, transport=httpx.MockTransport(handler))

    @with_cycles(estimate=100, actual=30, client=client)
    def work() -> str:
        return "ok"

    print(work(), client.pending_settlements, flush=True)
    # no flush, no close: interpreter exit must drain the retry
    """
)


def run_child(tmp_path: Path, flush_ms: int) -> str:
    db = tmp_path / "ledger.db"
    journal = tmp_path / "journal"
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(db), str(journal), str(flush_ms)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_exit_drains_a_pending_settlement(tmp_path: Path) -> None:
    from runcycles.local import LocalCyclesServer

    assert run_child(tmp_path, 10_000).split() == ["ok", "1"]  # the commit was pending when work() returned
    server = LocalCyclesServer(str(tmp_path / "ledger.db"))
    assert server.get_budget("tenant:acme", "USD_MICROCENTS")["spent"] == 30
    assert not list((tmp_path / "journal").rglob("v2-*.json"))  # settled, so no record left
    server.close()


def test_exit_with_no_flush_time_keeps_the_record(tmp_path: Path) -> None:
    from runcycles.local import LocalCyclesServer

    run_child(tmp_path, 0)
    server = LocalCyclesServer(str(tmp_path / "ledger.db"))
    budget = server.get_budget("tenant:acme", "USD_MICROCENTS")
    server.close()
    assert budget["spent"] == 0
    assert len(list((tmp_path / "journal").rglob("v2-*.json"))) == 1  # kept for the next start to replay
