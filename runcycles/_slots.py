"""How many requests of one async client are in flight at once (`AttemptSlots`), and the pool size it matches."""

from __future__ import annotations

import anyio

__all__ = ["POOL_CONNECTIONS", "AttemptSlots"]

POOL_CONNECTIONS = 100
"""httpx's default connection pool size (``httpx.Limits.max_connections`` of ``DEFAULT_LIMITS``)."""


class AttemptSlots:
    """At most ``limit`` attempts of one async client in flight; the others wait here, unbounded by any
    attempt deadline (each attempt in flight is bounded by its own, so a slot always comes free).

    The semaphore is made on first use, in the event loop that uses it; a free slot is taken without a
    checkpoint (no extra trip through the event loop per request)."""

    def __init__(self, limit: int = POOL_CONNECTIONS) -> None:
        self._limit = limit
        self._semaphore: anyio.Semaphore | None = None

    async def __aenter__(self) -> None:
        semaphore = self._semaphore
        if semaphore is None:
            semaphore = self._semaphore = anyio.Semaphore(self._limit)
        try:
            semaphore.acquire_nowait()
        except anyio.WouldBlock:
            await semaphore.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._semaphore is not None
        self._semaphore.release()
