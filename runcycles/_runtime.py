"""Per-client lifecycle plumbing: drivers' environments, the journal, the background worker, replay.

Each client gets one `Runtime` (created with the client; it starts no thread and touches no file until
needed). The lifecycle shells ask it for a driver environment and for heartbeats; settlement records go
through it to the journal: a record this process writes is owned in process (no lock file), a replayed one
is claimed with its lock file, and async callers' journal jobs share batches (see `_journal.writer`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import httpx

from ._background import Background
from ._drivers import AsyncEnv, SyncEnv, monotonic_ms, run_async, wall_ms
from ._heartbeat import heartbeat_steps
from ._journal import GROUP, Journal, JournalBusyError, JournalError, JournalRecord, run_async_job
from ._journal.writer import Job
from ._lifecycle import PendingSettlement, Reserved, RetryPolicy
from ._protocol.effects import JournalDelete, JournalQuarantine, JournalRelease, JournalWrite, Steps
from ._protocol.requests import HttpRequest
from ._replay import replay_steps
from .context import CyclesContext
from .heartbeat import HeartbeatEvent
from .response import CyclesResponse

if TYPE_CHECKING:
    from .client import AsyncCyclesClient, CyclesClient

__all__ = ["Runtime", "of"]

log = logging.getLogger("runcycles.lifecycle")


def of(client: CyclesClient | AsyncCyclesClient) -> Runtime:
    """The runtime of ``client``."""
    return client._runtime


class Runtime:
    """Lifecycle services of one client."""

    def __init__(
        self,
        client: CyclesClient | AsyncCyclesClient,
        *,
        send_sync: Callable[[HttpRequest, int | None], CyclesResponse] | None,
        send_async: Callable[[HttpRequest, int | None], Any] | None,
        make_worker_sender: Callable[[], Callable[[HttpRequest, int | None], Any]],
        on_heartbeat_failure: Callable[[HeartbeatEvent], None] | None = None,
        monotonic: Callable[[], float] = monotonic_ms,
        wall: Callable[[], int] = wall_ms,
    ) -> None:
        self.config = client.config
        self.policy = RetryPolicy.from_config(self.config)
        self.journal_enabled = self.config.journal_enabled
        self.monotonic = monotonic
        self.wall = wall
        self.on_heartbeat_failure = on_heartbeat_failure
        self._send_sync = send_sync
        self._send_async = send_async
        self._make_worker_sender = make_worker_sender
        self._journal: Journal | None = None
        self._claims: dict[str, ExitStack] = {}  # records replayed by this client, claimed with a lock file
        self._owned: set[str] = set()  # records this client wrote and is settling (`Journal.own`)
        # reservation id -> (mode, recorded_at_ms): a rewrite keeps the time the spend was first journaled
        # (or switched to event mode), which is what the replay's age check measures.
        self._recorded: dict[str, tuple[str, int]] = {}
        self._sync_env: SyncEnv | None = None
        self._async_env: AsyncEnv | None = None
        self._lock = threading.Lock()
        self.background = Background(self._worker_env)
        self.background.set_exit_timeout(self.config.flush_timeout_ms)

    # ------------------------------------------------------------------ journal

    @property
    def journal(self) -> Journal:
        """The journal partition of this client (server + principal)."""
        with self._lock:
            if self._journal is None:
                self._journal = Journal(
                    self.config.journal_dir,
                    base_url=self.config.base_url,
                    tenant=self.config.tenant,
                    api_key=self.config.api_key,
                    sync=self.config.journal_sync,
                )
            return self._journal

    def _to_record(self, pending: PendingSettlement) -> JournalRecord:
        with self._lock:
            known = self._recorded.get(pending.reservation_id)
            if known is None or known[0] != pending.mode:
                known = (pending.mode, self.wall())
                self._recorded[pending.reservation_id] = known
        return JournalRecord(
            reservation_id=pending.reservation_id,
            mode="event" if pending.mode == "event" else "commit",
            idempotency_key=pending.idempotency_key,
            commit_body=dict(pending.commit_body),
            event_body=dict(pending.event_body),
            base_url=self.config.base_url,
            not_before_ms=pending.not_before_ms,
            attempts=pending.attempts,
            recorded_at_ms=known[1],
        )

    @staticmethod
    def _from_record(record: JournalRecord) -> PendingSettlement:
        return PendingSettlement(
            reservation_id=record.reservation_id,
            idempotency_key=record.idempotency_key,
            commit_body=record.commit_body,
            event_body=record.event_body or {},
            mode=record.mode,
            not_before_ms=record.not_before_ms,
            attempts=record.attempts,
        )

    def _write_job(self, pending: PendingSettlement) -> Job:
        rid = pending.reservation_id
        record = self._to_record(pending)

        def job() -> Path | None:
            journal = self.journal
            with self._lock:
                claimed = rid in self._claims
                first = not claimed and rid not in self._owned
            if first:
                journal.own(rid)
                with self._lock:
                    self._owned.add(rid)
            return journal.write_job(record, owned=not claimed)()

        return job

    def journal_write(self, pending: PendingSettlement) -> None:
        """Write (or rewrite) the record; the first write makes it this process's own (no lock file)."""
        GROUP.run_one(self._write_job(pending))

    def journal_delete(self, reservation_id: str) -> None:
        """Remove a settled record (no sync) and stop holding it."""
        try:
            self.journal.delete(reservation_id)
        finally:
            self.release_claim(reservation_id, keep=False)

    def release_claim(self, reservation_id: str, *, keep: bool = True) -> None:
        """Stop holding the record (``keep``: it stays on disk, replayable by anyone)."""
        with self._lock:
            stack = self._claims.pop(reservation_id, None)
            owned = reservation_id in self._owned
            self._owned.discard(reservation_id)
            self._recorded.pop(reservation_id, None)
        if stack is not None:
            stack.close()
        if owned:
            self.journal.disown(reservation_id, keep=keep)

    def journal_quarantine(self, effect: JournalQuarantine) -> None:
        """Move an unsettleable record aside (see `Journal.quarantine`) and stop holding it."""
        try:
            self.journal.quarantine(effect.reservation_id, effect.reason)
        finally:
            self.release_claim(effect.reservation_id, keep=False)

    def _job(self, effect: object) -> Job:
        if isinstance(effect, JournalWrite):
            return self._write_job(effect.record)
        if isinstance(effect, JournalDelete):
            return _no_sync(self.journal_delete, effect.reservation_id)
        if isinstance(effect, JournalRelease):
            return _no_sync(self.release_claim, effect.reservation_id)
        if isinstance(effect, JournalQuarantine):
            return _no_sync(self.journal_quarantine, effect)
        raise TypeError(f"not a journal effect: {effect!r}")  # pragma: no cover - a programming error

    async def journal_async(self, effect: object) -> BaseException | None:
        """Perform a journal effect for the async driver, batched with its event loop's other journal jobs."""
        try:
            await run_async_job(self._job(effect))
        except Exception as exc:
            return exc
        return None

    # ------------------------------------------------------------------ environments

    def _detach(self, steps: Steps[Any]) -> None:
        self.background.submit(steps)

    def _services(self, *, detach: bool) -> dict[str, Any]:
        return {
            "journal_write": self.journal_write,
            "journal_delete": self.journal_delete,
            "journal_release": self.release_claim,
            "journal_quarantine": self.journal_quarantine,
            "detach": self._detach if detach else None,
            "monotonic": self.monotonic,
            "wall": self.wall,
        }

    def sync_env(self) -> SyncEnv:
        """The environment of the blocking driver (for the sync client)."""
        if self._sync_env is None:
            assert self._send_sync is not None
            self._sync_env = SyncEnv(send=self._send_sync, **self._services(detach=True))
        return self._sync_env

    def async_env(self) -> AsyncEnv:
        """The environment of the async driver in the caller's event loop (for the async client)."""
        if self._async_env is None:
            assert self._send_async is not None
            self._async_env = AsyncEnv(
                send=self._send_async, journal=self.journal_async, **self._services(detach=True)
            )
        return self._async_env

    def _worker_env(self) -> AsyncEnv:
        return AsyncEnv(send=self._make_worker_sender(), journal=self.journal_async, **self._services(detach=False))

    # ------------------------------------------------------------------ heartbeats

    def _heartbeat(self, reserved: Reserved, context: CyclesContext) -> Steps[None]:
        return heartbeat_steps(
            reserved,
            context,
            config=self.config,
            report=self._report,
        )

    def _report(self, event: HeartbeatEvent) -> None:
        callback = self.on_heartbeat_failure
        if callback is None:
            return
        try:
            callback(event)
        except Exception:
            log.exception("on_heartbeat_failure callback raised")

    async def run_async_heartbeat(self, reserved: Reserved, context: CyclesContext) -> None:
        """Drive the heartbeat in the current task until cancelled; never raises anything but cancellation."""
        try:
            await run_async(self._heartbeat(reserved, context), self.async_env())
        except Exception:
            log.exception("heartbeat crashed: reservation_id=%s", reserved.reservation_id)

    def start_background_heartbeat(self, reserved: Reserved, context: CyclesContext) -> Callable[[], None]:
        """Run the heartbeat as a task of the background worker; returns the function that stops it."""
        return self.background.start_heartbeat(self._heartbeat(reserved, context))

    def start_sync_heartbeat(self, reserved: Reserved, context: CyclesContext) -> _Stopper:
        """The sync client's heartbeat (on the background worker)."""
        return _Stopper(self.start_background_heartbeat(reserved, context))

    # ------------------------------------------------------------------ replay

    def has_stored_records(self) -> bool:
        """Whether this client's partition already holds records (creates nothing; cheap)."""
        if not self.journal_enabled:
            return False
        from ._journal import default_journal_root, fallback_root, journal_fingerprint
        from ._journal.spares import holds_record

        config = self.config
        fingerprint = journal_fingerprint(config.base_url, tenant=config.tenant, api_key=config.api_key)
        roots = [Path(config.journal_dir)] if config.journal_dir else [default_journal_root(), fallback_root()]
        for root in roots:
            try:
                with os.scandir(root / fingerprint) as entries:
                    if any(holds_record(e) for e in entries):
                        return True
            except OSError:
                continue
        return False

    def replay_on_start(self) -> None:
        """Resume stored records in the background when there are any (called when a client is built)."""
        try:
            if self.has_stored_records():
                self.replay_records()
        except Exception:
            log.exception("journal replay on start failed")

    def replay_records(self) -> int:
        """Resume every unresolved record of this partition on the background worker.

        Records another process is working on are skipped. Returns how many were resumed.
        """
        if not self.journal_enabled:
            return 0
        try:
            loaded = self.journal.load()
        except JournalError as exc:
            log.error("journal replay failed: %s", exc)
            return 0
        resumed = 0
        for record in loaded.records:
            rid = record.reservation_id
            with self._lock:
                if rid in self._claims:
                    continue
            stack = ExitStack()
            try:
                fresh = stack.enter_context(self.journal.claim(rid))
            except JournalBusyError:
                continue
            if fresh is None:
                stack.close()
                continue
            with self._lock:
                self._claims[rid] = stack
                self._recorded[rid] = (fresh.mode, fresh.recorded_at_ms)
            self.background.submit(self._resume(fresh))
            resumed += 1
        return resumed

    def _resume(self, record: JournalRecord) -> Steps[Any]:
        return replay_steps(
            self._from_record(record),
            self.policy,
            recorded_at_ms=record.recorded_at_ms,
            verify_after_ms=self.config.replay_verify_after_ms,
        )


def _no_sync(fn: Callable[[Any], None], arg: Any) -> Job:
    def job() -> None:
        fn(arg)

    return job


@attrs.define
class _Stopper:
    stop: Callable[[], None]

    def cancel(self) -> None:
        self.stop()


def worker_sender_for_sync(send: Callable[[HttpRequest, int | None], CyclesResponse]) -> Callable[[], Any]:
    """The background sender of a sync client: its blocking send, run off the worker's event loop."""

    def make() -> Callable[[HttpRequest, int | None], Any]:
        import anyio

        limiter = anyio.CapacityLimiter(8)

        async def send_async(request: HttpRequest, deadline_ms: int | None) -> CyclesResponse:
            return await anyio.to_thread.run_sync(send, request, deadline_ms, limiter=limiter)

        return send_async

    return make


def worker_sender_for_async(
    config: Any,
    transport: httpx.AsyncBaseTransport | None,
    factory: Callable[[], httpx.AsyncBaseTransport] | None,
    options: dict[str, Any],
    send: Any,
) -> Callable[[], Any]:
    """The background sender of an async client: its own `httpx.AsyncClient` in the worker's loop.

    A network transport's connection pool belongs to the event loop that opened it, so the worker never
    shares one: it builds its own (``factory``, else a default ``httpx.AsyncHTTPTransport``).
    """

    def make() -> Callable[[HttpRequest, int | None], Any]:
        if factory is not None:
            own: httpx.AsyncBaseTransport | None = factory()
        elif transport is None or isinstance(transport, httpx.AsyncHTTPTransport):
            own = None
        else:
            own = transport
        http = httpx.AsyncClient(transport=own, **options)

        async def send_async(request: HttpRequest, deadline_ms: int | None) -> CyclesResponse:
            response: CyclesResponse = await send(http, config, request, deadline_ms)
            return response

        return send_async

    return make
