"""Journal jobs of async callers: batched per event loop and run off the loop, on one journal thread.

The jobs of concurrent tasks in one event loop go to the process-wide `GROUP` as one batch, one batch per loop
at a time (not one thread hop per record). The batches run on one process-wide *journal thread*
(started on first need), which merges the batches of loops that arrive together, runs them, and hands each
loop its results. The deferred jobs (`defer_async`: deleting a settled record, which needs no barrier) ride on
the thread's next batch instead of costing a thread hop of their own (measured on a 2-core VM, a thread hop costs
0.2-0.3 ms there, about a tenth of an async guarded call): up to `DEFERRED_FIRST` of them run after the batch
and *before* its results are handed back, the rest after. Run after the results, they competed with the loop's
next steps for the GIL: twice the context switches per call and 10-20% more time per sequential call, more
than the 50-70 µs a delete adds before the results. A deferred job waits at most `LINGER_S` after the
thread's last batch (then the thread runs it on its own), and `flush()`, `close()` and interpreter exit run
what is left.
Results go back through the event loop's thread-safe entry (asyncio's ``call_soon_threadsafe``, trio's token);
after interpreter exit has stopped the thread, a batch runs on anyio's worker threads and nothing is deferred.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import queue
import sys
import threading
from collections.abc import Callable
from typing import Any

import anyio
import attrs
from anyio.lowlevel import RunVar

from .writer import GROUP, Job, _Entry

__all__ = ["DEFERRED_FIRST", "LINGER_S", "defer_async", "run_async"]

logger = logging.getLogger("runcycles.journal")

LINGER_S = 0.05
"""How long the journal thread waits after a batch for the next one before it runs the deferred jobs alone."""

DEFERRED_FIRST = 16
"""How many deferred jobs the journal thread runs after a batch, before handing back its results (a longer
backlog, as a burst leaves, waits until after them, so that no result waits for many deletes)."""

Results = list["BaseException | None"]


@attrs.define(eq=False)
class _Request:
    jobs: list[Job]
    deliver: Callable[[Results | BaseException], None]  # called on the journal thread; must not raise


_NUDGE = object()  # wake up: a deferred job waits
_STOP = object()


def _set_result(future: asyncio.Future[Results], result: Results | BaseException) -> None:
    if future.done():  # the waiter was cancelled
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


def _asyncio_request(jobs: list[Job], loop: asyncio.AbstractEventLoop) -> tuple[_Request, asyncio.Future[Results]]:
    future: asyncio.Future[Results] = loop.create_future()

    def deliver(result: Results | BaseException) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_set_result, future, result)

    return _Request(jobs, deliver), future


def _trio_token() -> Any:
    """The running trio run's token, or ``None`` (not in trio)."""
    trio = sys.modules.get("trio")
    if trio is None:
        return None
    try:
        return trio.lowlevel.current_trio_token()
    except RuntimeError:
        return None


class _Box:
    """A result handed from the journal thread to a trio task (set in the trio thread)."""

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.result: Results | BaseException = []

    def set(self, result: Results | BaseException) -> None:
        self.result = result
        self.event.set()


def _trio_request(jobs: list[Job], token: Any) -> tuple[_Request, _Box]:
    box = _Box()

    def deliver(result: Results | BaseException) -> None:
        with contextlib.suppress(Exception):  # the run has finished (trio.RunFinishedError): nobody waits
            token.run_sync_soon(box.set, result)

    return _Request(jobs, deliver), box


class _JournalThread:
    """The process's journal thread for async callers (see the module docstring)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._asleep = True  # blocked without a timeout (or not started): a deferred job must wake it
        self.stopped = False

    def _start(self) -> None:
        # Under self._lock.
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name="runcycles-journal-batch", daemon=True)
            self._thread.start()

    def submit(self, request: _Request) -> bool:
        """Queue a batch; ``False`` once the thread is stopped (interpreter exit)."""
        with self._lock:  # put under the lock: a batch queued before `stop` is queued before its _STOP
            if self.stopped:
                return False
            self._start()
            self._asleep = False
            self._queue.put(request)
        return True

    def deferred_added(self) -> bool:
        """Make sure the thread runs the deferred jobs soon; ``False`` once it is stopped."""
        with self._lock:
            if self.stopped:
                return False
            self._start()
            asleep, self._asleep = self._asleep, False
        if asleep:
            self._queue.put(_NUDGE)
        return True

    def stop(self) -> None:
        """Stop the thread (it runs the deferred jobs first) and wait for it briefly."""
        with self._lock:
            self.stopped = True
            thread = self._thread
            if thread is not None:
                self._queue.put(_STOP)
        if thread is not None:
            thread.join(timeout=5.0)

    def _next(self, linger: bool) -> object | None:
        """The next queue item; ``None`` when a linger (or the wait for a deferred job's batch) times out."""
        if not linger:
            with self._lock:
                linger = GROUP.deferred > 0
                self._asleep = not linger
        try:
            return self._queue.get(timeout=LINGER_S) if linger else self._queue.get()
        except queue.Empty:
            return None
        finally:
            with self._lock:
                self._asleep = False

    def _main(self) -> None:
        linger = False
        while True:
            item = self._next(linger)
            if item is None or item is _NUDGE:
                GROUP.run_deferred()
                linger = False
                continue
            stop = item is _STOP
            requests = [] if stop else [item]
            while True:  # merge the batches of every loop that is waiting
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stop = True
                elif more is not _NUDGE:
                    requests.append(more)
            if requests:
                self._run(requests)  # type: ignore[arg-type]
            GROUP.run_deferred()
            if stop:
                return
            linger = True

    @staticmethod
    def _run(requests: list[_Request]) -> None:
        jobs = [job for request in requests for job in request.jobs]
        try:
            errors = GROUP.run(jobs)
        except BaseException as exc:  # every waiter must hear of it, and the thread must live on
            for request in requests:
                request.deliver(exc)
            return
        try:
            GROUP.run_deferred(limit=DEFERRED_FIRST)  # while the loops wait (see the module docstring)
        except Exception:  # pragma: no cover - run_deferred logs its jobs' errors; the results must go out
            logger.exception("deferred journal work failed")
        start = 0
        for request in requests:
            end = start + len(request.jobs)
            request.deliver(errors[start:end])
            start = end


_THREAD = _JournalThread()


def _at_exit() -> None:
    _THREAD.stop()
    GROUP.run_deferred()


atexit.register(_at_exit)


def _reset_after_fork() -> None:
    global _THREAD
    _THREAD = _JournalThread()  # the parent's thread does not exist in the child


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


async def _run_batch(jobs: list[Job]) -> Results:
    """``GROUP.run(jobs)`` on the journal thread; after the thread has stopped (interpreter exit), or on a
    backend other than asyncio and trio, on anyio's worker threads."""
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:  # not asyncio
        loop = None
    if loop is not None:
        request, future = _asyncio_request(jobs, loop)
        if _THREAD.submit(request):
            return await future
    else:
        token = _trio_token()
        if token is not None:
            request, box = _trio_request(jobs, token)
            if _THREAD.submit(request):
                await box.event.wait()
                if isinstance(box.result, BaseException):
                    raise box.result
                return box.result
    return await anyio.to_thread.run_sync(GROUP.run, jobs)


@attrs.define(eq=False)
class _LoopQueue:
    """The jobs of one event loop waiting for its batch."""

    pending: list[_Entry] = attrs.field(factory=list)
    busy: bool = False
    wake: anyio.Event = attrs.field(factory=anyio.Event)


_loop_queue: RunVar[_LoopQueue] = RunVar("runcycles_journal_queue")


async def run_async(job: Job) -> None:
    """Run ``job`` off the event loop and wait; raises its error.

    The jobs of concurrent tasks in this event loop go to the process-wide `GROUP` as one batch. Callers
    shield this from cancellation.
    """
    try:
        queue_ = _loop_queue.get()
    except LookupError:
        queue_ = _LoopQueue()
        _loop_queue.set(queue_)
    entry = _Entry(job)
    queue_.pending.append(entry)
    while not entry.done:
        if queue_.busy:
            await queue_.wake.wait()
            continue
        queue_.busy = True
        batch, queue_.pending = queue_.pending, []
        try:
            errors = await _run_batch([e.job for e in batch])
            for e, error in zip(batch, errors, strict=True):
                e.error, e.done = error, True
        except BaseException:
            for e in batch:
                if not e.done:
                    e.error, e.done = RuntimeError("journal batch interrupted"), True
            raise
        finally:
            queue_.busy = False
            wake, queue_.wake = queue_.wake, anyio.Event()
            wake.set()
    if entry.error is not None:
        raise entry.error


def defer_async(job: Job) -> bool:
    """Leave ``job`` to the journal thread (it runs after the thread's next batch, or within `LINGER_S` of
    its last); ``False`` when it cannot be deferred here (neither asyncio nor trio, or interpreter exit): run
    it with `run_async` instead."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        if _trio_token() is None:
            return False
    if _THREAD.stopped:
        return False
    GROUP.defer(job)
    _THREAD.deferred_added()  # when it was stopped meanwhile, the exit hook runs what is deferred
    return True
