# ruff: noqa: F811  (pytest fixtures imported from fixtures_local)
"""An async client over real HTTP whose commit must be retried after the caller's loop has moved on: the
background worker uses a transport of its own (a network pool is bound to the loop that opened it)."""

from __future__ import annotations

import httpx
import pytest
from faults import AsyncFaultyTransport
from fixtures_local import Harness, harness, mode, uvicorn_switch  # noqa: F401

from runcycles import AsyncCyclesClient, with_cycles


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["http"])
async def test_lost_commit_is_settled_by_the_worker_over_its_own_connection_pool(harness: Harness) -> None:
    faults = AsyncFaultyTransport(httpx.AsyncHTTPTransport())
    faults.on("commit").lost_response()
    async with AsyncCyclesClient(
        harness.config(), transport=faults, background_transport=httpx.AsyncHTTPTransport
    ) as client:

        @with_cycles(estimate=100, actual=40, client=client)
        async def work() -> str:
            return "done"

        assert await work() == "done"
        assert await client.flush(5000) == 0
    harness.assert_ledger(spent=40)
    assert faults.ops() == ["create", "commit"]  # the retry went through the worker's own transport


def test_the_worker_never_shares_a_network_pool() -> None:
    from runcycles._http import worker_sender_for_async

    seen: list[object] = []

    async def send(http: httpx.AsyncClient, config: object, request: object, deadline: object, **_: object) -> object:
        seen.append(http._transport)
        return None

    network = httpx.AsyncHTTPTransport()
    in_process = httpx.MockTransport(lambda request: httpx.Response(200))
    for given, shared in ((network, False), (None, False), (in_process, True)):
        sender = worker_sender_for_async(None, given, None, {"base_url": "http://x"}, send)()
        import anyio

        anyio.run(sender, None, None)
        assert (seen[-1] is given) is shared
