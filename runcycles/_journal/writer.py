"""Writing records: atomic temp-file-and-rename, with the directory barrier shared by concurrent writers.

A *job* does one journal change (write a temp file, fsync it in ``full`` mode, rename it into place; or
unlink; or move into quarantine) and returns the directory whose entries must be made durable before the
change counts as done (``None``: nothing to sync). `GroupCommit` runs jobs in batches: each job's own I/O,
then one directory fsync per directory for the whole batch, so concurrent settlements share that barrier
(group commit). Whoever arrives when no batch is running leads the next one on its own thread, so a lone
sync caller pays no thread hop; async callers of one event loop hand their batch to one thread at a time (on
asyncio the journal's batch threads through the loop's executor, on trio anyio's worker threads). A
batch of several jobs runs them in up to four lanes (three threads of the journal's `io_pool`, which also
prepares spare files in the background) so that their file fsyncs overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import anyio
import attrs
from anyio.lowlevel import RunVar

from ..errors import JournalError
from .paths import FILE_MODE, fsync_dir

__all__ = [
    "GROUP",
    "TEMP_SUFFIX",
    "GroupCommit",
    "Job",
    "SyncMode",
    "fsync_dir",
    "io_pool",
    "run_async",
    "write_file",
]

SyncMode = Literal["full", "process"]
"""``full``: a write counts as done once durable (one barrier for a fresh record in a spare file, else the file
and its directory are fsynced; survives power loss and OS crashes); ``process``: no fsync (survives the crash
of this process, not of the machine)."""

TEMP_SUFFIX = ".tmp"

Job = Callable[[], "Path | None"]


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
    if len(batch) == 1 or not lanes:
        _run_lane(batch)
    else:
        split = [batch[i::_LANES] for i in range(min(_LANES, len(batch)))]
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


GROUP = GroupCommit()
"""The process-wide writer: every journal of the process shares its batches."""


def _reset_after_fork() -> None:
    # The parent's I/O threads and a batch it was running at fork time do not exist in the child: a pool that
    # believes it has its threads would never run a lane, and a group left "flushing" would wait forever.
    global _pool, _pool_lock, _batch_pool
    _pool = _batch_pool = None
    _pool_lock = threading.Lock()
    GROUP.__init__()  # type: ignore[misc]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


@attrs.define(eq=False)
class _LoopQueue:
    """The jobs of one event loop waiting for its batch thread."""

    pending: list[_Entry] = attrs.field(factory=list)
    busy: bool = False
    wake: anyio.Event = attrs.field(factory=anyio.Event)


_loop_queue: RunVar[_LoopQueue] = RunVar("runcycles_journal_queue")
_batch_pool: ThreadPoolExecutor | None = None


def _batch_threads() -> ThreadPoolExecutor:
    # Not `io_pool`: a batch waits there for its own lanes, so batches on it could end up waiting for themselves.
    global _batch_pool
    with _pool_lock:
        if _batch_pool is None:
            _batch_pool = ThreadPoolExecutor(max_workers=_LANES, thread_name_prefix="runcycles-journal-batch")
        return _batch_pool


async def _run_batch(jobs: list[Job]) -> list[BaseException | None]:
    """``GROUP.run(jobs)`` off the event loop: on asyncio through the loop's executor on the journal's batch
    threads (measured cheaper per async guarded call than anyio's generic worker-thread hop: 0.93x median,
    0.96x CPU), elsewhere (trio) through anyio's worker threads."""
    try:
        running = asyncio.get_running_loop().run_in_executor(_batch_threads(), GROUP.run, jobs)
    except RuntimeError:  # not asyncio, or executors shut down (the drain at interpreter exit)
        return await anyio.to_thread.run_sync(GROUP.run, jobs)
    return await running


async def run_async(job: Job) -> None:
    """Run ``job`` off the event loop and wait; raises its error.

    The jobs of concurrent tasks in this event loop go to the process-wide `GROUP` as one batch, through
    one worker thread at a time (not one thread hop per record). Callers shield this from cancellation.
    """
    try:
        queue = _loop_queue.get()
    except LookupError:
        queue = _LoopQueue()
        _loop_queue.set(queue)
    entry = _Entry(job)
    queue.pending.append(entry)
    while not entry.done:
        if queue.busy:
            await queue.wake.wait()
            continue
        queue.busy = True
        batch, queue.pending = queue.pending, []
        try:
            errors = await _run_batch([e.job for e in batch])
            for e, error in zip(batch, errors, strict=True):
                e.error, e.done = error, True
        except BaseException:
            for e in batch:
                if not e.done:
                    e.error, e.done = RuntimeError("journal batch interrupted"), True
            raise
        finally:
            queue.busy = False
            wake, queue.wake = queue.wake, anyio.Event()
            wake.set()
    if entry.error is not None:
        raise entry.error
