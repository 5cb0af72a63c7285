"""Spare record files: directory entries made durable ahead of time, so a fresh record costs one barrier.

A fresh record written the usual way needs two sync barriers before it counts as durable: the file's data,
then the directory entry its rename created. A *spare* is an empty file (0600) that this process created in
the journal directory earlier and whose directory entry it already synced, off the critical path. Writing
a fresh record into a spare (`fill`) needs one barrier (``fdatasync``: the data is durable under a name that
already is), then a rename to the record's standard name whose durability is folded into the next
directory sync (if power is lost first, the record is still on disk under the spare's name).

Spares are named ``spare-<owner token>-<random>.spare`` after the owner token of the process that made them
(see `locks.process_owner`): while that process lives, nobody else touches them. When it is gone, a load
(see `Journal.load`) removes its empty spares, moves a spare holding a valid record to the record's
standard name and quarantines a malformed one. Each journal directory has one `SparePool` per process;
the journal's I/O threads (`writer.io_pool`) refill it in the background (create several spares, one
directory sync for all) when it runs low, and its size adapts to the largest number of records written at
once. When no spare is ready (first use, a burst larger than the pool), a fresh record takes the two-barrier
path.

In ``process`` mode (no fsync) a directory has a second, *unsynced* pool per process: it creates no spares and
syncs nothing; it only keeps the files of settled records (recycled as above) and hands them out again at once,
so that a fresh record overwrites a file that exists instead of creating one (creating a file costs several
times a rename on ext4 and xfs) and a settled record is renamed instead of unlinked. The two pools never share
a file: a full-mode fill relies on its spare's name being durable, which an unsynced recycle does not make it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import secrets
import threading
import time
from pathlib import Path
from typing import TypeGuard

from .locks import is_own_token, owner_alive, process_owner
from .paths import FILE_MODE
from .writer import fsync_dir, io_pool

__all__ = [
    "SPARE_NAME",
    "SPARE_SUFFIX",
    "SparePool",
    "fill",
    "holds_record",
    "padded",
    "pool_for",
    "refilling",
    "release",
    "retain",
    "spare_owner",
]

logger = logging.getLogger("runcycles.journal")

SPARE_SUFFIX = ".spare"
SPARE_NAME = re.compile(r"^spare-(\d+-[0-9a-f]{16})-[0-9a-f]{16}\.spare$")

BLOCK = 4096
"""Records in spares are padded to whole blocks of this size (see `padded`)."""

_INITIAL_TARGET = 8
_MAX_TARGET = 256
_RETRY_AFTER_FAILURE_S = 30.0
_DISCARD_WAIT_S = 2.0


def spare_owner(name: str) -> str | None:
    """The owner token in a spare file's name (``None``: not a spare's name)."""
    match = SPARE_NAME.match(name)
    return match.group(1) if match else None


def holds_record(entry: os.DirEntry[str]) -> bool:
    """Whether a journal directory entry may hold a record to replay: a ``.json`` file, or another process's
    spare that is not empty (a record whose rename a crash or power cut undid; or a recycled one, blank or
    holding a settled record). Cheap: no lock, no read, nothing created."""
    name = entry.name
    if name.endswith(".json"):
        return True
    if not name.endswith(SPARE_SUFFIX):
        return False
    token = spare_owner(name)
    if token is not None and is_own_token(Path(entry.path).parent, token):
        return False  # this process's own spare (blank, or being filled): never replayed by this process
    try:
        return entry.stat(follow_symlinks=False).st_size > 0
    except OSError:
        return False


def _datasync(fd: int) -> None:
    # Looked up per call (not bound at import) so that tests can observe the barrier.
    sync = getattr(os, "fdatasync", None)
    (sync or os.fsync)(fd)


def _write_at_start(fd: int, data: bytes) -> None:
    view = memoryview(data)
    if not hasattr(os, "pwrite"):  # Windows
        os.lseek(fd, 0, os.SEEK_SET)
        while view:
            view = view[os.write(fd, view) :]
        return
    offset = 0
    while offset < len(data):
        offset += os.pwrite(fd, view[offset:], offset)


def padded(data: bytes, size: int) -> bytes:
    """``data`` followed by spaces (JSON whitespace) up to a whole number of `BLOCK` bytes, and to at least
    ``size``: a spare that held a record is overwritten in place at its size, so the barrier syncs data only
    (no metadata change, no block allocation)."""
    length = max(size, -(-len(data) // BLOCK) * BLOCK)
    return data + b" " * (length - len(data))


def fill(spare: Path, target: Path, data: bytes, *, sync: bool = True) -> None:
    """Write ``data`` into ``spare`` (see `padded`), make it durable (one barrier; none without ``sync``),
    rename it to ``target``.

    The rename is not synced: until the next directory sync, a power loss may leave the record under the
    spare's name, where a load finds it. On error the spare is removed and ``OSError`` raised.
    """
    flags = os.O_WRONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(spare, flags)
        try:
            _write_at_start(fd, padded(data, os.fstat(fd).st_size))
            if sync:
                _datasync(fd)
        finally:
            os.close(fd)
        os.replace(spare, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(spare)
        raise


class SparePool:
    """This process's spares in one journal directory; thread-safe. ``synced`` (``full`` mode): durable spares,
    prepared ahead; otherwise (``process`` mode) recycled files only, usable at once, nothing synced."""

    def __init__(self, directory: Path, *, synced: bool = True) -> None:
        self.directory = directory
        self.synced = synced
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._refill_lock = threading.Lock()
        self._ready: list[Path] = []
        self._recycled: list[Path] = []  # settled records turned spares, usable once their rename is synced
        self._target = _INITIAL_TARGET
        self._requested = False
        self._failed_at: float | None = None
        self._swept = False
        self._closed = False
        self.users = 0  # open journals counting on this pool (see `retain`); guarded by the module's lock
        self.created = 0
        self.recycled = 0
        self.directory_syncs = 0

    @property
    def closed(self) -> bool:
        """Whether the pool was discarded (it refills no more)."""
        return self._closed

    @property
    def ready(self) -> int:
        """How many spares are ready now."""
        with self._lock:
            return len(self._ready)

    def take(self) -> Path | None:
        """A spare for one fresh record (``None``: none ready); a synced pool's is durable, and it asks for a
        refill when running low."""
        with self._lock:
            spare = self._ready.pop() if self._ready else None
            if not self.synced:
                return spare
            if spare is None:  # one more than it held was wanted at once: hold one more from now on
                self._target = min(_MAX_TARGET, self._target + 1)
            refill = len(self._ready) <= self._target // 2 and not self._requested
            if refill:
                self._requested = True
        if refill:
            _submit(self)
        return spare

    def recycle(self, record: Path) -> bool:
        """Turn the file of a settled record into a spare instead of removing it; ``False``: the pool does not
        want it (full, closed), the caller removes the file. Raises ``OSError`` (``FileNotFoundError``: gone).

        On ext4 and xfs, removing a file whose blocks were synced costs several times a rename, and a file that
        keeps its blocks makes the next fill an overwrite in place. The file is renamed to a spare name and
        blanked (spaces, not synced: a blank lost to a power cut leaves a settled record, whose replay the
        server answers idempotently); it is used again once the next refill has synced its new name (an unsynced
        pool's: at once).
        """
        with self._lock:
            full = len(self._ready) + len(self._recycled) >= 2 * self._target  # slack: a refill may run meanwhile
            if self._closed or self.users <= 0 or os.getpid() != self.pid or full:
                return False
        path = self.directory / f"spare-{process_owner(self.directory)}-{secrets.token_hex(8)}{SPARE_SUFFIX}"
        os.replace(record, path)
        try:
            fd = os.open(path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0))
            try:
                _write_at_start(fd, b" " * os.fstat(fd).st_size)
            finally:
                os.close(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(path)
            return True
        with self._lock:
            keep = not self._closed
            if keep:
                # An unsynced pool's spares need no durable name: usable at once.
                (self._recycled if self.synced else self._ready).append(path)
                self.recycled += 1
        if not keep:
            with contextlib.suppress(OSError):
                os.unlink(path)
        return True

    def request_refill(self) -> None:
        """Refill in the background (no-op when a refill is already asked for, or for an unsynced pool)."""
        with self._lock:
            if self._requested or not self.synced:
                return
            self._requested = True
        _submit(self)

    def cancel_request(self) -> None:
        """Forget a refill asked for that will not run."""
        with self._lock:
            self._requested = False

    def refill(self, at_least: int = 0, *, when_low: bool = False) -> None:
        """Bring the spares that are ready up to the pool's target (raised to ``at_least``): recycled ones
        first, then new ones, with one directory sync for all of them (blocking); ``when_low``: only if at most
        half the target is ready (a background refill asked for earlier may find the pool full meanwhile).
        Errors are logged, not raised: without spares, fresh records take two barriers. An unsynced pool
        refills nothing (its spares are the recycled files only).
        """
        with self._refill_lock:
            with self._lock:
                self._requested = False
                self._target = min(_MAX_TARGET, max(self._target, at_least))
                recycled, self._recycled = self._recycled, []
                need = self._target - len(self._ready) - len(recycled)
                low = len(self._ready) <= self._target // 2
                failed_at = self._failed_at
                closed = self._closed
            if (
                closed
                or not self.synced
                or os.getpid() != self.pid
                or (need <= 0 and not recycled)
                or (when_low and not low)
            ):
                with self._lock:
                    self._recycled[:0] = recycled
                return
            if failed_at is not None and time.monotonic() - failed_at < _RETRY_AFTER_FAILURE_S:
                need = 0
                if not recycled:
                    return
            if not self._swept:
                self._swept = True
                self._sweep()
            created: list[Path] = []
            try:
                token = process_owner(self.directory)
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
                for _ in range(need):
                    path = self.directory / f"spare-{token}-{secrets.token_hex(8)}{SPARE_SUFFIX}"
                    fd = os.open(path, flags, FILE_MODE)
                    created.append(path)
                    try:
                        if hasattr(os, "fchmod"):
                            os.fchmod(fd, FILE_MODE)
                    finally:
                        os.close(fd)
                fsync_dir(self.directory)
            except OSError as exc:
                for path in created + recycled:
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                with self._lock:
                    self._failed_at = time.monotonic()
                logger.warning("cannot prepare spare journal files in %s: %s", self.directory, exc)
                return
            with self._lock:
                self._failed_at = None
                self._ready.extend(recycled)
                self._ready.extend(created)
                self.created += len(created)
                self.directory_syncs += 1

    def _sweep(self) -> None:
        """Remove the empty spares of processes that are gone (those holding a record are left to a load)."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return
        alive: dict[str, bool] = {}
        for name in names:
            token = spare_owner(name)
            if token is None:
                continue
            if token not in alive:
                alive[token] = is_own_token(self.directory, token) or owner_alive(self.directory, token)
            if alive[token]:
                continue
            path = self.directory / name
            with contextlib.suppress(OSError):
                if os.lstat(path).st_size == 0:
                    os.unlink(path)

    def discard(self) -> None:
        """Stop refilling and remove the spares that are ready (at exit; a leftover is harmless: the next
        refill or load in this directory removes it)."""
        with self._lock:
            self._closed = True
        # Let a refill in flight finish (it publishes what it made), so that none of its files is left behind.
        waited = self._refill_lock.acquire(timeout=_DISCARD_WAIT_S)
        try:
            with self._lock:
                ready, self._ready = self._ready + self._recycled, []
                self._recycled = []
            if os.getpid() != self.pid:
                return
            for path in ready:
                with contextlib.suppress(OSError):
                    os.unlink(path)
        finally:
            if waited:
                self._refill_lock.release()


_refilling = threading.local()


def refilling() -> bool:
    """Whether the current thread is preparing spares in the background (off every settlement's path)."""
    return getattr(_refilling, "active", False)


def _refill_in_background(pool: SparePool) -> None:
    _refilling.active = True
    try:
        pool.refill(when_low=True)
    except Exception:  # fresh records fall back to two barriers
        logger.exception("spare journal file refill failed in %s", pool.directory)
    finally:
        _refilling.active = False


def _submit(pool: SparePool) -> None:
    """Refill ``pool`` on the journal's I/O threads (none at interpreter shutdown: records take two barriers)."""
    try:
        io_pool().submit(_refill_in_background, pool)
    except RuntimeError:
        pool.cancel_request()


_pools: dict[tuple[str, bool], SparePool] = {}
_pools_lock = threading.Lock()


def pool_for(directory: Path, known: SparePool | None = None, *, synced: bool = True) -> SparePool:
    """This process's spare pool for ``directory`` (``synced``: the ``full`` mode's, else the ``process``
    mode's); ``known``, a pool the caller kept (see `retain`), is returned as it is while it is still current
    (no lock, no lookup)."""
    if _usable(known) and known.synced == synced:
        return known
    with _pools_lock:
        return _current(directory, synced)


def _usable(pool: SparePool | None) -> TypeGuard[SparePool]:
    return pool is not None and pool.pid == os.getpid() and not pool.closed


def _current(directory: Path, synced: bool) -> SparePool:
    key = (str(directory), synced)
    pool = _pools.get(key)
    if not _usable(pool):
        pool = _pools[key] = SparePool(directory, synced=synced)
    return pool


def retain(directory: Path, *, synced: bool = True) -> SparePool:
    """Count a user (an open `Journal`) of ``directory``'s pool (``synced``: see `pool_for`) and return it."""
    with _pools_lock:
        pool = _current(directory, synced)
        pool.users += 1
        return pool


def release(directory: Path, *, synced: bool = True) -> None:
    """Undo `retain`; the last user's release discards the pool's spares (waiting for a refill in flight), so
    that a closed client leaves no spare file behind and nothing is created in the directory afterwards."""
    key = (str(directory), synced)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None or pool.pid != os.getpid() or pool.users <= 0:
            return
        pool.users -= 1
        if pool.users:
            return
        del _pools[key]
    pool.discard()


def _reset_after_fork() -> None:
    global _pools_lock
    _pools_lock = threading.Lock()
    _pools.clear()  # the parent's spares belong to the parent's owner token


def _discard_all() -> None:
    with _pools_lock:
        pools = list(_pools.values())
    for pool in pools:
        pool.discard()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
atexit.register(_discard_all)
