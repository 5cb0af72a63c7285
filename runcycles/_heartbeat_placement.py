"""Where a heartbeat runs: one placement per flavour.

* Async (``with_cycles`` on an ``async def``, ``async with reserve_for_stream(...)``): a `ScopedHeartbeat`
  beside the guarded work (the call, or the ``async with`` block), on the caller's event loop with no thread:
  a loop timer until the first beat is due, then a task (asyncio), or a child task of a task group spanning
  the block (trio). It is structured: leaving the block stops it and waits for it.
* Sync (``with_cycles`` on a plain function, ``with reserve_for_stream(...)``) and every handle without a
  scope (``stream = await reserve_for_stream(...)``): a `WorkerHeartbeat` on the client's one scheduler, the
  background worker's timer heap (`_background.Background.start_heartbeat`), never a thread per reservation.

Both are stopped by ``stop()`` (idempotent); the stream handles hold theirs and stop it on their terminal
call.
"""

from __future__ import annotations

import logging
from typing import Protocol

from ._background import Background
from ._drivers import Beside
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


class ScopedHeartbeat(Beside):
    """A heartbeat beside the guarded work, structured by it: ``async with`` it around the work.

    On asyncio the heartbeat costs a loop timer until its first beat is due, and only a call still running then
    gets a task (starting and cancelling a task per call cost about 0.2 ms); on trio it is a child task of a
    task group spanning the block from the start. Either way leaving the block stops the heartbeat and waits
    for it: nothing outlives the work. ``stop()`` stops it earlier (the settlement that follows the work must
    not race an extend)."""

    _stopped = False

    async def __aenter__(self) -> ScopedHeartbeat:
        await super().__aenter__()
        return self

    def stop(self) -> None:
        """Stop the heartbeat (a running extend is cancelled; leaving the block waits for it to end)."""
        self._stopped = True
        self.cancel()

    @property
    def stopped(self) -> bool:
        """Whether `stop` was called."""
        return self._stopped
