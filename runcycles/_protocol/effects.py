"""The effects the lifecycle's generators yield, and the answers drivers send back.

A lifecycle step is a generator: it yields an effect, a driver performs it (sync, async, or on the background
worker) and sends the result back in. The decisions live in the generators, written once.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, TypeVar

import attrs

from ..response import CyclesResponse
from .requests import HttpRequest

__all__ = [
    "Detach",
    "JournalDelete",
    "JournalQuarantine",
    "JournalRelease",
    "JournalWrite",
    "Now",
    "Send",
    "Sent",
    "SleepUntil",
    "Steps",
    "WallNow",
]

T = TypeVar("T")


@attrs.frozen
class Send:
    """Send one request; the answer is a `Sent`."""

    request: HttpRequest
    deadline_ms: int | None = None


@attrs.frozen
class Sent:
    """A response with the monotonic times the attempt left and its answer arrived."""

    response: CyclesResponse
    sent_at_ms: float
    received_at_ms: float


@attrs.frozen
class SleepUntil:
    """Resume at monotonic time ``at_ms`` (immediately if it has passed)."""

    at_ms: float


@attrs.frozen
class Now:
    """The current monotonic time in milliseconds."""


@attrs.frozen
class WallNow:
    """The current wall-clock time in epoch milliseconds."""


@attrs.frozen
class JournalWrite:
    """Durably write a settlement record before anything else happens; the answer is an error or None."""

    record: Any


@attrs.frozen
class JournalDelete:
    """Remove a settled record (and drop its claim); the answer is an error or None."""

    reservation_id: str


@attrs.frozen
class JournalQuarantine:
    """Move an unresolved record aside for an operator (never replayed) and drop its claim; the answer is an
    error or None."""

    reservation_id: str
    reason: str


@attrs.frozen
class JournalRelease:
    """Stop holding an unresolved record's claim (it stays for a later replay); the answer is an error or None."""

    reservation_id: str


@attrs.frozen
class Detach:
    """The inline part is over: the rest continues on the client's background worker."""


Effect = (
    Send | SleepUntil | Now | WallNow | JournalWrite | JournalDelete | JournalQuarantine | JournalRelease | Detach
)
Steps = Generator[Effect, Any, T]
