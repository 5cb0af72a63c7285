"""The effects the lifecycle's generators yield, and the answers drivers send back.

A lifecycle step is a generator: it yields an effect, a driver performs it (sync, async, or on the background
worker) and sends the result back in. The decisions live in the generators, written once.

Step generators do not yield effects themselves: they call the typed helpers below with ``yield from``
(``sent = yield from send(request)``, like httpx's ``auth_flow``), so the type of each answer is declared and
checked in one place. `Steps` receives ``object``, so a bare ``x: Sent = yield Send(...)`` does not type-check.
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
    "detach",
    "journal_delete",
    "journal_quarantine",
    "journal_release",
    "journal_write",
    "now",
    "send",
    "sleep_until",
    "wall_now",
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
Steps = Generator[Effect, object, T]
"""A step generator returning ``T``; drive it with `runcycles._drivers`."""

A = TypeVar("A")


def _expect(effect: Effect, answer: object, kind: type[A] | tuple[type[A], ...]) -> A:
    if not isinstance(answer, kind):
        raise TypeError(f"the driver answered {effect!r} with {answer!r}")
    return answer


def send(request: HttpRequest, deadline_ms: int | None = None) -> Steps[Sent]:
    """Send ``request``; the answer is the `Sent` response with its times."""
    effect = Send(request, deadline_ms)
    return _expect(effect, (yield effect), Sent)


def now() -> Steps[float]:
    """The driver's monotonic time in milliseconds."""
    effect = Now()
    return float(_expect(effect, (yield effect), (int, float)))


def wall_now() -> Steps[int]:
    """The driver's wall-clock time in epoch milliseconds."""
    effect = WallNow()
    return _expect(effect, (yield effect), int)


def sleep_until(at_ms: float) -> Steps[None]:
    """Resume at monotonic time ``at_ms``."""
    yield SleepUntil(at_ms)


def detach() -> Steps[None]:
    """End the inline part: a driver with a background worker hands the generator over (and returns
    `DETACHED`); the worker's driver goes on."""
    yield Detach()


def _journal(effect: Effect) -> Steps[BaseException | None]:
    answer = yield effect
    return None if answer is None else _expect(effect, answer, BaseException)


def journal_write(record: Any) -> Steps[BaseException | None]:
    """Durably write ``record``; the answer is the error, or ``None`` when it was written."""
    return (yield from _journal(JournalWrite(record)))


def journal_delete(reservation_id: str) -> Steps[BaseException | None]:
    """Remove a settled record (and drop its claim); the answer is the error or ``None``."""
    return (yield from _journal(JournalDelete(reservation_id)))


def journal_release(reservation_id: str) -> Steps[BaseException | None]:
    """Stop holding an unresolved record's claim; the answer is the error or ``None``."""
    return (yield from _journal(JournalRelease(reservation_id)))


def journal_quarantine(reservation_id: str, reason: str) -> Steps[BaseException | None]:
    """Move an unresolved record aside for an operator; the answer is the error or ``None``."""
    return (yield from _journal(JournalQuarantine(reservation_id, reason)))
