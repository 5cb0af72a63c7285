"""Where a heartbeat runs: one placement per flavour.

* Async (``with_cycles`` on an ``async def``, ``async with reserve_for_stream(...)``): a `ScopedHeartbeat`, a
  child task of a task group that spans exactly the guarded work (the call, or the ``async with`` block). It
  is structured: it cannot outlive the work, and it runs on the caller's event loop (asyncio or trio) with
  no thread.
* Sync (``with_cycles`` on a plain function, ``with reserve_for_stream(...)``) and every handle without a
  scope (``stream = await reserve_for_stream(...)``): a `WorkerHeartbeat` on the client's one scheduler, the
  background worker's timer heap (`_background.Background.start_heartbeat`), never a thread per reservation.

Both are stopped by ``stop()`` (idempotent); the stream handles hold theirs and stop it on their terminal
call.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Protocol

import anyio
from anyio.abc import TaskGroup

from ._background import Background
from ._protocol.effects import Steps

__all__ = ["Heartbeat", "ScopedHeartbeat", "WorkerHeartbeat", "no_heartbeat"]

log = logging.getLogger("runcycles.heartbeat")


class Heartbeat(Protocol):
    """A running heartbeat."""

    def stop(self) -> None:
        """Stop it (idempotent; never raises)."""


class _NoHeartbeat:
    def stop(self) -> None:
        return None


no_heartbeat: Heartbeat = _NoHeartbeat()
"""The heartbeat of a handle whose heartbeat has not started (or never will)."""


class WorkerHeartbeat:
    """A heartbeat on the client's background worker: it waits in the timer heap until its first beat is due,
    then runs as a task of the worker's event loop."""

    __slots__ = ("_stop",)

    def __init__(self, worker: Background, steps: Steps[None]) -> None:
        self._stop = worker.start_heartbeat(steps)

    def stop(self) -> None:
        """Take it off the timer heap, or cancel its task."""
        self._stop()


class ScopedHeartbeat:
    """A heartbeat as a child task of a task group spanning the guarded work: ``async with`` it around the work.

    Leaving the block stops the heartbeat and waits for its task; ``stop()`` stops it earlier (the settlement
    that follows the work must not race an extend)."""

    __slots__ = ("_run", "_scope", "_tg")

    def __init__(self, run: Callable[[], Awaitable[None]]) -> None:
        self._run = run
        self._scope = anyio.CancelScope()
        self._tg: TaskGroup | None = None

    async def _beat(self) -> None:
        with self._scope:
            await self._run()

    async def __aenter__(self) -> ScopedHeartbeat:
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        tg.start_soon(self._beat)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        self._scope.cancel()
        tg, self._tg = self._tg, None
        assert tg is not None
        return await tg.__aexit__(exc_type, exc, tb)

    def stop(self) -> None:
        """Cancel the heartbeat task (it ends at its next checkpoint)."""
        self._scope.cancel()
