"""The step drivers the integrations write their sync/async twins with (runcycles.integrations._steps): a hook
written once behaves the same driven with a sync client (calls return results) and an async one (calls return
awaitables)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from runcycles.integrations._steps import Steps, drive, drive_async


class Handle:
    """A reservation handle of either flavour: ``commit`` returns its result, or an awaitable of it."""

    def __init__(self, *, is_async: bool, fail_on: tuple[int, ...] = ()) -> None:
        self.is_async = is_async
        self.fail_on = fail_on
        self.calls: list[int] = []

    def commit(self, amount: int) -> Any:
        def run() -> int:
            self.calls.append(amount)
            if amount in self.fail_on:
                raise RuntimeError("server said no")
            return amount * 2

        if not self.is_async:
            return run()

        async def awaitable() -> int:
            return run()

        return awaitable()


def hook(handle: Handle, seen: list[Any]) -> Steps[None]:
    """Two calls; an error of the second is caught around its ``yield``; ``finally`` always runs."""
    try:
        seen.append((yield handle.commit(1)))
        try:
            seen.append((yield handle.commit(2)))
        except RuntimeError as exc:
            seen.append(f"caught {exc}")
    finally:
        seen.append("finally")


async def run(flavour: str, steps: Callable[[Handle, list[Any]], Steps[None]] = hook, **handle_options: Any
              ) -> tuple[Handle, list[Any]]:
    handle = Handle(is_async=flavour == "async", **handle_options)
    seen: list[Any] = []
    if flavour == "async":
        await drive_async(steps(handle, seen))
    else:
        drive(steps(handle, seen))
    return handle, seen


@pytest.mark.anyio
@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_results_are_sent_back(flavour: str) -> None:
    handle, seen = await run(flavour)
    assert (handle.calls, seen) == ([1, 2], [2, 4, "finally"])


@pytest.mark.anyio
@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_an_error_lands_at_its_yield(flavour: str) -> None:
    handle, seen = await run(flavour, fail_on=(2,))
    assert (handle.calls, seen) == ([1, 2], [2, "caught server said no", "finally"])


@pytest.mark.anyio
@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_an_error_not_caught_propagates_after_finally(flavour: str) -> None:
    seen: list[Any] = []

    def recorded(handle: Handle, _: list[Any]) -> Steps[None]:
        return hook(handle, seen)

    with pytest.raises(RuntimeError, match="server said no"):
        await run(flavour, recorded, fail_on=(1,))
    assert seen == ["finally"]


@pytest.mark.anyio
@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_a_hook_without_calls_just_runs(flavour: str) -> None:
    def nothing(handle: Handle, seen: list[Any]) -> Steps[None]:
        seen.append("ran")
        return
        yield  # pragma: no cover

    _, seen = await run(flavour, nothing)
    assert seen == ["ran"]
