"""Requests of the ASGI app on a file database run in batches: one thread hop and one commit per batch.

A thread hop per request (and a pool of threads contending for the interpreter lock and the ledger's write
lock) cost more than the requests themselves. Instead, requests that arrive while a batch is running queue
up; the next batch takes them all (up to :data:`MAX_BATCH`) to a worker thread in one hop, runs them one
after the other inside :meth:`Ledger.group` (their writes share one transaction, so one ``fsync``), and
answers them only once that transaction is committed. If the commit fails, every request of the batch gets
a 500 answer: none of their writes were kept.

There is no background task: the request that finds no batch running leads one (its own included); when it
is done it hands the lead to the first request still queued.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
import anyio.to_thread
import attrs

from ._base import LocalServerError
from ._http import App, HttpResponse

logger = logging.getLogger("runcycles.local")

MAX_BATCH = 64
"""At most this many requests share one worker-thread hop and one commit."""

Call = Callable[[], HttpResponse]


@attrs.define(eq=False)
class _Job:
    call: Call
    failed: Call
    """The 500 answer of this request, used when its batch's commit fails."""
    done: anyio.Event = attrs.Factory(anyio.Event)
    lead: bool = False
    response: HttpResponse | None = None


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
        # Shielded: a lead must finish its batch and hand on the lead whatever happens to its own request.
        with anyio.CancelScope(shield=True):
            if self._busy:
                await job.done.wait()
                if not job.lead:
                    assert job.response is not None
                    return job.response
            self._busy = True
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                responses = await anyio.to_thread.run_sync(self._run_batch, batch)
            except BaseException:  # the worker thread could not be used at all: answer, do not hang
                logger.error("a batch of %d requests failed to run", len(batch), exc_info=True)
                responses = [job.failed() for job in batch]
            for each, response in zip(batch, responses, strict=True):
                each.response = response
                each.lead = False
                each.done.set()
            if self._pending:
                self._pending[0].lead = True
                self._pending[0].done.set()
            else:
                self._busy = False
        assert job.response is not None
        return job.response

    def _run_batch(self, batch: list[_Job]) -> list[HttpResponse]:
        responses: list[HttpResponse] = []
        try:
            with self._app.env.ledger.group():
                for job in batch:
                    responses.append(job.call())
        except Exception as exc:
            logger.error("a batch of %d requests could not be committed: %s", len(batch), type(exc).__name__)
            logger.debug("traceback of the failed batch", exc_info=True)
            return [job.failed() for job in batch]
        return responses


def internal_error(app: App, method: str, headers: list[tuple[str, str]]) -> Call:
    """The 500 answer for a request whose batch could not be committed."""
    error = LocalServerError(500, "INTERNAL_ERROR", "Internal server error")
    return lambda: app.handle(method, "/", "", headers, b"", error=error)
