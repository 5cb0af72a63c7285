"""`Beside`: steps driven next to a block (the async heartbeat) start a task only when first due, never outlive
the block, and never leak an exception into it (asyncio and trio)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Generator
from typing import Any

import anyio
import pytest

from runcycles._drivers import AsyncEnv, Beside, monotonic_ms
from runcycles._protocol import requests as rq
from runcycles._protocol.effects import Steps, send, sleep_until
from runcycles.response import CyclesResponse

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

REQUEST = rq.get_reservation("r-1")


class Probe:
    """A step generator that waits until ``due_in_ms`` from now, then sends requests forever."""

    def __init__(self, due_in_ms: float, *, fail: bool = False) -> None:
        self.due_in_ms = due_in_ms
        self.fail = fail
        self.sent = 0
        self.closed = False
        self.beat = anyio.Event()

    def steps(self) -> Steps[None]:
        try:
            yield from sleep_until(monotonic_ms() + self.due_in_ms)
            while True:
                if self.fail:
                    raise RuntimeError("steps broke")
                yield from send(REQUEST)
                yield from sleep_until(monotonic_ms() + 5)
        finally:
            self.closed = True

    def env(self) -> AsyncEnv:
        async def answer(request: rq.HttpRequest, deadline_ms: int | None) -> CyclesResponse:
            self.sent += 1
            self.beat.set()
            return CyclesResponse(status=200, body={})

        return AsyncEnv(send=answer)


def _count_tasks() -> Generator[list[int], None, None]:
    """Counts asyncio tasks created on the running loop (a no-op list under trio)."""
    counter = [0]
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        yield counter
        return
    original = loop.create_task

    def counting(*args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return original(*args, **kwargs)

    loop.create_task = counting  # type: ignore[method-assign]
    try:
        yield counter
    finally:
        del loop.create_task


async def test_a_block_that_ends_before_the_first_beat_starts_no_task(anyio_backend: str) -> None:
    probe = Probe(due_in_ms=60_000)
    counting = _count_tasks()
    created = next(counting)
    async with Beside(probe.steps(), probe.env(), "probe"):
        await anyio.sleep(0)
    assert probe.closed and probe.sent == 0
    if anyio_backend == "asyncio":
        assert created[0] == 0
    counting.close()


async def test_steps_run_once_due_and_stop_with_the_block(anyio_backend: str) -> None:
    probe = Probe(due_in_ms=10)
    async with Beside(probe.steps(), probe.env(), "probe"):
        with anyio.fail_after(10):
            await probe.beat.wait()
    assert probe.sent >= 1
    assert probe.closed  # cancelled and waited for: nothing outlives the block
    sent = probe.sent
    await anyio.sleep(0.03)
    assert probe.sent == sent


async def test_cancel_before_the_first_beat_closes_the_steps(anyio_backend: str) -> None:
    probe = Probe(due_in_ms=20)
    async with Beside(probe.steps(), probe.env(), "probe") as beside:
        beside.cancel()
        await anyio.sleep(0.05)
        assert probe.sent == 0 and probe.closed


async def test_an_exception_of_the_steps_is_logged_and_the_block_continues(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    probe = Probe(due_in_ms=0, fail=True)
    with caplog.at_level(logging.ERROR, logger="runcycles.lifecycle"):
        async with Beside(probe.steps(), probe.env(), "probe"):
            await anyio.sleep(0.02)
        finished = True
    assert finished and probe.closed
    assert any("probe failed" in r.getMessage() for r in caplog.records)


async def test_an_exception_of_the_block_passes_through_unchanged(anyio_backend: str) -> None:
    probe = Probe(due_in_ms=0)
    with pytest.raises(KeyError, match="from the block"):
        async with Beside(probe.steps(), probe.env(), "probe"):
            with anyio.fail_after(10):
                await probe.beat.wait()
            raise KeyError("from the block")
    assert probe.closed


async def test_steps_that_end_at_once_need_nothing(anyio_backend: str) -> None:
    closed = []

    def steps() -> Steps[None]:
        closed.append(False)
        return
        yield  # pragma: no cover - a generator

    async with Beside(steps(), AsyncEnv(send=_never), "probe"):
        pass
    assert closed == [False]


async def test_outer_cancellation_still_waits_for_the_steps(anyio_backend: str) -> None:
    probe = Probe(due_in_ms=0)
    with anyio.CancelScope() as scope:
        async with Beside(probe.steps(), probe.env(), "probe"):
            with anyio.fail_after(10):
                await probe.beat.wait()
            scope.cancel()
            await anyio.sleep(10)
    assert scope.cancelled_caught
    assert probe.closed


async def _never(request: rq.HttpRequest, deadline_ms: int | None) -> CyclesResponse:  # pragma: no cover
    raise AssertionError("not sent")


async def test_consecutive_waits_stay_timers_and_a_task_starts_only_for_work(anyio_backend: str) -> None:
    """A deferred heartbeat: a short wait (its start), then the wait for its first beat: no task in between."""
    from runcycles._heartbeat import started_at

    probe = Probe(due_in_ms=60_000)
    looked_at = anyio.Event()

    def deferred() -> Steps[None]:
        steps = started_at(monotonic_ms() + 5, probe.steps())
        first = next(steps)
        answer = yield first
        looked_at.set()
        yield from _resume(steps, answer)

    counting = _count_tasks()
    created = next(counting)
    async with Beside(deferred(), probe.env(), "probe"):
        with anyio.fail_after(10):
            await looked_at.wait()
        if anyio_backend == "asyncio":
            assert created[0] == 0  # past the first wait, waiting for the second: still a timer
    assert probe.closed and probe.sent == 0
    counting.close()

    probe = Probe(due_in_ms=10)
    async with Beside(started_at(monotonic_ms() + 5, probe.steps()), probe.env(), "probe"):
        with anyio.fail_after(10):
            await probe.beat.wait()  # then due: it runs
    assert probe.sent >= 1 and probe.closed


def _resume(steps: Steps[None], answer: Any) -> Steps[None]:
    while True:
        try:
            effect = steps.send(answer)
        except StopIteration:
            return
        answer = yield effect
