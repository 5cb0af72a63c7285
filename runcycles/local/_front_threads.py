"""A few dedicated worker threads for the built-in front's batches (``Batcher(app, hop=pool.run)``) instead
of anyio's pool.

A hop through ``anyio.to_thread.run_sync`` costs ~100 µs of CPU (limiter, cancel scope, worker lookup);
a hop to an idle thread of our own through a ``SimpleQueue``, answered with ``call_soon_threadsafe``, ~25 µs.
A batch takes two hops (run, then sync), so at the batch sizes a busy server sees this is a good part of
the per-request cost. The batching itself (grouping, commit, sync, 500 on failure) is `_batches.Batcher`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

logger = logging.getLogger("runcycles.local")

MAX_THREADS = 4
"""Threads of one pool at most: a batch running, and the syncs of earlier batches overlapping it."""

_T = TypeVar("_T")
_Job = tuple[Callable[[], Any], "asyncio.Future[Any]"]


class ThreadPool:
    """Runs blocking calls for one event loop on up to :data:`MAX_THREADS` threads, started as needed."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()

    async def run(self, call: Callable[[], _T]) -> _T:
        """``call()`` on a worker thread; its result, or its exception raised here."""
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        with self._lock:
            start = self._idle == 0 and len(self._threads) < MAX_THREADS
            if not start:
                self._idle -= 1 if self._idle else 0
        if start:
            thread = threading.Thread(target=self._work, name="runcycles-front", daemon=True)
            self._threads.append(thread)
            thread.start()
        self._jobs.put((call, future))
        return await future

    def close(self, timeout: float) -> None:
        """Stop the threads once the calls queued so far are done, waiting for each at most ``timeout`` s."""
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            call, future = job
            try:
                result = call()
            except BaseException as exc:  # handed to the awaiting coroutine
                _settle(future, None, exc)
            else:
                _settle(future, result, None)
            with self._lock:
                self._idle += 1


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    def deliver() -> None:
        if future.done():  # the awaiting coroutine was cancelled
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        future.get_loop().call_soon_threadsafe(deliver)
