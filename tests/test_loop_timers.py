"""`LoopTimers`: many alarms of one asyncio loop behind one loop timer (asyncio only: trio has no such heap)."""

from __future__ import annotations

import asyncio
from typing import Any

from runcycles._loop_timers import timers_of


def _run(main: Any) -> Any:
    return asyncio.run(main())


def test_alarms_fire_in_due_order_and_a_cancelled_one_never_fires() -> None:
    async def main() -> list[str]:
        fired: list[str] = []
        timers = timers_of(asyncio.get_running_loop())
        timers.call_later(0.03, lambda: fired.append("late"))
        timers.call_later(0.01, lambda: fired.append("early"))
        timers.call_later(0.02, lambda: fired.append("cancelled")).cancel()
        timers.call_later(0.01, lambda: fired.append("early too"))
        await asyncio.sleep(0.1)
        return fired

    assert _run(main) == ["early", "early too", "late"]


def test_the_loop_holds_one_timer_for_many_alarms_and_cancelled_ones_are_purged() -> None:
    async def main() -> tuple[int, int, int]:
        loop = asyncio.get_running_loop()
        timers = timers_of(loop)
        before = len(loop._scheduled)  # type: ignore[attr-defined]
        alarms = [timers.call_later(30 + i / 1000, lambda: None) for i in range(200)]
        armed = len(loop._scheduled) - before  # type: ignore[attr-defined]
        for alarm in alarms:
            alarm.cancel()
            alarm.cancel()  # idempotent
        return armed, len(timers), len([h for h in loop._scheduled if not h.cancelled()])  # type: ignore[attr-defined]

    armed, left, live = _run(main)
    assert armed == 1  # later alarms never re-arm the loop
    assert left < 100  # purged once most of them were cancelled
    assert live <= 1  # at most the one loop timer (it finds nothing to run when it fires)


def test_an_earlier_alarm_re_arms_and_a_callback_may_cancel_another() -> None:
    async def main() -> list[str]:
        fired: list[str] = []
        timers = timers_of(asyncio.get_running_loop())
        timers.call_later(10, lambda: fired.append("never"))
        victim = timers.call_later(0.02, lambda: fired.append("victim"))
        timers.call_later(0.02, victim.cancel)  # same due time, scheduled later: victim runs first
        other = timers.call_later(0.02, lambda: fired.append("other"))
        timers.call_later(0.01, other.cancel)
        await asyncio.sleep(0.06)
        return fired

    assert _run(main) == ["victim"]


def test_a_failing_callback_is_reported_and_the_next_alarms_still_fire() -> None:
    async def main() -> tuple[list[str], list[dict[str, Any]]]:
        loop = asyncio.get_running_loop()
        reported: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: reported.append(context))
        fired: list[str] = []
        timers = timers_of(loop)

        def broken() -> None:
            raise RuntimeError("alarm broke")

        timers.call_later(0.01, broken)
        timers.call_later(0.01, lambda: fired.append("next"))
        timers.call_later(0.03, lambda: fired.append("later"))
        await asyncio.sleep(0.08)
        return fired, reported

    fired, reported = _run(main)
    assert fired == ["next", "later"]
    assert [str(context["exception"]) for context in reported] == ["alarm broke"]


def test_each_loop_has_its_own_timers() -> None:
    async def main() -> object:
        return timers_of(asyncio.get_running_loop())

    assert _run(main) is not _run(main)
