"""One client's share of the journal: the records it writes (owned in process), the ones it replays
(claimed with a lock file), and replay itself.

Constructing a `JournalOwner` touches no file: the journal partition is opened on the first write, and
stored records are looked for only when replay is asked for (`replay_once` on the lifecycle's first need,
`replay` from ``client.replay_journal()``). Async callers' journal jobs share batches (see `_journal.writer`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from ._drivers import AsyncEnv, monotonic_ms, wall_ms
from ._journal import (
    GROUP,
    Journal,
    JournalBusyError,
    JournalError,
    JournalRecord,
    defer_async_job,
    run_async_job,
)
from ._journal.paths import default_journal_root, fallback_root, journal_fingerprint
from ._journal.record import Stamp
from ._journal.spares import holds_record
from ._journal.writer import Job, Unsynced
from ._protocol.effects import JournalDelete, JournalQuarantine, JournalRelease, JournalWrite, Steps
from ._protocol.requests import HttpRequest
from ._protocol.settle_machine import RetryPolicy
from ._protocol.states import SettleMode
from ._replay import replay_steps
from .config import CyclesConfig

__all__ = ["JournalOwner"]

log = logging.getLogger("runcycles.lifecycle")

Submit = Callable[[Steps[Any]], object]
"""Where replayed settlements run (the client's background worker)."""


class JournalOwner:
    """The journal records of one client: writes, claims, deletion, quarantine and replay."""

    def __init__(self, config: CyclesConfig) -> None:
        self.config = config
        self.enabled = config.journal_enabled
        self.policy = RetryPolicy.from_config(config)
        self.wall: Callable[[], int] = wall_ms
        self._journal: Journal | None = None
        self._claims: dict[str, ExitStack] = {}  # records replayed by this client, claimed with a lock file
        self._owned: set[str] = set()  # records this client wrote and is settling (`Journal.own`)
        # reservation id -> (mode, recorded_at_ms): a rewrite keeps the time the spend was first journaled
        # (or switched to event mode), which is what the replay's age check measures.
        self._recorded: dict[str, tuple[SettleMode, int]] = {}
        self._lock = threading.Lock()
        self._replay_due = self.enabled

    # ------------------------------------------------------------------ the store

    @property
    def journal(self) -> Journal:
        """The journal partition of this client (server + principal), opened on first use."""
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

    def _stamp(self, record: JournalRecord) -> Stamp:
        """This partition's server and the time the record's spend was first journaled in its mode."""
        with self._lock:
            known = self._recorded.get(record.reservation_id)
            if known is None or known[0] is not record.mode:
                known = (record.mode, self.wall())
                self._recorded[record.reservation_id] = known
        return (self.config.base_url, known[1])

    def _write_job(self, record: JournalRecord) -> Job:
        rid = record.reservation_id
        stamp = self._stamp(record)

        def job() -> Path | None:
            journal = self.journal
            with self._lock:
                claimed = rid in self._claims
                first = not claimed and rid not in self._owned
            if first:
                journal.own(rid)
                with self._lock:
                    self._owned.add(rid)
            return journal.write_job(record, owned=not claimed, stamp=stamp, fresh=first)()

        return Unsynced(job) if self.config.journal_sync == "process" else job

    def journal_write(self, record: JournalRecord) -> None:
        """Write (or rewrite) the record; the first write makes it this process's own (no lock file)."""
        GROUP.run_one(self._write_job(record))

    def journal_delete(self, reservation_id: str) -> None:
        """Remove a settled record (no sync) and stop holding it."""
        with self._lock:
            owned = reservation_id in self._owned
        try:
            self.journal.delete(reservation_id, owned=owned)
        finally:
            self.release_claim(reservation_id, keep=False)

    @property
    def opened(self) -> bool:
        """Whether this client has opened its journal partition."""
        return self._journal is not None

    def close(self) -> None:
        """After the client's last settlement: run the deferred deletes of settled records, and stop the
        journal's background work for this client (its spare files are removed when no other client of this
        process uses the directory)."""
        self.finish_deferred()
        with self._lock:
            journal = self._journal
        if journal is not None:
            journal.close()

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
        """Perform a journal effect for the async driver, batched with its event loop's other journal jobs.

        Deleting a settled record this client wrote is deferred (it needs no barrier, and a record left
        behind replays under its key, answered idempotently): it runs on the journal thread after its next
        batch, and the call does not wait for it.
        """
        if (
            isinstance(effect, JournalDelete)
            and self._deferrable(effect.reservation_id)
            and defer_async_job(_no_sync(self.journal_delete, effect.reservation_id))
        ):
            return None
        try:
            await run_async_job(self._job(effect))
        except Exception as exc:
            return exc
        return None

    def _deferrable(self, reservation_id: str) -> bool:
        with self._lock:
            return reservation_id in self._owned and reservation_id not in self._claims

    @property
    def deferred(self) -> int:
        """How many deletes of settled records wait on the journal thread (every client's)."""
        return GROUP.deferred

    def finish_deferred(self) -> int:
        """Run the deferred deletes of settled records now, on this thread (every client's: they share the
        journal thread), and wait for those the journal thread is running; returns how many ran here."""
        return GROUP.run_deferred(wait=True)

    def services(self, *, detach: Callable[[Steps[Any]], None] | None) -> dict[str, Any]:
        """The journal and clock part of a driver environment."""
        return {
            "journal_write": self.journal_write,
            "journal_delete": self.journal_delete,
            "journal_release": self.release_claim,
            "journal_quarantine": self.journal_quarantine,
            "detach": detach,
            "monotonic": monotonic_ms,
            "wall": self._wall_now,
        }

    def _wall_now(self) -> int:
        return self.wall()

    def worker_env(self, send: Callable[[HttpRequest, int | None], Any]) -> AsyncEnv:
        """The environment of the background worker's driver (it never detaches further)."""
        return AsyncEnv(send=send, journal=self.journal_async, **self.services(detach=None))

    # ------------------------------------------------------------------ replay

    def has_stored_records(self) -> bool:
        """Whether this client's partition already holds records (creates nothing; cheap)."""
        if not self.enabled:
            return False
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

    @property
    def replay_due(self) -> bool:
        """Whether the first-need replay has yet to run (False with the journal off)."""
        return self._replay_due

    def replay_once(self, submit: Submit) -> None:
        """The first-need replay: resume stored records, if there are any, once per client."""
        with self._lock:
            due, self._replay_due = self._replay_due, False
        if not due:
            return
        try:
            if self.has_stored_records():
                self.replay(submit)
        except Exception:
            log.exception("journal replay failed")

    def replay(self, submit: Submit) -> int:
        """Claim every unresolved record of this partition and hand its replay to ``submit``.

        Records another worker (thread or process) is settling are skipped. Returns how many were resumed.
        """
        if not self.enabled:
            return 0
        self._replay_due = False
        try:
            loaded = self.journal.load()
        except JournalError as exc:
            log.error("journal replay failed: %s", exc)
            return 0
        resumed = 0
        for record in loaded.records:
            fresh = self._claim(record.reservation_id)
            if fresh is not None:
                submit(replay_steps(fresh, self.policy, verify_after_ms=self.config.replay_verify_after_ms))
                resumed += 1
        return resumed

    def _claim(self, rid: str) -> JournalRecord | None:
        with self._lock:
            if rid in self._claims:
                return None
        stack = ExitStack()
        try:
            fresh = stack.enter_context(self.journal.claim(rid))
        except JournalBusyError:
            return None
        if fresh is None:
            stack.close()
            return None
        with self._lock:
            self._claims[rid] = stack
            self._recorded[rid] = (fresh.mode, fresh.recorded_at_ms)
        return fresh


def _no_sync(fn: Callable[[Any], None], arg: Any) -> Job:
    def job() -> None:
        fn(arg)

    return Unsynced(job)
