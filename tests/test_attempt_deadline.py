"""Every attempt is bounded as a whole (connect + read budget), sync and async, against a server over loopback
that sends its headers at once and then trickles the body one byte per 0.2 s.

The per-read timeout (400 ms) is longer than the drip interval, so httpx alone would wait for the whole body
(60 bytes: 12 s); the 600 ms attempt budget must cut it off. A blown budget is a transport failure: a commit
stays journaled.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from raw_http import RawServer, Reply, raw_server

from runcycles import AsyncCyclesClient, CyclesClient, CyclesConfig, CyclesTransportError, with_cycles
from runcycles._protocol import requests as rq

API_KEY = "cyc_drip_test_key"
BODY = json.dumps({"reservation_id": "r-drip", "status": "ACTIVE", "pad": "x" * 20}).encode()
DRIP_S = 0.2
CREATED = {
    "decision": "ALLOW",
    "reservation_id": "r-drip",
    "affected_scopes": ["tenant:acme"],
    "reserved": {"unit": "USD_MICROCENTS", "amount": 100},
    "expires_at_ms": 4_000_000_000_000,
}


def config(url: str, tmp_path: Path, **overrides: Any) -> CyclesConfig:
    options: dict[str, Any] = {
        "base_url": url,
        "api_key": API_KEY,
        "tenant": "acme",
        "connect_timeout_ms": 200,
        "read_timeout_ms": 400,
        "retry_enabled": False,
        "journal_dir": str(tmp_path / "journal"),
    }
    options.update(overrides)
    return CyclesConfig(**options)


def drip_everything(method: str, path: str) -> Reply:
    return Reply(body=BODY, drip_s=DRIP_S)


def drip_commits(method: str, path: str) -> Reply:
    if path == "/v1/reservations":
        return Reply(body=json.dumps(CREATED).encode())
    if path.endswith("/release"):
        return Reply(body=b'{"status":"RELEASED","released":{"unit":"USD_MICROCENTS","amount":100}}')
    return Reply(body=BODY, drip_s=DRIP_S)


def assert_cut_off(response: Any, server: RawServer) -> None:
    assert response.status == -1
    assert isinstance(response.transport_error, httpx.TimeoutException)
    assert "attempt deadline of 600 ms exceeded" in (response.error_message or "")
    assert server.dripped < len(BODY)  # the client left long before the body was complete
    # the error a caller sees names the address it could not reach, whichever flavour cut the attempt
    error = CyclesTransportError("get_reservation failed", response.transport_error)
    assert error.url == f"{server.url}/v1/reservations/r-drip"
    assert error.url in str(error)


def test_sync_attempt_is_cut_off_at_its_budget(tmp_path: Path) -> None:
    with raw_server(drip_everything) as server, CyclesClient(config(server.url, tmp_path)) as client:
        response = client.get_reservation("r-drip")
    assert_cut_off(response, server)


@pytest.mark.anyio
async def test_async_attempt_is_cut_off_at_its_budget(tmp_path: Path) -> None:
    with raw_server(drip_everything) as server:
        async with AsyncCyclesClient(config(server.url, tmp_path)) as client:
            response = await client.get_reservation("r-drip")
    assert_cut_off(response, server)


def test_sync_tighter_deadline_wins(tmp_path: Path) -> None:
    with raw_server(drip_everything) as server, CyclesClient(config(server.url, tmp_path)) as client:
        response = client.send(rq.get_reservation("r-drip"), deadline_ms=300)
    # Cut by the attempt deadline, or by the per-read timeout it tightened (100 + 200 ms split).
    assert response.status == -1 and isinstance(response.transport_error, httpx.TimeoutException)
    assert server.dripped < len(BODY)


@pytest.mark.anyio
async def test_async_tighter_deadline_wins(tmp_path: Path) -> None:
    with raw_server(drip_everything) as server:
        async with AsyncCyclesClient(config(server.url, tmp_path)) as client:
            response = await client.send(rq.get_reservation("r-drip"), deadline_ms=300)
    assert response.status == -1 and isinstance(response.transport_error, httpx.TimeoutException)
    assert server.dripped < len(BODY)


def test_a_prompt_answer_is_read_whole(tmp_path: Path) -> None:
    with raw_server(lambda method, path: Reply(body=BODY)) as server:
        with CyclesClient(config(server.url, tmp_path)) as client:
            response = client.get_reservation("r-drip")
        assert server.requests == [("GET", "/v1/reservations/r-drip")]
    assert response.status == 200 and response.body["reservation_id"] == "r-drip"


def _journaled(client: CyclesClient | AsyncCyclesClient) -> list[str]:
    return [record.reservation_id for record in client._journal_owner.journal.load().records]


def test_sync_commit_cut_off_stays_journaled(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with raw_server(drip_commits) as server, CyclesClient(config(server.url, tmp_path)) as client:

        @with_cycles(estimate=100, actual=40, client=client)
        def work() -> str:
            return "done"

        assert work() == "done"
        assert client.flush() == 0
        assert _journaled(client) == ["r-drip"]
        assert [path for _, path in server.requests] == ["/v1/reservations", "/v1/reservations/r-drip/commit"]
    assert any("attempt deadline of 600 ms exceeded" in r.getMessage() for r in caplog.records)


@pytest.mark.anyio
async def test_async_commit_cut_off_stays_journaled(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with raw_server(drip_commits) as server:
        async with AsyncCyclesClient(config(server.url, tmp_path)) as client:

            @with_cycles(estimate=100, actual=40, client=client)
            async def work() -> str:
                return "done"

            assert await work() == "done"
            assert await client.flush() == 0
            assert _journaled(client) == ["r-drip"]
        assert [path for _, path in server.requests] == ["/v1/reservations", "/v1/reservations/r-drip/commit"]
    assert any("attempt deadline of 600 ms exceeded" in r.getMessage() for r in caplog.records)


# The status line and headers trickled one byte per 0.2 s (about 70 bytes: 14 s); each read's 500 ms timeout
# never fires on its own, so only the attempt budget (connect 200 + read 500 ms) can end the attempt.
HEAD_BUDGET_S = 0.7


def drip_heads(method: str, path: str) -> Reply:
    if path == "/v1/reservations":
        return Reply(body=json.dumps(CREATED).encode())
    if path.endswith("/release"):
        return Reply(body=b'{"status":"RELEASED","released":{"unit":"USD_MICROCENTS","amount":100}}')
    if path.endswith("/prompt"):
        return Reply(body=BODY)
    return Reply(body=BODY, head_drip_s=DRIP_S)


def test_sync_attempt_with_trickled_headers_is_cut_off_at_its_budget(tmp_path: Path) -> None:
    with raw_server(drip_heads) as server, CyclesClient(config(server.url, tmp_path, read_timeout_ms=500)) as client:
        started = time.monotonic()
        response = client.get_reservation("r-drip")
        elapsed = time.monotonic() - started
        assert response.status == -1
        assert isinstance(response.transport_error, httpx.TimeoutException)
        assert "attempt deadline of 700 ms exceeded" in (response.error_message or "")
        assert elapsed < 3 * HEAD_BUDGET_S  # a bound, not a benchmark: unbounded it would take ~14 s
        assert 0 < server.head_dripped < 40  # the client left while the headers were still coming
        # The cut connection is dropped, not reused: the next attempt gets a whole answer.
        assert client.get_reservation("prompt").status == 200


def test_sync_commit_with_trickled_headers_stays_journaled(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with raw_server(drip_heads) as server:
        with CyclesClient(config(server.url, tmp_path, read_timeout_ms=500)) as client:

            @with_cycles(estimate=100, actual=40, client=client)
            def work() -> str:
                return "done"

            started = time.monotonic()
            assert work() == "done"
            assert client.flush() == 0
            assert time.monotonic() - started < 3 * HEAD_BUDGET_S  # one commit attempt, cut at its budget
            assert _journaled(client) == ["r-drip"]
        assert [path for _, path in server.requests] == ["/v1/reservations", "/v1/reservations/r-drip/commit"]
    assert any("attempt deadline of 700 ms exceeded" in r.getMessage() for r in caplog.records)
