"""One heartbeat placement per flavour, owned by the stream handle (see `runcycles._heartbeat_placement`).

Async guarded work (``async def`` under ``with_cycles``, ``async with reserve_for_stream``): a child task of a
task group spanning the work, on the caller's loop, no thread. Sync guarded work and handles without a scope
(``await reserve_for_stream``): the client's worker scheduler.
"""

# ruff: noqa: F811
from __future__ import annotations

import threading

import httpx
import pytest
from fixtures_local import Harness, harness, mode, uvicorn_switch  # noqa: F401

from runcycles import AsyncCyclesClient, reserve_for_stream, with_cycles
from runcycles._heartbeat_placement import ScopedHeartbeat, WorkerHeartbeat


def _async_client(harness: Harness) -> AsyncCyclesClient:
    inner: httpx.AsyncBaseTransport = httpx.AsyncHTTPTransport() if harness.http else harness.server.async_transport()
    worker_transport = httpx.AsyncHTTPTransport if harness.http else harness.server.async_transport
    config = harness.config(journal_enabled=False)
    return AsyncCyclesClient(config, transport=inner, background_transport=worker_transport)


def _worker_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "runcycles-worker"]


@pytest.mark.anyio
async def test_async_with_stream_beats_in_a_task_of_its_block_and_starts_no_worker(harness: Harness) -> None:
    client = _async_client(harness)
    async with client:
        async with reserve_for_stream(client=client, estimate=100) as stream:
            heartbeat = stream._heartbeat
            assert isinstance(heartbeat, ScopedHeartbeat)
            stream.actual = 5
        assert heartbeat.stopped  # stopped with the block
        assert not client._worker.started

        @with_cycles(estimate=100, actual=5, client=client)
        async def work() -> None:
            return None

        await work()
        assert not client._worker.started
    harness.assert_ledger(spent=10)


@pytest.mark.anyio
async def test_awaited_stream_beats_on_the_worker_until_its_terminal_call(harness: Harness) -> None:
    client = _async_client(harness)
    async with client:
        stream = await reserve_for_stream(client=client, estimate=100)
        assert isinstance(stream._heartbeat, WorkerHeartbeat)
        assert client._worker.started  # the one scheduler of this client
        timers = [entry[2] for entry in client._worker._timers]
        assert len(timers) == 1 and timers[0].state == "waiting"
        await stream.commit(7)
        assert timers[0].state == "stopped"
    harness.assert_ledger(spent=7)


def test_sync_streams_share_the_one_worker_and_stop_on_exit(harness: Harness) -> None:
    client, _ = harness.sync_client(journal_enabled=False)
    before = len(_worker_threads())
    with reserve_for_stream(client=client, estimate=100) as first, reserve_for_stream(
        client=client, estimate=100
    ) as second:
        assert isinstance(first._heartbeat, WorkerHeartbeat) and isinstance(second._heartbeat, WorkerHeartbeat)
        timers = [entry[2] for entry in client._worker._timers]
        assert [timer.state for timer in timers] == ["waiting", "waiting"]
        assert len(_worker_threads()) == before + 1  # one worker for the client, never one per reservation
        first.actual, second.actual = 3, 4
    assert [timer.state for timer in timers] == ["stopped", "stopped"]
    harness.assert_ledger(spent=7)
