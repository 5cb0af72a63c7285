"""Both clients keep every connection of their pool open between requests: a second burst of concurrent
requests to the same server reuses the first burst's connections instead of opening new ones (httpx's own
default keeps 20 of its 100, so most of a burst's connections would be closed and opened again)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import anyio
import pytest
from raw_http import RawServer, Reply, raw_server

from runcycles import AsyncCyclesClient, CyclesClient, CyclesConfig
from runcycles._protocol import requests as rq

pytestmark = pytest.mark.timeout(60)

BURST = 30  # above httpx's 20 kept-alive connections, below the server's listen backlog


def _route() -> Callable[[str, str], Reply]:
    """Answers 404 once a whole burst is in flight (each burst needs ``BURST`` connections at once)."""
    together = threading.Barrier(BURST)

    def route(method: str, path: str) -> Reply:
        together.wait(20)
        return Reply(status=404, body=b'{"error":"NOT_FOUND","message":"no such reservation","request_id":"r"}')

    return route


def _config(server: RawServer) -> CyclesConfig:
    return CyclesConfig(base_url=server.url, api_key="k", tenant="acme", journal_enabled=False)


@pytest.mark.anyio
async def test_async_bursts_reuse_their_connections(anyio_backend: str) -> None:
    with raw_server(_route()) as server:
        async with AsyncCyclesClient(_config(server)) as client:

            async def one(n: int) -> None:
                response = await client.send(rq.get_reservation(f"r{n}"))
                assert response.status == 404

            opened = []
            for _ in range(2):
                async with anyio.create_task_group() as tg:
                    for n in range(BURST):
                        tg.start_soon(one, n)
                opened.append(len(server._threads))
    assert len(server.requests) == 2 * BURST
    assert opened == [BURST, BURST]  # the second burst opened no connection


def test_sync_bursts_reuse_their_connections() -> None:
    with raw_server(_route()) as server, CyclesClient(_config(server)) as client:

        def one(n: int) -> int:
            return client.send(rq.get_reservation(f"r{n}")).status

        opened = []
        with ThreadPoolExecutor(BURST) as pool:
            for _ in range(2):
                assert set(pool.map(one, range(BURST))) == {404}
                opened.append(len(server._threads))
    assert opened == [BURST, BURST]
