"""The async client's requests beyond its connection pool's size queue *before* their attempt's budget starts:
a burst of our own requests must not fail on the attempt deadline merely for waiting behind itself."""

from __future__ import annotations

import anyio
import httpx
import pytest

from runcycles import AsyncCyclesClient, CyclesConfig
from runcycles._protocol import requests as rq
from runcycles._slots import POOL_CONNECTIONS, AttemptSlots

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


class HeldFirst(httpx.AsyncBaseTransport):
    """Holds the first request until ``release`` is set; answers every other one at once."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.entered = anyio.Event()
        self.release = anyio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request.url.path)
        if len(self.seen) == 1:
            self.entered.set()
            await self.release.wait()
        return httpx.Response(404, json={"error": "NOT_FOUND", "message": "no such reservation"})


def client_with(transport: httpx.AsyncBaseTransport, slots: int) -> AsyncCyclesClient:
    config = CyclesConfig(base_url="http://cycles.test", api_key="k", tenant="acme", journal_enabled=False)
    client = AsyncCyclesClient(config, transport=transport)
    client._slots = AttemptSlots(slots)
    return client


async def test_a_request_waiting_for_a_slot_is_not_failed_by_its_budget(anyio_backend: str) -> None:
    transport = HeldFirst()
    client = client_with(transport, slots=1)
    answers: dict[str, int] = {}

    async def send(name: str, deadline_ms: int | None) -> None:
        response = await client.send(rq.get_reservation(name), deadline_ms=deadline_ms)
        answers[name] = response.status

    async with client, anyio.create_task_group() as tg:
        tg.start_soon(send, "first", None)
        with anyio.fail_after(10):
            await transport.entered.wait()
        tg.start_soon(send, "second", 100)  # a 100 ms budget, but it waits longer than that for the slot
        await anyio.sleep(0.3)
        assert transport.seen == ["/v1/reservations/first"]  # one slot: the second has not started
        transport.release.set()
    assert answers == {"first": 404, "second": 404}  # both answered: no transport failure


async def test_the_default_limit_is_the_pool_size(anyio_backend: str) -> None:
    slots = AttemptSlots()
    async with slots:
        assert slots._semaphore is not None and slots._semaphore.value == POOL_CONNECTIONS - 1
    assert slots._semaphore.value == POOL_CONNECTIONS
