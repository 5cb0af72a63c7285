"""Shared fixtures for the lifecycle end-to-end tests: the embedded server (in process, or over real HTTP via
uvicorn in a background thread), seeded with tenant ``acme`` and a tenant budget, and clients whose transport
is wrapped in the fault-injection layer (tests/faults.py).

Import the fixtures into a test module::

    # ruff: noqa: F811
    from fixtures_local import Harness, harness, mode, uvicorn_switch  # noqa: F401
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from faults import AsyncFaultyTransport, FaultyTransport

from runcycles import AsyncCyclesClient, CyclesClient, CyclesConfig
from runcycles.local import LocalCyclesServer

USD = "USD_MICROCENTS"
TENANT = "acme"
TENANT_SCOPE = "tenant:acme"
FUNDS = 1_000_000
ADMIN_KEY = "lifecycle-admin-key"

__all__ = ["FUNDS", "TENANT", "TENANT_SCOPE", "USD", "Harness", "OffsetClock", "harness", "mode", "uvicorn_switch"]


class OffsetClock:
    """The server's clock: real epoch milliseconds plus an offset a test can jump forward (expiry without
    sleeping, while the client's real-time heartbeat keeps working)."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def __call__(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms

    def advance(self, ms: int) -> None:
        self.offset_ms += ms


class _Switch:
    """One uvicorn for the whole session, forwarding to the current test's server."""

    def __init__(self) -> None:
        self.target: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        await self.target(scope, receive, send)


def start_uvicorn(app: Any) -> tuple[str, Any, threading.Thread]:
    """Serve ``app`` with uvicorn on a free 127.0.0.1 port in a thread; returns (base_url, server, thread)."""
    import uvicorn

    ready = threading.Event()

    class _Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            ready.set()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = _Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    assert ready.wait(10), "uvicorn did not start"
    return f"http://127.0.0.1:{port}", server, thread


@pytest.fixture(scope="session")
def uvicorn_switch() -> Iterator[tuple[str, _Switch]]:
    switch = _Switch()
    base_url, server, thread = start_uvicorn(switch)
    yield base_url, switch
    server.should_exit = True
    thread.join(10)


@pytest.fixture(params=["inproc", "http"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Harness:
    """A seeded server and the clients a test builds against it (in process or over HTTP)."""

    def __init__(self, mode: str, tmp_path: Path, base_url: str | None) -> None:
        self.mode = mode
        self.tmp_path = tmp_path
        self.clock = OffsetClock()
        self.server = LocalCyclesServer(admin_key=ADMIN_KEY, clock=self.clock)
        self.server.create_tenant(TENANT)
        self.key = self.server.create_api_key(TENANT)
        self.server.create_budget(TENANT_SCOPE, USD, FUNDS)
        self.base_url = base_url or "http://cycles.local"
        self._sync_clients: list[CyclesClient] = []
        self._reader = httpx.Client(
            transport=self.server.transport(), base_url="http://local", headers={"X-Cycles-API-Key": self.key}
        )

    @property
    def http(self) -> bool:
        """True when clients talk to uvicorn over a socket."""
        return self.mode == "http"

    def config(self, **overrides: Any) -> CyclesConfig:
        """A client config for this server: fast background retries, journal under the test's tmp dir."""
        options: dict[str, Any] = {
            "base_url": self.base_url,
            "api_key": self.key,
            "tenant": TENANT,
            "retry_initial_delay_ms": 2,
            "retry_max_delay_ms": 20,
            "journal_dir": str(self.tmp_path / "journal"),
        }
        options.update(overrides)
        return CyclesConfig(**options)

    def async_client(
        self, *, on_heartbeat_failure: Callable[[Any], None] | None = None, **overrides: Any
    ) -> tuple[AsyncCyclesClient, AsyncFaultyTransport]:
        """An `AsyncCyclesClient` (use it with ``async with``) and its fault layer."""
        inner: httpx.AsyncBaseTransport = httpx.AsyncHTTPTransport() if self.http else self.server.async_transport()
        faults = AsyncFaultyTransport(inner)
        config = self.config(**overrides)
        client = AsyncCyclesClient(config, transport=faults, on_heartbeat_failure=on_heartbeat_failure)
        return client, faults

    def sync_client(
        self, *, on_heartbeat_failure: Callable[[Any], None] | None = None, **overrides: Any
    ) -> tuple[CyclesClient, FaultyTransport]:
        """A `CyclesClient` (closed with the harness) and its fault layer."""
        inner: httpx.BaseTransport = httpx.HTTPTransport() if self.http else self.server.transport()
        faults = FaultyTransport(inner)
        client = CyclesClient(self.config(**overrides), transport=faults, on_heartbeat_failure=on_heartbeat_failure)
        self._sync_clients.append(client)
        return client, faults

    # ---- the ledger, read directly from the server

    def budget(self, scope: str = TENANT_SCOPE) -> dict[str, Any]:
        """The budget's amounts (allocated, remaining, reserved, spent, debt, is_over_limit, ...)."""
        return self.server.get_budget(scope, USD)

    def assert_ledger(self, *, spent: int, reserved: int = 0, scope: str = TENANT_SCOPE) -> None:
        """The budget holds exactly ``spent`` and ``reserved``; the invariant holds."""
        budget = self.budget(scope)
        assert (budget["spent"], budget["reserved"]) == (spent, reserved), budget
        assert budget["remaining"] == budget["allocated"] - budget["spent"] - budget["reserved"] - budget["debt"]

    def reservation(self, reservation_id: str) -> dict[str, Any]:
        """``GET /v1/reservations/{id}`` straight from the server (bypassing the fault layer)."""
        response = self._reader.get(f"/v1/reservations/{reservation_id}")
        assert response.status_code in (200, 410), response.text
        body: dict[str, Any] = response.json()
        return body

    def reservations(self, **params: str) -> list[dict[str, Any]]:
        """Every reservation of the tenant (``GET /v1/reservations``)."""
        response = self._reader.get("/v1/reservations", params={"tenant": TENANT, **params})
        assert response.status_code == 200, response.text
        rows: list[dict[str, Any]] = response.json()["reservations"]
        return rows

    def close(self) -> None:
        """Close the sync clients, the reader and the server."""
        for client in self._sync_clients:
            client.close()
        self._reader.close()
        self.server.close()


@pytest.fixture
def harness(mode: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Harness]:
    base_url: str | None = None
    switch: _Switch | None = None
    if mode == "http":
        base_url, switch = request.getfixturevalue("uvicorn_switch")
    h = Harness(mode, tmp_path, base_url)
    if switch is not None:
        switch.target = h.server.asgi_app
    yield h
    h.close()
