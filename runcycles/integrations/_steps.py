"""One implementation for both flavours: a hook written as a generator of the calls it makes.

A step generator yields what each call on a Cycles client, a reservation handle or a framework's handler
returned, and is sent back its result. With a sync client that value already is the result, so `drive` sends
it straight back; with an async client it is an awaitable, which `drive_async` awaits first. An error the
awaitable raises is thrown back in at the ``yield``, so a ``try``/``except`` around a ``yield`` works the same
in both flavours.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, TypeVar

__all__ = ["Steps", "drive", "drive_async"]

T = TypeVar("T")

Steps = Generator[Any, Any, T]
"""Calls yielded, their results sent back; returns the hook's result."""


def drive(steps: Steps[T]) -> T:
    """Run ``steps`` with a sync client: each yielded value is already the call's result."""
    result = None
    try:
        while True:
            result = steps.send(result)
    except StopIteration as stop:
        value: T = stop.value
        return value


async def drive_async(steps: Steps[T]) -> T:
    """Run ``steps`` with an async client: each yielded awaitable is awaited and its result (or error) sent back."""
    try:
        pending = next(steps)
        while True:
            try:
                result = await pending
            except BaseException as exc:
                pending = steps.throw(exc)
            else:
                pending = steps.send(result)
    except StopIteration as stop:
        value: T = stop.value
        return value
