"""Shared pieces for the framework integration tests: a seeded embedded server, a transport that records what
the client sent (and can add ``Retry-After`` to denials), and ledger readers."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from faults import operation_of

from runcycles import AsyncCyclesClient, CyclesClient, CyclesConfig
from runcycles.local import LocalCyclesServer

USD = "USD_MICROCENTS"
TENANT = "acme"
FUNDS = 100_000_000_000


class Recorder:
    """What went through a recording transport: ``(operation, status, json body)`` in order, with a condition
    to wait on (the client's background worker may send from another thread)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, Any]] = []
        self.retry_after: str | None = None
        self._cond = threading.Condition()

    def _answer(self, request: httpx.Request, response: httpx.Response, content: bytes) -> httpx.Response:
        operation = operation_of(request.method, request.url.path)
        headers = [(k, v) for k, v in response.headers.items() if k.lower() not in ("content-length",)]
        if self.retry_after is not None and response.status_code == 409:
            headers.append(("Retry-After", self.retry_after))
        try:
            body = httpx.Response(200, content=request.content).json() if request.content else None
        except ValueError:
            body = None
        with self._cond:
            self.calls.append((operation, response.status_code, body))
            self._cond.notify_all()
        return httpx.Response(response.status_code, headers=headers, content=content, request=request)

    def ops(self, *names: str) -> list[tuple[str, int, Any]]:
        """The recorded calls of the given operations."""
        with self._cond:
            return [call for call in self.calls if call[0] in names]

    def wait_for(self, operation: str, count: int = 1, timeout: float = 10.0) -> None:
        """Block until ``count`` calls of ``operation`` were answered."""
        with self._cond:
            ok = self._cond.wait_for(lambda: len([c for c in self.calls if c[0] == operation]) >= count, timeout)
        assert ok, f"timed out waiting for {count} x {operation}: {self.calls}"


class RecordingAsyncTransport(httpx.AsyncBaseTransport):
    """Forwards to ``inner`` and records every call in ``recorder``."""

    def __init__(self, inner: httpx.AsyncBaseTransport, recorder: Recorder) -> None:
        self._inner = inner
        self.recorder = recorder

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        response = await self._inner.handle_async_request(request)
        content = await response.aread()
        return self.recorder._answer(request, response, content)


class RecordingTransport(httpx.BaseTransport):
    """The sync twin of `RecordingAsyncTransport`."""

    def __init__(self, inner: httpx.BaseTransport, recorder: Recorder) -> None:
        self._inner = inner
        self.recorder = recorder

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        response = self._inner.handle_request(request)
        content = response.read()
        return self.recorder._answer(request, response, content)


class Ledger:
    """An embedded server seeded with tenant ``acme`` and clients recording their traffic."""

    def __init__(self, tmp_path: Path, funds: int = FUNDS) -> None:
        self.tmp_path = tmp_path
        self.server = LocalCyclesServer()
        self.server.create_tenant(TENANT)
        self.key = self.server.create_api_key(TENANT)
        self.server.create_budget(f"tenant:{TENANT}", USD, funds)
        self.recorder = Recorder()
        self._reader = httpx.Client(
            transport=self.server.transport(), base_url="http://local", headers={"X-Cycles-API-Key": self.key}
        )

    def config(self, **overrides: Any) -> CyclesConfig:
        options: dict[str, Any] = {
            "base_url": "http://cycles.local",
            "api_key": self.key,
            "tenant": TENANT,
            "retry_initial_delay_ms": 2,
            "retry_max_delay_ms": 20,
            "journal_dir": str(self.tmp_path / "journal"),
        }
        options.update(overrides)
        return CyclesConfig(**options)

    def async_client(self, **overrides: Any) -> AsyncCyclesClient:
        transport = RecordingAsyncTransport(self.server.async_transport(), self.recorder)
        return AsyncCyclesClient(self.config(**overrides), transport=transport)

    def sync_client(self, **overrides: Any) -> CyclesClient:
        transport = RecordingTransport(self.server.transport(), self.recorder)
        return CyclesClient(self.config(**overrides), transport=transport)

    def budget(self, scope: str = f"tenant:{TENANT}") -> dict[str, Any]:
        return self.server.get_budget(scope, USD)

    def spent(self) -> int:
        budget = self.budget()
        assert budget["remaining"] == budget["allocated"] - budget["spent"] - budget["reserved"] - budget["debt"]
        return int(budget["spent"])

    def reserved(self) -> int:
        return int(self.budget()["reserved"])

    def reservations(self, **params: str) -> list[dict[str, Any]]:
        response = self._reader.get("/v1/reservations", params={"tenant": TENANT, **params})
        assert response.status_code == 200, response.text
        rows: list[dict[str, Any]] = response.json()["reservations"]
        return rows

    def close(self) -> None:
        self._reader.close()
        self.server.close()


def closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


def ledger_fixture(tmp_path: Path) -> Iterator[Ledger]:
    """Body of a ``ledger`` fixture."""
    ledger = Ledger(tmp_path)
    yield ledger
    ledger.close()
