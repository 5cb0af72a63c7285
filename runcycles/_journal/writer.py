"""Writing records: atomic temp-file-and-rename, with the directory barrier shared by concurrent writers.

A *job* does one journal change (write a temp file, fsync it in ``full`` mode, rename it into place; or
unlink; or move into quarantine) and returns the directory whose entries must be made durable before the
change counts as done (``None``: nothing to sync). `GroupCommit` runs jobs in batches: each job's own I/O,
then one directory fsync per directory for the whole batch, so concurrent settlements share that barrier
(group commit). Whoever arrives when no batch is running leads the next one on its own thread, so a lone
sync caller pays no thread hop; async callers go through `async_jobs`. Jobs whose delay costs nothing
(deleting a settled record) may be *deferred* and run after a later batch (`GroupCommit.defer`). A
batch of several jobs runs them in up to four lanes (three threads of the journal's `io_pool`, which also
prepares spare files in the background) so that their file fsyncs overlap.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import attrs

from ..errors import JournalError
from .paths import FILE_MODE, fsync_dir

__all__ = [
    "GROUP",
    "TEMP_SUFFIX",
    "GroupCommit",
    "Job",
    "SyncMode",
    "Unsynced",
    "fsync_dir",
    "io_pool",
    "write_file",
]

logger = logging.getLogger("runcycles.journal")

SyncMode = Literal["full", "process"]
"""``full``: a write counts as done once durable (one barrier for a fresh record in a spare file, else the file
and its directory are fsynced; survives power loss and OS crashes); ``process``: no fsync (survives the crash
of this process, not of the machine)."""

TEMP_SUFFIX = ".tmp"

Job = Callable[[], "Path | None"]


@attrs.define(frozen=True)
class Unsynced:
    """A job that does no fsync (``process`` mode, a delete): a batch runs it without a lane of its own."""

    job: Callable[[], Path | None]

    def __call__(self) -> Path | None:
        return self.job()


def write_file(target: Path, data: bytes, *, sync: bool) -> None:
    """Write ``data`` to ``target`` atomically (temp file, rename); with ``sync`` the temp file is fsynced
    before the rename. The rename is durable only after `fsync_dir` of the parent. Raises ``OSError``."""
    tmp = target.with_name(f"{target.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp, flags, FILE_MODE)
    try:
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, FILE_MODE)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@attrs.define(eq=False)
class _Entry:
    job: Job
    error: BaseException | None = None
    directory: Path | None = None
    done: bool = False


# Jobs of one batch belong to different records (a settlement waits for its job before it issues the next, and
# a record is owned or claimed by one settlement), so they may run side by side: concurrent fsyncs of
# different files share the file system's journal commits (ext4/xfs), sequential ones do not.
_LANES = 4
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_in_flush = threading.local()


def _run_lane(entries: list[_Entry]) -> None:
    outer = getattr(_in_flush, "active", False)
    _in_flush.active = True
    try:
        for entry in entries:
            try:
                entry.directory = entry.job()
            except Exception as exc:
                entry.error = exc
    finally:
        _in_flush.active = outer


def io_pool() -> ThreadPoolExecutor:
    """The journal's I/O threads (started on demand, at most ``_LANES - 1``): the extra lanes of a batch, and
    background work such as preparing spare files (see `spares`). Submitting raises ``RuntimeError`` once
    the interpreter shuts down."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_LANES - 1, thread_name_prefix="runcycles-journal")
        return _pool


def _flush(batch: list[_Entry], *, lanes: bool = True) -> None:
    """Run every job (in up to `_LANES` lanes), then sync each directory they touched once; errors stay with
    their jobs."""
    syncing = [entry for entry in batch if not isinstance(entry.job, Unsynced)]
    if len(syncing) <= 1 or not lanes:
        _run_lane(batch)
    else:
        # Lanes only overlap fsyncs: the jobs that sync none run in the leader's lane, with no thread hop.
        split = [syncing[i::_LANES] for i in range(min(_LANES, len(syncing)))]
        split[0] += [entry for entry in batch if isinstance(entry.job, Unsynced)]
        futures = []
        for lane in split[1:]:
            try:
                futures.append(io_pool().submit(_run_lane, lane))
            except RuntimeError:  # the interpreter is shutting down (e.g. a flush at exit): no new threads
                _run_lane(lane)
        _run_lane(split[0])
        for future in futures:
            future.result()
    touched: dict[Path, list[_Entry]] = {}
    for entry in batch:
        if entry.error is None and entry.directory is not None:
            touched.setdefault(entry.directory, []).append(entry)
    for directory, entries in touched.items():
        try:
            fsync_dir(directory)
        except OSError as exc:
            error = JournalError(f"cannot sync journal directory {directory}: {exc}")
            for entry in entries:
                entry.error = error
    for entry in batch:
        entry.done = True


class GroupCommit:
    """Runs journal jobs in batches that share their directory fsyncs; thread-safe.

    ``batches`` and ``jobs`` count what it did (for tests and benchmarks).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: list[_Entry] = []
        self._deferred: list[Job] = []
        self._deferred_running = 0
        self._flushing = False
        self.batches = 0
        self.jobs = 0

    def run(self, jobs: list[Job]) -> list[BaseException | None]:
        """Run ``jobs`` (in a batch with whatever else is pending) and wait; returns each job's error."""
        entries = [_Entry(job) for job in jobs]
        if getattr(_in_flush, "active", False):
            _flush(entries, lanes=False)  # a job that journals again: inline, rather than wait for ourselves
            return [e.error for e in entries]
        with self._cond:
            self._pending.extend(entries)
            while not all(e.done for e in entries):
                if self._flushing:
                    self._cond.wait()
                    continue
                self._flushing = True
                batch, self._pending = self._pending, []
                self.batches += 1
                self.jobs += len(batch)
                self._cond.release()
                try:
                    _flush(batch)
                finally:
                    self._cond.acquire()
                    self._flushing = False
                    self._cond.notify_all()
        return [e.error for e in entries]

    def run_one(self, job: Job) -> None:
        """Run one job and wait; raises its error."""
        error = self.run([job])[0]
        if error is not None:
            raise error

    def defer(self, job: Job) -> None:
        """Keep ``job`` for `run_deferred`: for work whose delay or loss costs nothing but tidiness (deleting
        a settled record: a record left behind replays under its key, which the server answers idempotently)."""
        with self._cond:
            self._deferred.append(job)

    @property
    def deferred(self) -> int:
        """How many deferred jobs have not finished (waiting, or running on some thread)."""
        return len(self._deferred) + self._deferred_running

    def run_deferred(self, *, wait: bool = False, limit: int | None = None) -> int:
        """Run the deferred jobs now, on this thread (no lanes: nothing waits for them); their errors are
        logged. ``wait``: then also wait for those another thread is running; ``limit``: run at most this many
        (the oldest). Returns how many ran here."""
        with self._cond:
            if limit is None:
                jobs, self._deferred = self._deferred, []
            else:
                jobs, self._deferred = self._deferred[:limit], self._deferred[limit:]
            self._deferred_running += len(jobs)
        try:
            entries = [_Entry(job) for job in jobs]
            if entries:
                _flush(entries, lanes=False)
        finally:
            with self._cond:
                self._deferred_running -= len(jobs)
                self._cond.notify_all()
                while wait and self._deferred_running:
                    self._cond.wait()
        for entry in entries:
            if entry.error is not None:
                logger.warning(
                    "deferred journal work failed (a settled record may replay idempotently): %s", entry.error
                )
        return len(entries)


GROUP = GroupCommit()
"""The process-wide writer: every journal of the process shares its batches."""


def _reset_after_fork() -> None:
    # The parent's I/O threads and a batch it was running at fork time do not exist in the child: a pool that
    # believes it has its threads would never run a lane, and a group left "flushing" would wait forever.
    global _pool, _pool_lock
    _pool = None
    _pool_lock = threading.Lock()
    GROUP.__init__()  # type: ignore[misc]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
