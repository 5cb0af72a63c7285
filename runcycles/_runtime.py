"""The lifecycle's per-client runtime: driver environments, heartbeat placement, replay on first need.

The lifecycle layer (``with_cycles``, ``reserve_for_stream``) owns it: `for_sync_call` / `for_async_call`
create it on a client's first guarded call and keep it on the client; the client itself never imports this
module. The services it composes belong to the client and do nothing until needed: the journal records
(`_journal_owner.JournalOwner`) and the background worker (`_background.Background`). The first guarded call
also resumes what the journal holds from an earlier process (once per client; off the event loop on the
async path).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import anyio

from ._drivers import AsyncEnv, SyncEnv, monotonic_ms
from ._heartbeat import deferred_start_ms, heartbeat_steps, started_at
from ._heartbeat_placement import ScopedHeartbeat, WorkerHeartbeat
from ._journal import JournalRecord
from ._lifecycle import Reserved, Settlement, settle_steps
from ._protocol.effects import Steps
from .client import AsyncCyclesClient, CyclesClient
from .context import CyclesContext
from .heartbeat import HeartbeatEvent

__all__ = ["Runtime", "for_async_call", "for_sync_call", "of"]

log = logging.getLogger("runcycles.lifecycle")

_CREATE = threading.Lock()


def of(client: CyclesClient | AsyncCyclesClient) -> Runtime:
    """The runtime of ``client`` (created on first use; creating it does no I/O)."""
    runtime = client._lifecycle_runtime
    if runtime is None:
        with _CREATE:
            runtime = client._lifecycle_runtime
            if runtime is None:
                runtime = client._lifecycle_runtime = Runtime(client)
    assert isinstance(runtime, Runtime)
    return runtime


def for_sync_call(client: CyclesClient) -> Runtime:
    """The runtime for a guarded call on a sync client; the client's first one resumes its journal first."""
    runtime = of(client)
    owner = runtime.owner
    if owner.replay_due:
        owner.replay_once(runtime.worker.submit)
    return runtime


async def for_async_call(client: AsyncCyclesClient) -> Runtime:
    """The runtime for a guarded call on an async client; the client's first one resumes its journal first
    (read in a worker thread, not on the event loop)."""
    runtime = of(client)
    owner = runtime.owner
    if owner.replay_due:
        await anyio.to_thread.run_sync(owner.replay_once, runtime.worker.submit)
    return runtime


class Runtime:
    """What the lifecycle shells need of one client."""

    def __init__(self, client: CyclesClient | AsyncCyclesClient) -> None:
        self.config = client.config
        self.owner = client._journal_owner
        self.worker = client._worker
        self.policy = self.owner.policy
        self.journal_enabled = self.owner.enabled
        self.monotonic: Callable[[], float] = monotonic_ms
        self._on_heartbeat_failure = client._on_heartbeat_failure
        self._client = client
        self._sync_env: SyncEnv | None = None
        self._async_env: AsyncEnv | None = None

    # ------------------------------------------------------------------ environments

    def sync_env(self) -> SyncEnv:
        """The environment of the blocking driver (for the sync client); detaches to the worker."""
        if self._sync_env is None:
            client = self._client
            assert isinstance(client, CyclesClient)
            self._sync_env = SyncEnv(send=client._send_for_lifecycle, **self.owner.services(detach=self._detach))
        return self._sync_env

    def async_env(self) -> AsyncEnv:
        """The environment of the async driver in the caller's event loop; detaches to the worker."""
        if self._async_env is None:
            client = self._client
            assert isinstance(client, AsyncCyclesClient)
            services = self.owner.services(detach=self._detach)
            self._async_env = AsyncEnv(send=client._send_for_lifecycle, journal=self.owner.journal_async, **services)
        return self._async_env

    def _detach(self, steps: Steps[Any]) -> None:
        self.worker.submit(steps)

    def settle_steps(self, record: JournalRecord) -> Steps[Settlement]:
        """The settlement of ``record`` under this client's retry policy and journal setting."""
        return settle_steps(record, self.policy, journal=self.journal_enabled)

    # ------------------------------------------------------------------ heartbeats

    def _heartbeat(self, reserved: Reserved, context: CyclesContext) -> Steps[None]:
        return heartbeat_steps(reserved, context, config=self.config, report=self._report)

    def _report(self, event: HeartbeatEvent) -> None:
        callback = self._on_heartbeat_failure
        if callback is None:
            return
        try:
            callback(event)
        except Exception:
            log.exception("on_heartbeat_failure callback raised")

    def scoped_heartbeat(self, reserved: Reserved, context: CyclesContext) -> ScopedHeartbeat:
        """The async placement: beside the guarded work, structured by it (``async with`` it)."""
        what = f"heartbeat of reservation {reserved.reservation_id}"
        steps = self._heartbeat(reserved, context)
        at = deferred_start_ms(reserved, self.config)
        return ScopedHeartbeat(steps if at is None else started_at(at, steps), self.async_env(), what)

    def worker_heartbeat(self, reserved: Reserved, context: CyclesContext) -> WorkerHeartbeat:
        """The sync placement (and that of a handle without a scope): on the client's worker scheduler."""
        steps = self._heartbeat(reserved, context)
        at = deferred_start_ms(reserved, self.config)
        return WorkerHeartbeat(self.worker, steps if at is None else started_at(at, steps))
