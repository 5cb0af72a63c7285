"""`with_cycles`: reserve before a function runs, keep the lease alive while it runs, settle after."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar, cast, overload

import anyio

from . import _runtime
from ._drivers import run_async, run_async_inline, run_sync, run_sync_inline
from ._guard import Guard, options_from
from ._lifecycle import Reserved, release_steps, reserve_steps
from .client import AsyncCyclesClient, CyclesClient
from .context import CyclesContext, bind
from .defaults import resolve_client
from .errors import MissingActualError
from .models import CommitOveragePolicy, DryRunResult, Unit

if TYPE_CHECKING:
    from ._decorator_types import CyclesDecorator, DryRunDecorator, TypedCyclesDecorator

__all__ = ["ClientOption", "with_cycles"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

FAILED_REASON = "guarded_method_failed"

ClientOption = CyclesClient | AsyncCyclesClient | Callable[..., CyclesClient | AsyncCyclesClient] | None
"""What ``client=`` accepts: a client, a callable of the call's arguments returning one (resolved per call,
never cached: one guarded function can serve many tenants), or ``None`` (the default client, then the
default config, then ``CYCLES_*`` from the environment)."""

@overload
def with_cycles(
    estimate: int | Callable[..., int],
    actual: int | Callable[[Any], int] | None = None,
    *,
    use_estimate_if_actual_not_provided: bool = True,
    action_kind: str | Callable[..., str] = "unknown",
    action_name: str | Callable[..., str] = "unknown",
    action_tags: list[str] | Callable[..., list[str]] | None = None,
    unit: Unit | str = Unit.USD_MICROCENTS,
    ttl_ms: int = 60000,
    grace_period_ms: int | None = None,
    overage_policy: CommitOveragePolicy | str = CommitOveragePolicy.ALLOW_IF_AVAILABLE,
    dry_run: Literal[True],
    tenant: str | Callable[..., str | None] | None = None,
    workspace: str | Callable[..., str | None] | None = None,
    app: str | Callable[..., str | None] | None = None,
    workflow: str | Callable[..., str | None] | None = None,
    agent: str | Callable[..., str | None] | None = None,
    toolset: str | Callable[..., str | None] | None = None,
    dimensions: Mapping[str, str] | Callable[..., Mapping[str, str] | None] | None = None,
    metadata: Mapping[str, Any] | None = None,
    client: ClientOption = None,
) -> DryRunDecorator: ...


@overload
def with_cycles(
    estimate: int | Callable[..., int],
    actual: int | None = None,
    *,
    use_estimate_if_actual_not_provided: bool = True,
    action_kind: str | Callable[..., str] = "unknown",
    action_name: str | Callable[..., str] = "unknown",
    action_tags: list[str] | Callable[..., list[str]] | None = None,
    unit: Unit | str = Unit.USD_MICROCENTS,
    ttl_ms: int = 60000,
    grace_period_ms: int | None = None,
    overage_policy: CommitOveragePolicy | str = CommitOveragePolicy.ALLOW_IF_AVAILABLE,
    dry_run: Literal[False] = False,
    tenant: str | Callable[..., str | None] | None = None,
    workspace: str | Callable[..., str | None] | None = None,
    app: str | Callable[..., str | None] | None = None,
    workflow: str | Callable[..., str | None] | None = None,
    agent: str | Callable[..., str | None] | None = None,
    toolset: str | Callable[..., str | None] | None = None,
    dimensions: Mapping[str, str] | Callable[..., Mapping[str, str] | None] | None = None,
    metadata: Mapping[str, Any] | None = None,
    client: ClientOption = None,
) -> CyclesDecorator: ...


@overload
def with_cycles(
    estimate: int | Callable[..., int],
    actual: Callable[[T], int],
    *,
    use_estimate_if_actual_not_provided: bool = True,
    action_kind: str | Callable[..., str] = "unknown",
    action_name: str | Callable[..., str] = "unknown",
    action_tags: list[str] | Callable[..., list[str]] | None = None,
    unit: Unit | str = Unit.USD_MICROCENTS,
    ttl_ms: int = 60000,
    grace_period_ms: int | None = None,
    overage_policy: CommitOveragePolicy | str = CommitOveragePolicy.ALLOW_IF_AVAILABLE,
    dry_run: Literal[False] = False,
    tenant: str | Callable[..., str | None] | None = None,
    workspace: str | Callable[..., str | None] | None = None,
    app: str | Callable[..., str | None] | None = None,
    workflow: str | Callable[..., str | None] | None = None,
    agent: str | Callable[..., str | None] | None = None,
    toolset: str | Callable[..., str | None] | None = None,
    dimensions: Mapping[str, str] | Callable[..., Mapping[str, str] | None] | None = None,
    metadata: Mapping[str, Any] | None = None,
    client: ClientOption = None,
) -> TypedCyclesDecorator[T]: ...


@overload
def with_cycles(
    estimate: int | Callable[..., int],
    actual: Callable[[Any], int],
    *,
    use_estimate_if_actual_not_provided: bool = True,
    action_kind: str | Callable[..., str] = "unknown",
    action_name: str | Callable[..., str] = "unknown",
    action_tags: list[str] | Callable[..., list[str]] | None = None,
    unit: Unit | str = Unit.USD_MICROCENTS,
    ttl_ms: int = 60000,
    grace_period_ms: int | None = None,
    overage_policy: CommitOveragePolicy | str = CommitOveragePolicy.ALLOW_IF_AVAILABLE,
    dry_run: Literal[False] = False,
    tenant: str | Callable[..., str | None] | None = None,
    workspace: str | Callable[..., str | None] | None = None,
    app: str | Callable[..., str | None] | None = None,
    workflow: str | Callable[..., str | None] | None = None,
    agent: str | Callable[..., str | None] | None = None,
    toolset: str | Callable[..., str | None] | None = None,
    dimensions: Mapping[str, str] | Callable[..., Mapping[str, str] | None] | None = None,
    metadata: Mapping[str, Any] | None = None,
    client: ClientOption = None,
) -> CyclesDecorator: ...


@overload
def with_cycles(
    estimate: int | Callable[..., int],
    actual: int | Callable[[Any], int] | None = None,
    *,
    use_estimate_if_actual_not_provided: bool = True,
    action_kind: str | Callable[..., str] = "unknown",
    action_name: str | Callable[..., str] = "unknown",
    action_tags: list[str] | Callable[..., list[str]] | None = None,
    unit: Unit | str = Unit.USD_MICROCENTS,
    ttl_ms: int = 60000,
    grace_period_ms: int | None = None,
    overage_policy: CommitOveragePolicy | str = CommitOveragePolicy.ALLOW_IF_AVAILABLE,
    dry_run: bool,
    tenant: str | Callable[..., str | None] | None = None,
    workspace: str | Callable[..., str | None] | None = None,
    app: str | Callable[..., str | None] | None = None,
    workflow: str | Callable[..., str | None] | None = None,
    agent: str | Callable[..., str | None] | None = None,
    toolset: str | Callable[..., str | None] | None = None,
    dimensions: Mapping[str, str] | Callable[..., Mapping[str, str] | None] | None = None,
    metadata: Mapping[str, Any] | None = None,
    client: ClientOption = None,
) -> Callable[[Callable[P, Any]], Callable[P, Any]]: ...


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
    client: ClientOption = None,
) -> Any:
    """Guard a function (``async def`` or plain ``def``) with a Cycles reservation.

    Per call: evaluate ``estimate`` (an int, or a callable of the call's arguments) → reserve (one same-key
    retry when the outcome is unknown) → with ``dry_run``, return a `DryRunResult` without calling the
    function → otherwise run it inside a `CyclesContext` while a heartbeat keeps the lease alive → if it
    raises, commit ``CyclesContext.actual`` when the function set it (spend that happened is never lost),
    else release the reservation, and re-raise → if it returns, commit the actual (``actual`` of the result,
    else ``CyclesContext.actual``, else the estimate marked ``actual_source="estimate"``) and return its
    result. Settlement problems after the function returned are retried in the background and logged, never
    raised; the one exception is a missing actual with ``use_estimate_if_actual_not_provided=False``, which
    commits nothing, releases nothing and raises `MissingActualError` (carrying the function's ``result``).

    ``client`` may be a callable of the call's arguments returning the client (resolved on every call).
    A denial raises the typed error (`BudgetExceededError`, …); the function is then never called.
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
    """The wrapper's client: a fixed one is resolved at the first call, then kept; a callable is asked on
    every call (with the call's arguments) and never cached."""

    def __init__(self, explicit: ClientOption, *, want_async: bool) -> None:
        self._per_call = callable(explicit) and not isinstance(explicit, (CyclesClient, AsyncCyclesClient))
        self._explicit = explicit
        self._want_async = want_async
        self._client: CyclesClient | AsyncCyclesClient | None = None

    def get(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        if self._per_call:
            factory = cast(Callable[..., Any], self._explicit)
            return resolve_client(factory(*args, **kwargs), want_async=self._want_async, required=True)
        if self._client is None:
            self._client = resolve_client(self._explicit, want_async=self._want_async)
        return self._client


def _sync_wrapper(guard: Guard, fn: Callable[P, R], explicit: ClientOption) -> Callable[P, R]:
    slot = _ClientSlot(explicit, want_async=False)

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        client: CyclesClient = slot.get(args, kwargs)
        runtime = _runtime.for_sync_call(client)
        request, http = guard.plan_create(client.config, args, kwargs)
        reserved = run_sync_inline(reserve_steps(request, http), runtime.sync_env())
        if isinstance(reserved, DryRunResult):
            return cast(R, reserved)
        if reserved.reservation_id is None:
            return fn(*args, **kwargs)
        context = guard.context(reserved)
        heartbeat = runtime.worker_heartbeat(reserved, context)
        try:
            with bind(context):
                result = fn(*args, **kwargs)
        except BaseException:
            heartbeat.stop()
            if context.actual is not None:  # spend the function recorded before it failed: commit it
                _settle_sync(guard, runtime, reserved, context, None, None)
            else:
                run_sync(release_steps(reserved.reservation_id, FAILED_REASON), runtime.sync_env())
            raise
        heartbeat.stop()
        _settle_sync(guard, runtime, reserved, context, result, guard.options.actual)
        return result

    return wrapper


def _settle_sync(
    guard: Guard,
    runtime: _runtime.Runtime,
    reserved: Reserved,
    context: CyclesContext,
    result: Any,
    actual: int | Callable[[Any], int] | None,
) -> None:
    try:
        record = guard.settlement(
            reserved, context, result=result, actual=actual,
            elapsed_ms=runtime.monotonic() - reserved.received_at_ms,
        )
        run_sync(runtime.settle_steps(record), runtime.sync_env())
    except MissingActualError:
        raise
    except Exception:
        _runtime.log.exception(
            "post-action settlement failed; not releasing known spend: reservation_id=%s", reserved.reservation_id
        )


async def _settle_async(
    guard: Guard,
    runtime: _runtime.Runtime,
    reserved: Reserved,
    context: CyclesContext,
    result: Any,
    actual: int | Callable[[Any], int] | None,
) -> None:
    with anyio.CancelScope(shield=True):
        try:
            record = guard.settlement(
                reserved, context, result=result, actual=actual,
                elapsed_ms=runtime.monotonic() - reserved.received_at_ms,
            )
            await run_async(runtime.settle_steps(record), runtime.async_env(), shielded=True)
        except MissingActualError:
            raise
        except Exception:
            _runtime.log.exception(
                "post-action settlement failed; not releasing known spend: reservation_id=%s",
                reserved.reservation_id,
            )


def _async_wrapper(
    guard: Guard, fn: Callable[P, Awaitable[Any]], explicit: ClientOption
) -> Callable[P, Coroutine[Any, Any, Any]]:
    slot = _ClientSlot(explicit, want_async=True)

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
        client: AsyncCyclesClient = slot.get(args, kwargs)
        runtime = await _runtime.for_async_call(client)
        request, http = guard.plan_create(client.config, args, kwargs)
        env = runtime.async_env()
        reserved = await run_async_inline(reserve_steps(request, http), env)
        if isinstance(reserved, DryRunResult):
            return reserved
        if reserved.reservation_id is None:
            return await fn(*args, **kwargs)
        context = guard.context(reserved)
        failure: BaseException | None = None
        result: Any = None
        async with runtime.scoped_heartbeat(reserved, context) as heartbeat:
            try:
                with bind(context):
                    result = await fn(*args, **kwargs)
            except BaseException as exc:  # re-raised below, after the heartbeat has stopped
                failure = exc
                heartbeat.stop()
                if context.actual is not None:  # spend the function recorded before it failed: commit it
                    await _settle_async(guard, runtime, reserved, context, None, None)
                else:
                    with anyio.CancelScope(shield=True):
                        await run_async(release_steps(reserved.reservation_id, FAILED_REASON), env)
            else:
                heartbeat.stop()
        if failure is not None:
            raise failure
        await _settle_async(guard, runtime, reserved, context, result, guard.options.actual)
        return result

    return wrapper
