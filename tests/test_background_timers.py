"""The background worker's heartbeat timer queue: no thread hop before a heartbeat's first beat is due."""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from runcycles._background import Background
from runcycles._drivers import AsyncEnv, monotonic_ms
from runcycles._protocol.effects import SleepUntil
from runcycles.response import CyclesResponse


async def _no_send(request: Any, deadline_ms: int | None) -> CyclesResponse:  # pragma: no cover - never sent
    raise AssertionError("nothing is sent")


@pytest.fixture
def background() -> Iterator[Background]:
    worker = Background(lambda: AsyncEnv(send=_no_send))
    yield worker
    worker.close(1000)


def _beat(lead_ms: float, ran: threading.Event, closed: list[str], name: str) -> Generator[Any, Any, None]:
    try:
        yield SleepUntil(monotonic_ms() + lead_ms)
        ran.set()
    finally:
        closed.append(name)


def test_stopped_before_due_never_runs_and_is_closed(background: Background) -> None:
    ran = threading.Event()
    closed: list[str] = []
    stop = background.start_heartbeat(_beat(60_000, ran, closed, "a"))
    stop()
    assert closed == ["a"]
    assert not ran.is_set()
    stop()  # idempotent
    assert closed == ["a"]


def test_due_heartbeat_runs_on_the_worker(background: Background) -> None:
    ran = threading.Event()
    closed: list[str] = []
    background.start_heartbeat(_beat(10, ran, closed, "a"))
    assert ran.wait(10)


def test_earlier_heartbeat_wakes_an_idle_timer_task(background: Background) -> None:
    slow, fast = threading.Event(), threading.Event()
    closed: list[str] = []
    stop_slow = background.start_heartbeat(_beat(60_000, slow, closed, "slow"))
    assert fast.wait(0) is False
    background.start_heartbeat(_beat(10, fast, closed, "fast"))
    assert fast.wait(10)
    assert not slow.is_set()
    stop_slow()
    assert "slow" in closed


def test_short_calls_make_no_thread_hop(background: Background, monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[str] = []
    ran = threading.Event()
    background.start_heartbeat(_beat(60_000, ran, closed, "first"))()  # starts the worker and its timer task
    portal = background._portal
    assert portal is not None
    hops: list[str] = []
    monkeypatch.setattr(portal, "call", lambda *a, **k: hops.append("call"))
    monkeypatch.setattr(portal, "start_task_soon", lambda *a, **k: hops.append("start_task_soon"))
    for i in range(200):
        background.start_heartbeat(_beat(60_000, ran, closed, str(i)))()
    assert hops == []
    assert len(closed) == 201
    assert len(background._timers) <= 200  # stopped timers are compacted away
    assert not ran.is_set()


def test_running_heartbeat_is_cancelled_by_stop(background: Background) -> None:
    started = threading.Event()
    closed: list[str] = []

    def forever() -> Generator[Any, Any, None]:
        try:
            yield SleepUntil(monotonic_ms() + 5)
            started.set()
            yield SleepUntil(monotonic_ms() + 600_000)
        finally:
            closed.append("forever")

    stop = background.start_heartbeat(forever())
    assert started.wait(10)
    stop()
    background.close(1000)
    assert closed == ["forever"]


def test_close_closes_waiting_heartbeats() -> None:
    worker = Background(lambda: AsyncEnv(send=_no_send))
    closed: list[str] = []
    worker.start_heartbeat(_beat(60_000, threading.Event(), closed, "w"))
    worker.close(1000)
    assert closed == ["w"]


def test_an_immediate_beat_does_not_make_the_idle_timer_task_spin(background: Background) -> None:
    ran = threading.Event()
    background.start_heartbeat(_beat(0, ran, [], "now"))
    assert ran.wait(10)
    assert background._idle_ms >= 100  # the idle sleep never follows a zero lead into a busy loop


def test_a_deferred_heartbeat_starts_on_the_worker_then_waits_for_its_first_beat(background: Background) -> None:
    from runcycles._heartbeat import started_at

    ran = threading.Event()
    closed: list[str] = []
    # Looked at after 5 ms (`deferred_start_ms`), first beat 40 ms in: the worker runs it to its beat.
    background.start_heartbeat(started_at(monotonic_ms() + 5, _beat(40, ran, closed, "a")))
    assert ran.wait(10)
    assert closed == ["a"]


def test_a_deferred_heartbeat_stopped_after_its_start_is_cancelled_and_closed(background: Background) -> None:
    from runcycles._heartbeat import started_at

    started, ended = threading.Event(), threading.Event()
    beats: list[str] = []

    def beat() -> Generator[Any, Any, None]:
        try:
            started.set()
            yield SleepUntil(monotonic_ms() + 60_000)
            beats.append("a")
        finally:
            ended.set()

    stop = background.start_heartbeat(started_at(monotonic_ms() + 1, beat()))
    assert started.wait(10)  # the worker worked it out and now waits for its first beat
    stop()
    assert ended.wait(10)
    assert beats == []
