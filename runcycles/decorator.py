"""`with_cycles`: reserve before a function runs, keep the lease alive while it runs, settle after."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, ParamSpec, TypeVar, cast

import anyio

from . import _runtime
from ._defaults import resolve_client
from ._drivers import run_async, run_sync
from ._guard import Guard, options_from
from .client import AsyncCyclesClient, CyclesClient
from .context import bind
from .lifecycle import Reserved, release_steps, reserve_steps, settle_steps
from .models import CommitOveragePolicy, DryRunResult, Unit

__all__ = ["with_cycles"]

P = ParamSpec("P")
R = TypeVar("R")

FAILED_REASON = "guarded_method_failed"


def with_cycles(
    estimate: int | Callable[..., int],
    actual: int | Callable[[Any], int] | None = None,
    use_estimate_if_actual_not_provided: bool = True,
    action_kind: str | Callable[..., str] = "unknown",
    action_name: str | Callable[..., str] = "unknown",
    action_tags: list[str] | Callable[..., list[str]] | None = None,
    unit: Unit | str = Unit.USD_MICROCENTS,
    ttl_ms: int = 60000,
    grace_period_ms: int | None = None,
    overage_policy: CommitOveragePolicy | str = CommitOveragePolicy.ALLOW_IF_AVAILABLE,
    dry_run: bool = False,
    tenant: str | Callable[..., str | None] | None = None,
    workspace: str | Callable[..., str | None] | None = None,
    app: str | Callable[..., str | None] | None = None,
    workflow: str | Callable[..., str | None] | None = None,
    agent: str | Callable[..., str | None] | None = None,
    toolset: str | Callable[..., str | None] | None = None,
    dimensions: Mapping[str, str] | Callable[..., Mapping[str, str] | None] | None = None,
    metadata: Mapping[str, Any] | None = None,
    client: CyclesClient | AsyncCyclesClient | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Guard a function (``async def`` or plain ``def``) with a Cycles reservation.

    Per call: evaluate ``estimate`` (an int, or a callable of the call's arguments) → reserve (one same-key
    retry when the outcome is unknown) → with ``dry_run``, return a `DryRunResult` without calling the
    function → otherwise run it inside a `CyclesContext` while a heartbeat keeps the lease alive → if it
    raises, release the reservation and re-raise → if it returns, commit the actual (``actual`` of the
    result, else the estimate marked ``actual_source="estimate"``) and return its result. Nothing after the
    function returned raises into the caller: settlement problems are retried in the background and logged.

    A denial raises the typed error (`BudgetExceededError`, …); the function is then never called. With
    ``dry_run=True`` the wrapper returns a `DryRunResult` instead of the function's result.
    """
    options = options_from(locals())
    guard = Guard(options)

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError(
                f"with_cycles cannot guard the generator function {fn.__qualname__!r}: its work happens after it "
                "returns. Use reserve_for_stream(...) around the iteration instead."
            )
        if inspect.iscoroutinefunction(fn):
            return cast(Callable[P, R], _async_wrapper(guard, cast(Callable[P, Awaitable[Any]], fn), client))
        return _sync_wrapper(guard, fn, client)

    return decorate


class _ClientSlot:
    """The wrapper's client: resolved at its first call, then kept."""

    def __init__(self, explicit: CyclesClient | AsyncCyclesClient | None, *, want_async: bool) -> None:
        self._explicit = explicit
        self._want_async = want_async
        self._client: CyclesClient | AsyncCyclesClient | None = None

    def get(self) -> Any:
        if self._client is None:
            self._client = resolve_client(self._explicit, want_async=self._want_async)
        return self._client


def _sync_wrapper(
    guard: Guard, fn: Callable[P, R], explicit: CyclesClient | AsyncCyclesClient | None
) -> Callable[P, R]:
    slot = _ClientSlot(explicit, want_async=False)

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        client: CyclesClient = slot.get()
        runtime = _runtime.of(client)
        request = guard.plan(client.config, args, kwargs)
        reserved = run_sync(reserve_steps(request), runtime.sync_env())
        if isinstance(reserved, DryRunResult):
            return cast(R, reserved)
        if reserved.reservation_id is None:
            return fn(*args, **kwargs)
        context = guard.context(reserved)
        heartbeat = runtime.start_sync_heartbeat(reserved, context)
        try:
            with bind(context):
                result = fn(*args, **kwargs)
        except BaseException:
            heartbeat.cancel()
            run_sync(release_steps(reserved.reservation_id, FAILED_REASON), runtime.sync_env())
            raise
        heartbeat.cancel()
        _settle_sync(guard, runtime, reserved, context, result)
        return result

    return wrapper


def _settle_sync(guard: Guard, runtime: _runtime.Runtime, reserved: Reserved, context: Any, result: Any) -> None:
    try:
        record = guard.settlement(
            reserved, context, result=result, actual=guard.options.actual,
            elapsed_ms=runtime.monotonic() - reserved.received_at_ms,
        )
        run_sync(settle_steps(record, runtime.policy, journal=runtime.journal_enabled), runtime.sync_env())
    except Exception:
        _runtime.log.exception(
            "post-action settlement failed; not releasing known spend: reservation_id=%s", reserved.reservation_id
        )


def _async_wrapper(
    guard: Guard, fn: Callable[P, Awaitable[Any]], explicit: CyclesClient | AsyncCyclesClient | None
) -> Callable[P, Coroutine[Any, Any, Any]]:
    slot = _ClientSlot(explicit, want_async=True)

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
        client: AsyncCyclesClient = slot.get()
        runtime = _runtime.of(client)
        request = guard.plan(client.config, args, kwargs)
        env = runtime.async_env()
        reserved = await run_async(reserve_steps(request), env)
        if isinstance(reserved, DryRunResult):
            return reserved
        if reserved.reservation_id is None:
            return await fn(*args, **kwargs)
        context = guard.context(reserved)
        failure: BaseException | None = None
        result: Any = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(runtime.run_async_heartbeat, reserved, context)
            try:
                with bind(context):
                    result = await fn(*args, **kwargs)
            except BaseException as exc:  # re-raised below, after the heartbeat has stopped
                failure = exc
                tg.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    await run_async(release_steps(reserved.reservation_id, FAILED_REASON), env)
            else:
                tg.cancel_scope.cancel()
        if failure is not None:
            raise failure
        with anyio.CancelScope(shield=True):
            try:
                record = guard.settlement(
                    reserved, context, result=result, actual=guard.options.actual,
                    elapsed_ms=runtime.monotonic() - reserved.received_at_ms,
                )
                await run_async(settle_steps(record, runtime.policy, journal=runtime.journal_enabled), env)
            except Exception:
                _runtime.log.exception(
                    "post-action settlement failed; not releasing known spend: reservation_id=%s",
                    reserved.reservation_id,
                )
        return result

    return wrapper

