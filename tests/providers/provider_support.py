"""The ledger side of the provider-guard tests: an embedded Cycles server with one funded tenant, clients whose
requests are recorded (tests/faults.py), and views of what was reserved and settled."""

from __future__ import annotations

import contextlib
import gc
import inspect
from collections.abc import Iterator
from typing import Any

import anyio
import attrs
from faults import AsyncFaultyTransport, FaultyTransport

from runcycles import AsyncCyclesClient, CyclesClient, CyclesConfig
from runcycles.integrations._llm_guard import wait_for_abandoned_streams
from runcycles.local import LocalCyclesServer

USD = "USD_MICROCENTS"
FUNDS = 1_000_000_000  # $10


@attrs.define
class Ledger:
    server: LocalCyclesServer
    config: CyclesConfig
    sync_transport: FaultyTransport
    async_transport: AsyncFaultyTransport
    inspector: CyclesClient

    @classmethod
    @contextlib.contextmanager
    def open(cls, *, allocated: int = FUNDS, caps: dict[str, Any] | None = None) -> Iterator[Ledger]:
        server = LocalCyclesServer()
        server.create_tenant("acme")
        key = server.create_api_key("acme")
        server.create_budget("tenant:acme", USD, allocated=allocated, caps=caps)
        config = CyclesConfig(base_url="http://cycles.local", api_key=key, tenant="acme", journal_enabled=False)
        inspector = CyclesClient(config, transport=server.transport())
        ledger = cls(server, config, FaultyTransport(server.transport()),
                     AsyncFaultyTransport(server.async_transport()), inspector)
        try:
            yield ledger
        finally:
            inspector.close()
            server.close()

    def set_caps(self, caps: dict[str, Any]) -> None:
        self.server.update_budget("tenant:acme", USD, caps=caps)

    def sync_client(self) -> CyclesClient:
        return CyclesClient(self.config, transport=self.sync_transport)

    def async_client(self) -> AsyncCyclesClient:
        return AsyncCyclesClient(self.config, transport=self.async_transport)

    def client(self, flavour: str) -> Any:
        return self.async_client() if flavour == "async" else self.sync_client()

    def reservations(self) -> list[dict[str, Any]]:
        response = self.inspector.list_reservations(tenant="acme")
        assert response.is_success, response.body
        rows: list[dict[str, Any]] = response.body["reservations"]
        return rows

    def detail(self, reservation_id: str) -> dict[str, Any]:
        response = self.inspector.get_reservation(reservation_id)
        assert response.is_success, response.body
        return dict(response.body)

    def only(self) -> dict[str, Any]:
        """The one reservation of the test, in full."""
        rows = self.reservations()
        assert len(rows) == 1, rows
        return self.detail(rows[0]["reservation_id"])

    def committed(self) -> int:
        """The one reservation's committed amount (it must be COMMITTED)."""
        row = self.only()
        assert row["status"] == "COMMITTED", row
        amount: int = row["committed"]["amount"]
        return amount

    def spent(self) -> int:
        return int(self.server.get_budget("tenant:acme", USD)["spent"])

    def commits(self) -> list[dict[str, Any]]:
        """Bodies of every commit sent (either flavour)."""
        entries = self.sync_transport.entries("commit") + self.async_transport.entries("commit")
        return [e.body for e in entries]

    def releases(self) -> int:
        return len(self.sync_transport.entries("release") + self.async_transport.entries("release"))


async def resolve(value: Any) -> Any:
    """``await`` a value from an async SDK client; a sync client's value as is."""
    return await value if inspect.isawaitable(value) else value


async def consume(stream: Any, limit: int | None = None) -> list[Any]:
    """Iterate a sync or async stream (all of it, or ``limit`` items then break)."""
    items: list[Any] = []
    if hasattr(stream, "__aiter__"):
        async for item in stream:
            items.append(item)
            if limit is not None and len(items) >= limit:
                break
    else:
        for item in stream:
            items.append(item)
            if limit is not None and len(items) >= limit:
                break
    return items


async def close(stream: Any) -> None:
    await resolve(stream.close())


async def flush(client: Any) -> int:
    """Wait for collected streams to hand on their commits, then for the client's background settlements."""
    assert wait_for_abandoned_streams(10)
    return int(await resolve(client.flush()))


async def aclose_client(client: Any) -> None:
    await resolve(client.aclose() if hasattr(client, "aclose") else client.close())


async def collect_garbage() -> None:
    """Collect unreachable streams. An abandoned async iterator is closed by the event loop (its finalizer hook
    schedules ``aclose``) and only then unreachable, so let the loop run those hooks between collections."""
    for _ in range(3):
        gc.collect()
        await anyio.lowlevel.checkpoint()
    gc.collect()
