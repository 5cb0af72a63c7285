"""The two drivers of the lifecycle's step generators: one blocking, one async (asyncio or trio).

A driver performs each effect a generator yields and sends the answer back. ``Detach`` ends inline driving:
the generator is handed to the client's background worker, and the driver returns `DETACHED`.
Clocks and the sync driver's sleep come from the environment, so tests run these drivers on a fake clock.

`Beside` drives steps (a heartbeat) next to the current task for as long as a block runs, starting a task only
when the steps first have something to do (see its docstring).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Generator
from types import TracebackType
from typing import Any, Final, TypeVar

import anyio
import attrs

from ._loop_timers import Alarm, timers_of
from ._protocol.effects import (
    Detach,
    JournalDelete,
    JournalQuarantine,
    JournalRelease,
    JournalWrite,
    Now,
    Send,
    Sent,
    SleepUntil,
    Steps,
    WallNow,
)
from ._protocol.requests import HttpRequest
from .response import CyclesResponse

__all__ = [
    "DETACHED",
    "AsyncEnv",
    "Beside",
    "Detached",
    "SyncEnv",
    "monotonic_ms",
    "resumed",
    "run_async",
    "run_async_inline",
    "run_sync",
    "run_sync_inline",
    "wall_ms",
]

T = TypeVar("T")
log = logging.getLogger("runcycles.lifecycle")


class Detached(enum.Enum):
    """The type of `DETACHED`."""

    DETACHED = "DETACHED"

    def __repr__(self) -> str:
        return "DETACHED"


DETACHED: Final = Detached.DETACHED
"""What a driver returns when the steps detached to the background worker (the result comes later)."""

def monotonic_ms() -> float:
    """The monotonic clock in milliseconds."""
    return time.monotonic() * 1000.0


def wall_ms() -> int:
    """The wall clock in epoch milliseconds."""
    return time.time_ns() // 1_000_000


@attrs.frozen(kw_only=True)
class SyncEnv:
    """What the blocking driver needs."""

    send: Callable[[HttpRequest, int | None], CyclesResponse]
    journal_write: Callable[[Any], None] | None = None
    journal_delete: Callable[[str], None] | None = None
    journal_release: Callable[[str], None] | None = None
    journal_quarantine: Callable[[JournalQuarantine], None] | None = None
    detach: Callable[[Steps[Any]], None] | None = None
    monotonic: Callable[[], float] = monotonic_ms
    wall: Callable[[], int] = wall_ms
    sleep: Callable[[float], None] = time.sleep
    """Blocks for the given seconds (a fake clock's sleep advances its ``monotonic``)."""


@attrs.frozen(kw_only=True)
class AsyncEnv:
    """What the async driver needs; blocking journal calls are run off the event loop.

    ``journal``, when set, performs every journal effect itself (awaitable; the answer is an error or None)
    instead of one thread hop per call to the blocking ``journal_*`` functions.
    """

    send: Callable[[HttpRequest, int | None], Awaitable[CyclesResponse]]
    journal: Callable[[object], Awaitable[BaseException | None]] | None = None
    journal_write: Callable[[Any], None] | None = None
    journal_delete: Callable[[str], None] | None = None
    journal_release: Callable[[str], None] | None = None
    journal_quarantine: Callable[[JournalQuarantine], None] | None = None
    detach: Callable[[Steps[Any]], None] | None = None
    monotonic: Callable[[], float] = monotonic_ms
    wall: Callable[[], int] = wall_ms


def _journal_call(fn: Callable[[Any], None] | None, arg: Any) -> BaseException | None:
    if fn is None:
        return None
    try:
        fn(arg)
    except Exception as exc:
        return exc
    return None


_JOURNAL_EFFECTS = (JournalWrite, JournalDelete, JournalRelease, JournalQuarantine)


def _journal_job(effect: object, env: SyncEnv | AsyncEnv) -> tuple[Callable[[Any], None] | None, Any] | None:
    """The blocking journal call an effect asks for (``None`` when it is not a journal effect)."""
    if isinstance(effect, JournalWrite):
        return env.journal_write, effect.record
    if isinstance(effect, JournalDelete):
        return env.journal_delete, effect.reservation_id
    if isinstance(effect, JournalRelease):
        return env.journal_release, effect.reservation_id
    if isinstance(effect, JournalQuarantine):
        return env.journal_quarantine, effect
    return None


def _clock(effect: object, env: SyncEnv | AsyncEnv) -> float | int:
    if isinstance(effect, Now):
        return env.monotonic()
    if isinstance(effect, WallNow):
        return env.wall()
    raise TypeError(f"unknown effect {effect!r}")  # pragma: no cover - a programming error


def run_sync(steps: Steps[T], env: SyncEnv) -> T | Detached:
    """Drive ``steps`` to completion (or to a ``Detach``) on this thread."""
    answer: Any = None
    while True:
        try:
            effect = steps.send(answer)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        answer = None
        if isinstance(effect, Send):
            sent_at = env.monotonic()
            response = env.send(effect.request, effect.deadline_ms)
            answer = Sent(response, sent_at, env.monotonic())
        elif isinstance(effect, SleepUntil):
            delay = (effect.at_ms - env.monotonic()) / 1000.0
            if delay > 0:
                env.sleep(delay)
        elif isinstance(effect, Detach):
            if env.detach is not None:
                env.detach(steps)
                return DETACHED
        elif (job := _journal_job(effect, env)) is not None:
            answer = _journal_call(*job)
        else:
            answer = _clock(effect, env)


async def run_async(steps: Steps[T], env: AsyncEnv, *, shielded: bool = False) -> T | Detached:
    """Drive ``steps`` to completion (or to a ``Detach``) in the current task.

    Journal effects are shielded from cancellation; ``shielded`` says the caller shields the whole run
    already (no second scope per journal effect then)."""
    answer: Any = None
    while True:
        try:
            effect = steps.send(answer)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        answer = None
        if isinstance(effect, Send):
            sent_at = env.monotonic()
            response = await env.send(effect.request, effect.deadline_ms)
            answer = Sent(response, sent_at, env.monotonic())
        elif isinstance(effect, SleepUntil):
            await anyio.sleep(max(0.0, (effect.at_ms - env.monotonic()) / 1000.0))
        elif isinstance(effect, Detach):
            if env.detach is not None:
                env.detach(steps)
                return DETACHED
        elif env.journal is not None and isinstance(effect, _JOURNAL_EFFECTS):
            if shielded:
                answer = await env.journal(effect)
            else:
                with anyio.CancelScope(shield=True):  # a half-done journal change would defeat the journal
                    answer = await env.journal(effect)
        elif (job := _journal_job(effect, env)) is not None:
            answer = await _off_loop(*job)
        else:
            answer = _clock(effect, env)


def run_sync_inline(steps: Steps[T], env: SyncEnv) -> T:
    """`run_sync` for steps that never detach (reserve, release): their result, typed without `DETACHED`."""
    result = run_sync(steps, env)
    if isinstance(result, Detached):
        raise AssertionError("these steps never detach")  # pragma: no cover - a programming error
    return result


async def run_async_inline(steps: Steps[T], env: AsyncEnv) -> T:
    """`run_async` for steps that never detach (reserve, release): their result, typed without `DETACHED`."""
    result = await run_async(steps, env)
    if isinstance(result, Detached):
        raise AssertionError("these steps never detach")  # pragma: no cover - a programming error
    return result


async def _off_loop(fn: Callable[[Any], None] | None, arg: Any) -> BaseException | None:
    if fn is None:
        return None
    # Shielded: a record half-written because the caller was cancelled would defeat the journal.
    with anyio.CancelScope(shield=True):
        result = await anyio.to_thread.run_sync(_journal_call, fn, arg)
    return result


class Beside:
    """Drive ``steps`` beside the current task while an ``async with`` block runs; nothing outlives the block.

    The generator is advanced to its first effect on entry. When that is a ``SleepUntil`` (a heartbeat's wait
    for its first beat) and the event loop is asyncio, no task is started: a loop timer starts one when the beat
    is due, so a call that ends before then costs a timer, not a task (a task started and cancelled costs about
    0.2 ms); that timer is an entry of the loop's shared `_loop_timers.LoopTimers`, not a loop timer of its own.
    When the timer fires, the generator is advanced past the wait; a further wait re-arms the timer.
    Otherwise (trio, or steps with work to do at once) a task group hosts the steps from the start.
    `cancel` stops the steps without waiting; leaving the block cancels them and waits until they have ended.
    An exception of the steps is logged (``what``) and never reaches the block; one of the block passes through
    unchanged.
    """

    def __init__(self, steps: Steps[Any], env: AsyncEnv, what: str = "background steps") -> None:
        self._steps: Steps[Any] | None = steps
        self._env = env
        self._what = what
        self._timer: Alarm | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._group: Any = None  # an anyio task group, when the steps run in one
        self._scope: anyio.CancelScope | None = None  # the steps' scope in that group
        self._first: object = None

    async def __aenter__(self) -> Beside:
        steps = self._steps
        assert steps is not None
        try:
            self._first = steps.send(None)
        except StopIteration:
            self._steps = None
            return self
        except Exception:
            self._steps = None
            log.exception("%s failed", self._what)
            return self
        loop = _asyncio_loop()
        if loop is not None and isinstance(self._first, SleepUntil):
            delay = max(0.0, (self._first.at_ms - self._env.monotonic()) / 1000.0)
            self._loop = loop
            self._timer = timers_of(loop).call_later(delay, self._due)
        elif loop is not None:
            self._start_task(loop)
        else:
            self._scope = anyio.CancelScope()  # the child's own: cancelling the group's would cancel the block
            self._group = anyio.create_task_group()
            await self._group.__aenter__()
            self._group.start_soon(self._drive_in_scope)
        return self

    async def _drive_in_scope(self) -> None:
        assert self._scope is not None
        with self._scope:
            await self._drive()

    def _due(self) -> None:
        loop = self._loop
        assert loop is not None
        self._timer = None
        steps = self._steps
        first = self._first
        if steps is not None and isinstance(first, SleepUntil):
            now = self._env.monotonic()
            if first.at_ms > now:  # the loop's clock ran a little ahead of ours
                self._timer = timers_of(loop).call_later((first.at_ms - now) / 1000.0, self._due)
                return
            # The wait is over: what comes next may be another wait (a deferred heartbeat's start, then its
            # first beat), which stays a timer too.
            try:
                effect = steps.send(None)
            except StopIteration:
                self._steps = None
                return
            except Exception:
                self._steps = None
                log.exception("%s failed", self._what)
                return
            self._first = effect
            if isinstance(effect, SleepUntil):
                delay = (effect.at_ms - self._env.monotonic()) / 1000.0
                if delay > 0:
                    self._timer = timers_of(loop).call_later(delay, self._due)
                    return
        self._start_task(loop)

    def _start_task(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        if self._steps is not None:
            self._task = loop.create_task(self._drive())

    async def _drive(self) -> None:
        steps = self._steps
        if steps is None:  # pragma: no cover - cancelled before the task ran
            return
        try:
            await run_async(resumed(self._first, steps), self._env)
        except Exception:
            log.exception("%s failed", self._what)

    def cancel(self) -> None:
        """Stop the steps (a task running them is cancelled; leaving the block waits for it to end)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            self._task.cancel()
        elif self._scope is not None:
            self._scope.cancel()
        elif self._steps is not None:
            steps, self._steps = self._steps, None
            steps.close()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cancel()
        task, group, steps = self._task, self._group, self._steps
        self._task = self._group = self._steps = None
        try:
            if task is not None:
                with anyio.CancelScope(shield=True):
                    await asyncio.wait((task,))
            elif group is not None:
                # Not shielded: a scope entered here would not nest around the group's own (entered earlier).
                await group.__aexit__(None, None, None)
        finally:
            if steps is not None:  # a task cancelled before it ever ran has not closed them
                steps.close()


_UNSET: Any = object()
_sniffio: Any = _UNSET


def _asyncio_loop() -> asyncio.AbstractEventLoop | None:
    """The running asyncio loop when the current task is an asyncio one (``None`` under trio)."""
    global _sniffio
    if _sniffio is _UNSET:
        try:
            import sniffio as _found
        except ImportError:  # not installed (see runcycles._sniffio): anyio 4 then has asyncio only
            _sniffio = None
        else:
            _sniffio = _found
    if _sniffio is not None:
        try:
            if _sniffio.current_async_library() != "asyncio":
                return None
        except _sniffio.AsyncLibraryNotFoundError:  # pragma: no cover - only ever called from async code
            return None
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # pragma: no cover - as above
        return None


def resumed(first: object, steps: Steps[T]) -> Generator[Any, Any, T]:
    """``steps`` again from its already-yielded effect ``first``."""
    try:
        answer = yield first
        while True:
            try:
                effect = steps.send(answer)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            answer = yield effect
    finally:
        steps.close()
