"""The built-in front's batches on a file database: driven by callbacks on its event loop, run on a few
dedicated worker threads.

As :class:`~._batches.Batcher` does for the ASGI app: requests that arrive while a batch runs queue up; the
next batch takes them all (up to :data:`~._batches.MAX_BATCH`) to a worker thread in one hop, runs them one
after the other inside :meth:`Ledger.group` (one transaction), then, while the next batch already runs, makes
the commit durable (:meth:`Ledger.sync` on another worker thread) and only then answers them; if the commit
or the sync fails, every request of the batch gets its 500 answer (an ambiguous outcome: a client retries
with the same idempotency key).

Unlike ``Batcher`` there is no task, coroutine or event per request: the connection hands over a
:class:`Job` and gets its response through a callback, and a thread hop is a ``SimpleQueue`` put answered
with one ``call_soon_threadsafe`` (anyio's worker-thread hop costs ~100 µs of CPU, this ~25 µs). A batch
starts on the loop iteration after its first request arrived, so the requests read in the same iteration
(several connections' data) share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol

from ._batches import log_failed_batch, run_batch, take_batch
from ._http import App, HttpResponse

logger = logging.getLogger("runcycles.local")

MAX_THREADS = 4
"""Threads of one pool at most: a batch running, and the syncs of earlier batches overlapping it."""

_Done = Callable[[Any, BaseException | None], None]
_Work = tuple[Callable[[], Any], asyncio.AbstractEventLoop, _Done]


class ThreadPool:
    """Runs blocking calls for one event loop on up to :data:`MAX_THREADS` threads, started as needed."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, call: Callable[[], Any], done: _Done) -> None:
        """Run ``call()`` on a worker thread, then ``done(result, None)`` or ``done(None, exception)`` on the
        running event loop (not at all if that loop is closed by then, nor once the pool is closed: the
        front has stopped). Call from the loop."""
        loop = asyncio.get_running_loop()
        if self._closed:
            return
        with self._lock:
            start = self._idle == 0 and len(self._threads) < MAX_THREADS
            if not start:
                self._idle -= 1 if self._idle else 0
        if start:
            thread = threading.Thread(target=self._work, name="runcycles-front", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._jobs.put((call, loop, done))

    def close(self, timeout: float) -> None:
        """Stop the threads once the calls queued so far are done, waiting for each at most ``timeout`` s."""
        self._closed = True
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    def _work(self) -> None:
        while True:
            work = self._jobs.get()
            if work is None:
                return
            call, loop, done = work
            try:
                result, error = call(), None
            except BaseException as exc:  # handed to the loop
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(done, result, error)
            with self._lock:
                self._idle += 1


class Job(Protocol):
    """One request for :class:`Batches`."""

    def __call__(self) -> HttpResponse:
        """Its answer (run on a worker thread, inside the batch's transaction)."""

    def failed(self) -> HttpResponse:
        """Its 500 answer, when its batch could not be committed (run on the loop)."""

    def answer(self, response: HttpResponse) -> None:
        """Deliver its response (called on the loop once the response is durable)."""


class Batches:
    """Runs :class:`Job` s of one event loop in batches on a :class:`ThreadPool` (see the module doc)."""

    def __init__(self, app: App, pool: ThreadPool) -> None:
        self._app = app
        self._pool = pool
        self._pending: list[Job] = []
        self._busy = False

    def submit(self, job: Job) -> None:
        """Queue ``job`` for the next batch (call from the loop)."""
        self._pending.append(job)
        if not self._busy:
            self._busy = True
            asyncio.get_running_loop().call_soon(self._start)

    def _start(self) -> None:
        batch, self._pending = take_batch(self._pending)
        self._hop(functools.partial(run_batch, self._app, batch), functools.partial(self._ran, batch))

    def _hop(self, call: Callable[[], Any], done: _Done) -> None:
        try:
            self._pool.submit(call, done)
        except Exception as exc:  # no thread could be started: the batch fails (500s), the next one tries again
            done(None, exc)

    def _ran(self, batch: list[Job], responses: list[HttpResponse] | None, error: BaseException | None) -> None:
        if self._pending:  # the next batch runs while this one's commit is made durable
            self._start()
        else:
            self._busy = False
        if error is not None or responses is None:
            self._deliver(batch, None, error)
        else:
            self._hop(self._app.env.ledger.sync, functools.partial(self._synced, batch, responses))

    def _synced(self, batch: list[Job], responses: list[HttpResponse], _: None, error: BaseException | None) -> None:
        self._deliver(batch, None if error is not None else responses, error)

    def _deliver(self, batch: list[Job], responses: list[HttpResponse] | None, error: BaseException | None) -> None:
        if responses is None:
            log_failed_batch(len(batch), error)
        for index, job in enumerate(batch):
            try:
                job.answer(job.failed() if responses is None else responses[index])
            except Exception as exc:  # one connection's trouble must not keep the others' answers
                logger.error("internal error delivering an answer: %s", type(exc).__name__)
                logger.debug("traceback", exc_info=True)
