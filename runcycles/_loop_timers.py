"""Many one-shot callbacks of one asyncio event loop behind a single loop timer (`timers_of`).

Every async guarded call arms its heartbeat's first beat and almost always cancels it again a few milliseconds
later. As one ``loop.call_later`` each, the cancelled handles pile up in the loop's own heap (asyncio purges
them only past 100 entries) and every push and pop there compares handles in Python: about 0.02 ms per call
with nothing due. Here the entries sit in a heap of plain tuples (compared in C), a cancel only marks its
entry, and the loop holds one timer, for the earliest entry, re-armed only when an earlier one arrives.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
import weakref
from collections.abc import Callable

__all__ = ["Alarm", "LoopTimers", "timers_of"]

_RESOLUTION = time.get_clock_info("monotonic").resolution  # what asyncio adds when it decides a timer is due


class Alarm:
    """One scheduled callback; `cancel` it (idempotent) to keep it from running."""

    __slots__ = ("_callback", "_owner")

    def __init__(self, owner: LoopTimers, callback: Callable[[], object]) -> None:
        self._owner = owner
        self._callback: Callable[[], object] | None = callback

    def cancel(self) -> None:
        """Keep the callback from running (a no-op once it ran or was cancelled)."""
        if self._callback is not None:
            self._callback = None
            self._owner._cancelled_one()


class LoopTimers:
    """The alarms of one event loop (use from that loop's thread only, as its own timers)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop_ref = weakref.ref(loop)  # weak: `timers_of` keys them by their loop, weakly
        self._heap: list[tuple[float, int, Alarm]] = []
        self._order = itertools.count()  # ties never compare the alarms themselves
        self._armed: asyncio.TimerHandle | None = None
        self._armed_at = float("inf")
        self._cancelled = 0

    def __len__(self) -> int:
        """Entries still in the heap (cancelled ones included until purged)."""
        return len(self._heap)

    def call_later(self, delay: float, callback: Callable[[], object]) -> Alarm:
        """Run ``callback`` in ``delay`` seconds (as ``loop.call_later`` would), unless cancelled first."""
        loop = self._loop_ref()
        assert loop is not None  # called from the loop's own thread, while it runs
        when = loop.time() + delay
        alarm = Alarm(self, callback)
        heapq.heappush(self._heap, (when, next(self._order), alarm))
        if when < self._armed_at:
            self._arm(loop, when)
        return alarm

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._armed is not None:
            self._armed.cancel()
        self._armed_at = when
        self._armed = loop.call_at(when, self._fire)

    def _cancelled_one(self) -> None:
        self._cancelled += 1
        heap = self._heap
        if self._cancelled > 64 and self._cancelled * 2 > len(heap):
            self._heap = [entry for entry in heap if entry[2]._callback is not None]
            heapq.heapify(self._heap)
            self._cancelled = 0
            if not self._heap and self._armed is not None:
                self._armed.cancel()
                self._armed = None
                self._armed_at = float("inf")

    def _fire(self) -> None:
        armed_at = self._armed_at
        self._armed = None
        self._armed_at = float("inf")
        loop = self._loop_ref()
        if loop is None:  # pragma: no cover - a loop that is gone runs nothing
            return
        # The loop ran this timer, so what it was armed for is due even on a loop that fires a little early.
        due = max(loop.time() + _RESOLUTION, armed_at)
        while self._heap and self._heap[0][0] <= due:  # self._heap: a callback may cancel (and purge)
            alarm = heapq.heappop(self._heap)[2]
            callback = alarm._callback
            if callback is None:
                self._cancelled -= 1
                continue
            alarm._callback = None
            try:
                callback()
            except Exception as exc:  # as the loop treats a failing callback of its own: reported, not fatal
                loop.call_exception_handler({"message": "runcycles alarm callback failed", "exception": exc})
        heap = self._heap
        while heap and heap[0][2]._callback is None:
            heapq.heappop(heap)
            self._cancelled -= 1
        if heap:
            self._arm(loop, heap[0][0])


_BY_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopTimers] = weakref.WeakKeyDictionary()


def timers_of(loop: asyncio.AbstractEventLoop) -> LoopTimers:
    """The alarms of ``loop`` (made on first use; they go with the loop)."""
    timers = _BY_LOOP.get(loop)
    if timers is None:
        timers = _BY_LOOP[loop] = LoopTimers(loop)
    return timers
