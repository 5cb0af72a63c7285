"""The client's background worker: one thread with one event loop, started on first need.

It hosts the work that must outlive a guarded call or its caller's event loop — settlement retries, journal
replays — and every heartbeat without a scope of its own (sync guarded calls and streams, and handles from
``await reserve_for_stream(...)``; see `_heartbeat_placement`), as tasks of that one loop, never a thread per
reservation. A heartbeat waits in a timer heap until its first beat is due, so a call shorter than that never
touches the worker thread: registering and stopping it only take a lock. ``flush`` waits for pending
settlements; ``close`` (and interpreter exit) drain them within the flush timeout and cancel the rest, whose
journal records stay for a later replay. Constructing a `Background` starts nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import heapq
import itertools
import logging
import math
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import anyio
from anyio.from_thread import BlockingPortal

from ._drivers import AsyncEnv, resumed, run_async
from ._protocol.effects import SleepUntil, Steps

__all__ = ["Background"]

log = logging.getLogger("runcycles.background")


class Background:
    """One worker thread per client, hosting background steps as tasks of its own event loop."""

    def __init__(self, make_env: Callable[[], AsyncEnv], *, name: str = "runcycles-worker") -> None:
        self._make_env = make_env
        self._name = name
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0
        self._portal: BlockingPortal | None = None
        self._thread: threading.Thread | None = None
        self._env: AsyncEnv | None = None
        self._closed = False
        self._atexit_registered = False
        # Heartbeats not yet due: a heap of (due_ms, seq, timer); stopped ones are dropped lazily.
        self._timers: list[tuple[float, int, _Timer]] = []
        self._stopped_timers = 0
        self._seq = itertools.count()
        self._planned_ms = -math.inf  # when the timer task wakes next (-inf: it has yet to look at the queue)
        self._idle_ms = _MIN_IDLE_MS  # how long the timer task sleeps with nothing queued (the latest lead)
        self._wake: anyio.Event | None = None
        self._timer_task = False

    @property
    def started(self) -> bool:
        """Whether the worker thread is running."""
        return self._portal is not None

    @property
    def pending(self) -> int:
        """How many settlements are still running."""
        with self._lock:
            return self._pending

    def _start(self) -> BlockingPortal:
        with self._lock:
            if self._closed:
                raise RuntimeError("the client is closed")
            if self._portal is not None:
                return self._portal
            ready = threading.Event()
            failure: list[BaseException] = []

            async def main() -> None:
                try:
                    self._env = self._make_env()
                    async with BlockingPortal() as portal:
                        self._portal = portal
                        ready.set()
                        await portal.sleep_until_stopped()
                except BaseException as exc:  # surfaced to the starter below
                    failure.append(exc)
                    ready.set()
                    raise

            self._thread = threading.Thread(target=anyio.run, args=(main,), name=self._name, daemon=True)
            self._thread.start()
            ready.wait()
            if failure or self._portal is None:
                raise RuntimeError("the runcycles background worker failed to start") from (
                    failure[0] if failure else None
                )
            if not self._atexit_registered:
                atexit.register(self._at_exit)
                self._atexit_registered = True
            return self._portal

    def submit(self, steps: Steps[Any], *, settlement: bool = True) -> Future[Any]:
        """Run ``steps`` on the worker; settlements are counted by ``flush``."""
        portal = self._start()
        if settlement:
            with self._lock:
                self._pending += 1
        future = portal.start_task_soon(self._drive, steps, settlement)
        return future

    def start_heartbeat(self, steps: Steps[Any]) -> Callable[[], None]:
        """Run the heartbeat ``steps`` on the worker from its first due beat on; returns its stop function.

        The generator is advanced here to its first effect. When that is a ``SleepUntil``, the heartbeat only
        sits in the timer queue until then: starting and stopping it take no thread hop, so a call that ends
        before its first beat costs the worker nothing."""
        try:
            first = steps.send(None)
        except StopIteration:
            return _nothing
        except Exception:
            log.exception("runcycles background step failed")
            return _nothing
        if not isinstance(first, SleepUntil):
            future = self.submit(resumed(first, steps), settlement=False)

            def cancel() -> None:
                future.cancel()

            return cancel
        portal = self._start()
        timer = _Timer(resumed(first, steps))
        with self._lock:
            assert self._env is not None
            self._idle_ms = min(max(_MIN_IDLE_MS, first.at_ms - self._env.monotonic()), _MAX_IDLE_MS)
            heapq.heappush(self._timers, (first.at_ms, next(self._seq), timer))
            start, self._timer_task = not self._timer_task, True
            wake = first.at_ms < self._planned_ms and not start
        if start:
            portal.start_task_soon(self._run_timers)
        elif wake:
            with contextlib.suppress(RuntimeError):  # the worker already stopped
                portal.call(self._poke)

        def stop() -> None:
            self._stop_timer(timer)

        return stop

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _stop_timer(self, timer: _Timer) -> None:
        with self._lock:
            state, timer.state = timer.state, _STOPPED
            steps, scope = timer.steps, timer.scope
            if state == _WAITING:
                timer.steps = None
                self._stopped_timers += 1
                if self._stopped_timers > 64 and self._stopped_timers * 2 > len(self._timers):
                    self._timers = [entry for entry in self._timers if entry[2].state == _WAITING]
                    heapq.heapify(self._timers)
                    self._stopped_timers = 0
            portal, thread = self._portal, self._thread
        if state == _WAITING and steps is not None:
            steps.close()
        elif state == _RUNNING and scope is not None:
            if thread is threading.current_thread():
                scope.cancel()
            elif portal is not None:
                with contextlib.suppress(RuntimeError):  # the worker already stopped
                    portal.call(scope.cancel)

    async def _run_timers(self) -> None:
        assert self._env is not None
        clock = self._env.monotonic
        async with anyio.create_task_group() as tg:
            while True:
                due: list[_Timer] = []
                with self._lock:
                    now = clock()
                    while self._timers and self._timers[0][0] <= now:
                        timer = heapq.heappop(self._timers)[2]
                        if timer.state == _WAITING:
                            timer.state = _RUNNING
                            due.append(timer)
                        else:
                            self._stopped_timers = max(0, self._stopped_timers - 1)
                    self._planned_ms = self._timers[0][0] if self._timers else now + self._idle_ms
                    delay = (self._planned_ms - now) / 1000
                    wake = self._wake = anyio.Event()
                for timer in due:
                    tg.start_soon(self._run_timer, timer)
                with anyio.move_on_after(delay):
                    await wake.wait()

    async def _run_timer(self, timer: _Timer) -> None:
        with anyio.CancelScope() as scope:
            with self._lock:
                if timer.state != _RUNNING or timer.steps is None:
                    if timer.steps is not None:  # stopped between being popped and starting
                        timer.steps.close()
                        timer.steps = None
                    return
                timer.scope = scope
                steps = timer.steps
            try:
                await self._drive(steps, False)
            finally:
                steps.close()

    async def _drive(self, steps: Steps[Any], settlement: bool) -> Any:
        assert self._env is not None
        try:
            return await run_async(steps, self._env)
        except anyio.get_cancelled_exc_class():
            raise
        except Exception:
            log.exception("runcycles background step failed")
            return None
        finally:
            if settlement:
                with self._lock:
                    self._pending -= 1
                    self._idle.notify_all()

    def flush(self, timeout_ms: int) -> int:
        """Wait up to ``timeout_ms`` for pending settlements; returns how many remain."""
        with self._lock:
            self._idle.wait_for(lambda: self._pending == 0, timeout=max(0, timeout_ms) / 1000)
            return self._pending

    def close(self, timeout_ms: int) -> int:
        """Drain within ``timeout_ms``, then stop the worker; returns how many settlements were left."""
        remaining = self.flush(timeout_ms)
        with self._lock:
            self._closed = True
            portal, thread = self._portal, self._thread
            self._portal = None
            waiting = [entry[2].steps for entry in self._timers if entry[2].steps is not None]
            self._timers = []
        for steps in waiting:
            steps.close()
        if portal is not None:
            if remaining:
                log.warning(
                    "closing with %d unresolved settlement(s); their journal records are kept for replay", remaining
                )
            with contextlib.suppress(RuntimeError):  # the loop already ended
                portal.call(portal.stop, True)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        return remaining

    def _at_exit(self) -> None:
        if self._portal is not None and not self._closed:
            self.close(self._flush_timeout_at_exit)

    _flush_timeout_at_exit = 10000

    def set_exit_timeout(self, timeout_ms: int) -> None:
        """How long interpreter exit waits for pending settlements."""
        self._flush_timeout_at_exit = timeout_ms


_WAITING, _RUNNING, _STOPPED = "waiting", "running", "stopped"
# Bounds of the idle timer task's sleep: it follows the latest heartbeat's lead time (so the next one, due about
# as far ahead, needs no wake-up), never a busy loop and never longer than a minute.
_MIN_IDLE_MS = 100.0
_MAX_IDLE_MS = 60_000.0


class _Timer:
    """A heartbeat in the timer queue: waiting for its first beat, running on the worker, or stopped."""

    __slots__ = ("scope", "state", "steps")

    def __init__(self, steps: Steps[Any]) -> None:
        self.steps: Steps[Any] | None = steps
        self.state = _WAITING
        self.scope: anyio.CancelScope | None = None


def _nothing() -> None:
    return None
