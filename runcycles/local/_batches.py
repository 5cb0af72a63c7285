"""Requests of the ASGI app on a file database run in batches: one thread hop and one commit per batch.

A thread hop per request (and a pool of threads contending for the interpreter lock and the ledger's write
lock) cost more than the requests themselves. Instead, requests that arrive while a batch is running queue
up; the next batch takes them all (up to :data:`MAX_BATCH`) to a worker thread in one hop, runs them one
after the other inside :meth:`Ledger.group` (their writes share one transaction), then, while the next
batch already runs, makes the commit durable (:meth:`Ledger.sync`, one ``fsync`` on another worker thread)
and only then answers them. If the commit or the sync fails, every request of the batch gets a 500 answer
(an ambiguous outcome: a client retries with the same idempotency key).

There is no background task: the request that finds no batch running leads one (its own included); when it
is done it hands the lead to the first request still queued.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

import anyio
import anyio.to_thread
import attrs

from ._base import LocalServerError
from ._http import App, HttpResponse

logger = logging.getLogger("runcycles.local")

MAX_BATCH = 64
"""At most this many requests share one worker-thread hop and one commit."""

Call = Callable[[], HttpResponse]
_T = TypeVar("_T")
_J = TypeVar("_J")


@attrs.define(eq=False)
class _Job:
    call: Call
    failed: Call
    """The 500 answer of this request, used when its batch's commit fails."""
    done: anyio.Event | None = None
    """Set when the response is ready or the job is to lead the next batch (only for a job that waits)."""
    lead: bool = False
    response: HttpResponse | None = None


def take_batch(pending: list[_J]) -> tuple[list[_J], list[_J]]:
    """The next batch of ``pending`` (at most :data:`MAX_BATCH`, oldest first) and what stays queued."""
    return pending[:MAX_BATCH], pending[MAX_BATCH:]


def run_batch(app: App, calls: Sequence[Call]) -> list[HttpResponse]:
    """Run ``calls`` one after the other in one ledger transaction (on a worker thread)."""
    with app.env.ledger.group():
        return [call() for call in calls]


def log_failed_batch(size: int, error: BaseException | None) -> None:
    """Report a batch whose run, commit or sync failed (its requests get their 500 answers)."""
    logger.error("a batch of %d requests failed: %s", size, type(error).__name__)
    logger.debug("traceback of the failed batch", exc_info=error)


class Batcher:
    """Runs :meth:`App.handle` calls for one event loop in batches on a worker thread (see the module doc)."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._pending: list[_Job] = []
        self._busy = False

    async def run(self, call: Call, failed: Call) -> HttpResponse:
        """Run ``call`` in the next batch and return its response once the batch is committed."""
        job = _Job(call, failed)
        self._pending.append(job)
        if self._busy:
            job.done = anyio.Event()
            try:
                await job.done.wait()
            except BaseException:  # cancelled while queued: drop the job, and the lead if it was given one
                self._abandon(job)
                raise
            if not job.lead:
                assert job.response is not None
                return job.response
        self._busy = True
        # Shielded: a lead finishes its batch and hands on the lead whatever happens to its own request.
        with anyio.CancelScope(shield=True):
            await self._lead()
        assert job.response is not None
        return job.response

    async def _lead(self) -> None:
        batch, self._pending = take_batch(self._pending)
        responses = await self._in_thread(functools.partial(run_batch, self._app, [job.call for job in batch]), batch)
        self._hand_on()  # the next batch runs while this one's commit is made durable
        if responses is not None and not await self._in_thread(self._sync, batch):
            responses = None
        for each, response in zip(batch, responses or [each.failed() for each in batch], strict=True):
            each.response = response
            if each.done is not None:
                each.done.set()

    def _abandon(self, job: _Job) -> None:
        if job in self._pending:
            self._pending.remove(job)
        if job.lead:
            job.lead = False
            self._hand_on()

    def _hand_on(self) -> None:
        """Let the first queued request lead the next batch (or note that none is running)."""
        if self._pending:
            first = self._pending[0]
            first.lead = True
            assert first.done is not None  # every queued job waits on its event
            first.done.set()
        else:
            self._busy = False

    async def _in_thread(self, step: Callable[[], _T], batch: list[_Job]) -> _T | None:
        """``step()`` on a worker thread; ``None`` (logged) if it raised."""
        try:
            return await anyio.to_thread.run_sync(step)
        except Exception as exc:
            log_failed_batch(len(batch), exc)
            return None

    def _sync(self) -> bool:
        self._app.env.ledger.sync()
        return True


def internal_error(app: App, method: str, headers: list[tuple[str, str]]) -> Call:
    """The 500 answer for a request whose batch could not be committed."""
    error = LocalServerError(500, "INTERNAL_ERROR", "Internal server error")
    return lambda: app.handle(method, "/", "", headers, b"", error=error)
