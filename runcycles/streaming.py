"""`reserve_for_stream`: a reservation handle for work whose cost is known only as it streams.

``async with reserve_for_stream(...) as stream`` (or ``with`` on a sync `CyclesClient`) reserves on entry and
settles on exit; ``stream = await reserve_for_stream(...)`` hands the caller the commit/release. Terminal calls
are once-only: the first wins, under a lock, before any request is sent.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Mapping
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, overload

import anyio

from . import _runtime
from ._drivers import DETACHED, Detached, run_async, run_async_inline, run_sync, run_sync_inline
from ._guard import Guard, options_from
from ._heartbeat_placement import Heartbeat, ScopedHeartbeat, no_heartbeat
from ._journal import JournalRecord
from ._lifecycle import Reserved, Settlement, release_steps, reserve_steps
from ._protocol.effects import Steps
from ._protocol.states import SettlementState, StrState
from .client import AsyncCyclesClient, CyclesClient
from .context import CyclesContext, bind
from .defaults import resolve_client
from .errors import CyclesError
from .models import Caps, CommitOveragePolicy, CyclesMetrics, Decision, DryRunResult, Unit
from .validation import validate_amount

__all__ = [
    "AsyncStreamReservation",
    "AsyncStreamStarter",
    "StreamReservation",
    "StreamStarter",
    "SyncStreamStarter",
    "reserve_for_stream",
]

STREAM_FAILED = "stream_failed"
STREAM_RELEASED = "stream_released"


class _ExitPlan(StrState):
    """What leaving a stream block does."""

    NONE = "none"
    COMMIT = "commit"
    RELEASE = "release"


class _Handle:
    """State shared by the sync and async handles: once-only finalization and the settlement record.

    Slotted: assigning an attribute the handle does not have (``stream.actul = 5``) raises ``AttributeError``.
    """

    __slots__ = ("_context", "_finalized", "_guard", "_heartbeat", "_lock", "_reserved", "_runtime")

    def __init__(self, guard: Guard, runtime: _runtime.Runtime, reserved: Reserved) -> None:
        self._guard = guard
        self._runtime = runtime
        self._reserved = reserved
        self._context = Guard.context(reserved)
        self._lock = threading.Lock()
        self._finalized = False
        self._heartbeat: Heartbeat = no_heartbeat

    def _beat_on_worker(self) -> None:
        """Start the heartbeat on the client's worker scheduler (a handle without a scope of its own)."""
        self._heartbeat = self._runtime.worker_heartbeat(self._reserved, self._context)

    def _beat_in_scope(self) -> ScopedHeartbeat:
        """The heartbeat as a child task of a task group spanning a block: ``async with`` the result."""
        heartbeat = self._heartbeat = self._runtime.scoped_heartbeat(self._reserved, self._context)
        return heartbeat

    @property
    def actual(self) -> int | None:
        """Usage recorded so far; committed on exit when set (also when the block raises).

        Assigning anything but an ``int >= 0`` (or ``None``) raises ``ValueError`` naming ``actual``."""
        return self._context.actual

    @actual.setter
    def actual(self, value: int | None) -> None:
        self._context.actual = value

    @property
    def reservation_id(self) -> str:
        """The server's reservation id."""
        return self._context.reservation_id

    @property
    def decision(self) -> Decision | str:
        """``ALLOW`` or ``ALLOW_WITH_CAPS``."""
        return self._context.decision

    @property
    def caps(self) -> Caps | None:
        """The caps of an ``ALLOW_WITH_CAPS`` decision."""
        return self._context.caps

    @property
    def expires_at_ms(self) -> int | None:
        """The lease's current expiry (kept current by the heartbeat)."""
        return self._context.expires_at_ms

    @property
    def context(self) -> CyclesContext:
        """The reservation's `CyclesContext`."""
        return self._context

    @property
    def metrics(self) -> CyclesMetrics | None:
        """Metrics sent with the commit (settable during the stream)."""
        return self._context.metrics

    @metrics.setter
    def metrics(self, value: CyclesMetrics | None) -> None:
        self._context.metrics = value

    @property
    def finalized(self) -> bool:
        """True once commit, release or dispose has been called."""
        return self._finalized

    def _finalize(self) -> bool:
        """Claim the one terminal call; False when another already happened."""
        with self._lock:
            if self._finalized:
                return False
            self._finalized = True
        self._heartbeat.stop()
        return True

    def _record(
        self, actual: int | None, metrics: CyclesMetrics | None, metadata: Mapping[str, object] | None
    ) -> JournalRecord:
        return self._guard.settlement(
            self._reserved,
            self._context,
            actual=actual,
            elapsed_ms=self._runtime.monotonic() - self._reserved.received_at_ms,
            metrics=metrics,
            metadata=metadata,
        )

    def _settle_steps(
        self, actual: int | None, metrics: CyclesMetrics | None, metadata: Mapping[str, object] | None
    ) -> Steps[Settlement]:
        return self._runtime.settle_steps(self._record(actual, metrics, metadata))

    @staticmethod
    def _check(outcome: Settlement | Detached) -> None:
        if outcome is DETACHED:
            return
        if outcome.state is SettlementState.REJECTED and outcome.error is not None:
            raise outcome.error

    def _commit_detached(self, actual: int, metrics: CyclesMetrics | None = None) -> bool:
        """Commit from a place that must not block or await (a finalizer): claim the terminal call and hand
        the settlement to the client's background worker. False when the handle was already finalized."""
        validate_amount("actual", actual)
        if not self._finalize():
            return False
        self._runtime.worker.submit(self._settle_steps(actual, metrics, None))
        return True

    def _already(self) -> CyclesError:
        return CyclesError("StreamReservation already finalized")

    def _exit_plan(self, failed: bool) -> _ExitPlan:
        if self._finalized:
            return _ExitPlan.NONE
        if self.actual is not None or not failed:
            return _ExitPlan.COMMIT  # without an actual and without the estimate fallback: MissingActualError
        return _ExitPlan.RELEASE


class AsyncStreamReservation(_Handle):
    """The async stream handle (from an `AsyncCyclesClient`)."""

    __slots__ = ()

    async def commit(
        self, actual: int, metrics: CyclesMetrics | None = None, metadata: Mapping[str, object] | None = None
    ) -> None:
        """Commit ``actual`` (once). An understood rejection raises the typed `CyclesProtocolError`; a
        transient failure returns normally and settles in the background (``client.flush()`` waits for it).
        An invalid ``actual`` raises ``ValueError`` and leaves the handle open."""
        validate_amount("actual", actual)
        if not self._finalize():
            raise self._already()
        with anyio.CancelScope(shield=True):
            outcome = await run_async(
                self._settle_steps(actual, metrics, metadata), self._runtime.async_env(), shielded=True
            )
        self._check(outcome)

    async def release(self, reason: str | None = None) -> None:
        """Release the reservation (no-op once finalized)."""
        if self._finalize():
            with anyio.CancelScope(shield=True):
                await run_async(
                    release_steps(self.reservation_id, reason or STREAM_RELEASED), self._runtime.async_env()
                )

    def dispose(self) -> None:
        """Stop the heartbeat and forget the reservation (it expires on its own); no-op once finalized."""
        self._finalize()

    async def _exit(self, failed: bool) -> None:
        plan = self._exit_plan(failed)
        if plan is _ExitPlan.COMMIT:
            if self._finalize():
                with anyio.CancelScope(shield=True):
                    outcome = await run_async(
                        self._settle_steps(self.actual, None, None), self._runtime.async_env(), shielded=True
                    )
                if not failed:
                    self._check(outcome)
        elif plan is _ExitPlan.RELEASE:
            await self.release(STREAM_FAILED)


class StreamReservation(_Handle):
    """The sync stream handle (from a `CyclesClient`)."""

    __slots__ = ()

    def commit(
        self, actual: int, metrics: CyclesMetrics | None = None, metadata: Mapping[str, object] | None = None
    ) -> None:
        """Commit ``actual`` (once); see `AsyncStreamReservation.commit`."""
        validate_amount("actual", actual)
        if not self._finalize():
            raise self._already()
        outcome = run_sync(self._settle_steps(actual, metrics, metadata), self._runtime.sync_env())
        self._check(outcome)

    def release(self, reason: str | None = None) -> None:
        """Release the reservation (no-op once finalized)."""
        if self._finalize():
            run_sync(release_steps(self.reservation_id, reason or STREAM_RELEASED), self._runtime.sync_env())

    def dispose(self) -> None:
        """Stop the heartbeat and forget the reservation (it expires on its own); no-op once finalized."""
        self._finalize()

    def _exit(self, failed: bool) -> None:
        plan = self._exit_plan(failed)
        if plan is _ExitPlan.COMMIT:
            if self._finalize():
                outcome = run_sync(self._settle_steps(self.actual, None, None), self._runtime.sync_env())
                if not failed:
                    self._check(outcome)
        elif plan is _ExitPlan.RELEASE:
            self.release(STREAM_FAILED)


class AsyncStreamStarter:
    """What `reserve_for_stream` returns for an `AsyncCyclesClient`: ``async with`` it (or ``await`` it) to
    get an `AsyncStreamReservation`.

    Inside ``async with``, the heartbeat is a child task of a task group spanning the block; a handle obtained
    by ``await`` has no block, so its heartbeat runs on the client's background worker until its terminal call
    (commit, release or dispose) or the client's close."""

    def __init__(self, guard: Guard, client: CyclesClient | AsyncCyclesClient | None) -> None:
        self._guard = guard
        self._client = client
        self._handle: _Handle | None = None
        self._heartbeat: ScopedHeartbeat | None = None
        self._bound: AbstractContextManager[CyclesContext] | None = None

    async def _reserve_async(self) -> AsyncStreamReservation:
        client = resolve_client(self._client, want_async=True)
        assert isinstance(client, AsyncCyclesClient)
        runtime = await _runtime.for_async_call(client)
        request = self._guard.plan(client.config, (), {})
        reserved = await run_async_inline(reserve_steps(request), runtime.async_env())
        if isinstance(reserved, DryRunResult) or reserved.reservation_id is None:  # pragma: no cover - observe mode
            raise CyclesError("the server did not create a reservation for the stream (observe mode?)")
        return AsyncStreamReservation(self._guard, runtime, reserved)

    def __await__(self) -> Generator[Any, None, AsyncStreamReservation]:
        return self._awaited().__await__()

    async def _awaited(self) -> AsyncStreamReservation:
        handle = await self._reserve_async()
        handle._beat_on_worker()
        return handle

    async def __aenter__(self) -> AsyncStreamReservation:
        handle = await self._reserve_async()
        heartbeat = handle._beat_in_scope()
        await heartbeat.__aenter__()
        self._handle, self._heartbeat = handle, heartbeat
        self._bound = _bound(handle)
        return handle

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        handle, heartbeat, bound = self._handle, self._heartbeat, self._bound
        assert isinstance(handle, AsyncStreamReservation) and heartbeat is not None and bound is not None
        try:
            await handle._exit(failed=exc_type is not None)
        finally:
            bound.__exit__(None, None, None)
            await heartbeat.__aexit__(None, None, None)


class SyncStreamStarter:
    """What `reserve_for_stream` returns for a `CyclesClient`: ``with`` it to get a `StreamReservation` (its
    heartbeat runs on the client's background worker scheduler)."""

    _guard: Guard
    _client: CyclesClient | AsyncCyclesClient | None
    _handle: _Handle | None
    _bound: AbstractContextManager[CyclesContext] | None

    def _open_sync(self) -> StreamReservation:
        """The sync counterpart of ``await reserve_for_stream(...)``: the caller owns commit/release."""
        client = resolve_client(self._client, want_async=False)
        assert isinstance(client, CyclesClient)
        runtime = _runtime.for_sync_call(client)
        request = self._guard.plan(client.config, (), {})
        reserved = run_sync_inline(reserve_steps(request), runtime.sync_env())
        if isinstance(reserved, DryRunResult) or reserved.reservation_id is None:  # pragma: no cover - observe mode
            raise CyclesError("the server did not create a reservation for the stream (observe mode?)")
        handle = StreamReservation(self._guard, runtime, reserved)
        handle._beat_on_worker()
        return handle

    def __enter__(self) -> StreamReservation:
        handle = self._open_sync()
        self._handle, self._bound = handle, _bound(handle)
        return handle

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        handle, bound = self._handle, self._bound
        assert isinstance(handle, StreamReservation) and bound is not None
        try:
            handle._exit(failed=exc_type is not None)
        finally:
            handle._heartbeat.stop()
            bound.__exit__(None, None, None)


def _bound(handle: _Handle) -> AbstractContextManager[CyclesContext]:
    """The handle's context made current (entered; the starter leaves it on exit)."""
    bound = bind(handle._context)
    bound.__enter__()
    return bound


class StreamStarter(AsyncStreamStarter, SyncStreamStarter):
    """What `reserve_for_stream` returns when the client is resolved later (``client=None``): ``async with``
    / ``await`` for an `AsyncStreamReservation`, ``with`` for a `StreamReservation`."""


@overload
def reserve_for_stream(
    *,
    client: AsyncCyclesClient,
    estimate: int,
    actual: int | None = None,
    use_estimate_if_actual_not_provided: bool = True,
    action_kind: str = "unknown",
    action_name: str = "unknown",
    action_tags: list[str] | None = None,
    unit: Unit | str = Unit.USD_MICROCENTS,
    ttl_ms: int = 60000,
    grace_period_ms: int | None = None,
    overage_policy: CommitOveragePolicy | str = CommitOveragePolicy.ALLOW_IF_AVAILABLE,
    tenant: str | None = None,
    workspace: str | None = None,
    app: str | None = None,
    workflow: str | None = None,
    agent: str | None = None,
    toolset: str | None = None,
    dimensions: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> AsyncStreamStarter: ...


@overload
def reserve_for_stream(
    *,
    client: CyclesClient,
    estimate: int,
    actual: int | None = None,
    use_estimate_if_actual_not_provided: bool = True,
    action_kind: str = "unknown",
    action_name: str = "unknown",
    action_tags: list[str] | None = None,
    unit: Unit | str = Unit.USD_MICROCENTS,
    ttl_ms: int = 60000,
    grace_period_ms: int | None = None,
    overage_policy: CommitOveragePolicy | str = CommitOveragePolicy.ALLOW_IF_AVAILABLE,
    tenant: str | None = None,
    workspace: str | None = None,
    app: str | None = None,
    workflow: str | None = None,
    agent: str | None = None,
    toolset: str | None = None,
    dimensions: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> SyncStreamStarter: ...


@overload
def reserve_for_stream(
    *,
    client: None = None,
    estimate: int,
    actual: int | None = None,
    use_estimate_if_actual_not_provided: bool = True,
    action_kind: str = "unknown",
    action_name: str = "unknown",
    action_tags: list[str] | None = None,
    unit: Unit | str = Unit.USD_MICROCENTS,
    ttl_ms: int = 60000,
    grace_period_ms: int | None = None,
    overage_policy: CommitOveragePolicy | str = CommitOveragePolicy.ALLOW_IF_AVAILABLE,
    tenant: str | None = None,
    workspace: str | None = None,
    app: str | None = None,
    workflow: str | None = None,
    agent: str | None = None,
    toolset: str | None = None,
    dimensions: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> StreamStarter: ...


@overload
def reserve_for_stream(
    *,
    client: CyclesClient | AsyncCyclesClient | None = None,
    estimate: int,
    actual: int | None = None,
    use_estimate_if_actual_not_provided: bool = True,
    action_kind: str = "unknown",
    action_name: str = "unknown",
    action_tags: list[str] | None = None,
    unit: Unit | str = Unit.USD_MICROCENTS,
    ttl_ms: int = 60000,
    grace_period_ms: int | None = None,
    overage_policy: CommitOveragePolicy | str = CommitOveragePolicy.ALLOW_IF_AVAILABLE,
    tenant: str | None = None,
    workspace: str | None = None,
    app: str | None = None,
    workflow: str | None = None,
    agent: str | None = None,
    toolset: str | None = None,
    dimensions: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> AsyncStreamStarter | SyncStreamStarter: ...


def reserve_for_stream(
    *,
    client: CyclesClient | AsyncCyclesClient | None = None,
    estimate: int,
    actual: int | None = None,
    use_estimate_if_actual_not_provided: bool = True,
    action_kind: str = "unknown",
    action_name: str = "unknown",
    action_tags: list[str] | None = None,
    unit: Unit | str = Unit.USD_MICROCENTS,
    ttl_ms: int = 60000,
    grace_period_ms: int | None = None,
    overage_policy: CommitOveragePolicy | str = CommitOveragePolicy.ALLOW_IF_AVAILABLE,
    tenant: str | None = None,
    workspace: str | None = None,
    app: str | None = None,
    workflow: str | None = None,
    agent: str | None = None,
    toolset: str | None = None,
    dimensions: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> AsyncStreamStarter | SyncStreamStarter:
    """Reserve ``estimate`` for a streamed piece of work.

    Use ``async with reserve_for_stream(client=..., estimate=...) as stream:`` (``with`` for a sync client).
    Set ``stream.actual`` (and ``stream.metrics``) as usage becomes known, or call ``commit(actual)``.
    Leaving the block without a commit commits ``stream.actual`` if set, else the estimate (marked
    ``actual_source="estimate"``); leaving it with an exception commits ``stream.actual`` if set, else
    releases. With ``use_estimate_if_actual_not_provided=False``, leaving the block normally with neither
    settles nothing (the reservation expires on its own) and raises `MissingActualError`.
    ``stream = await reserve_for_stream(...)`` gives you the handle to settle yourself.
    """
    options = options_from(locals(), stream=True)
    return StreamStarter(Guard(options), client)
