"""The client's background worker: one thread with one event loop, started on first need.

It hosts the work that must outlive a guarded call or its caller's event loop — settlement retries, journal
replays — and, for the sync client, the heartbeats of all live reservations (as tasks of that one loop, never
a thread per reservation). ``flush`` waits for pending settlements; ``close`` (and interpreter exit) drain them
within the flush timeout and cancel the rest, whose journal records stay for a later replay.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import anyio
from anyio.from_thread import BlockingPortal

from ._drivers import AsyncEnv, run_async
from ._protocol.effects import Steps

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
