"""Advisory locks on ``.lock`` files: exclusive between processes (flock, msvcrt, or an O_EXCL file with the
holder's pid) and between the threads of this process.

Two kinds of ownership use them. A replay *claims* one record with a lock on ``<record>.lock``. The process
that writes a fresh record owns it without any per-record file: it marks the record held in this process
(`hold`) and stamps the record with its *owner token*, whose lock ``owners/<token>.lock`` the process takes
once per journal directory and keeps for its lifetime (`process_owner`). A replay elsewhere leaves a record
alone while that owner lock is held (`owner_alive`): the kernel drops it when the process dies, however it
dies.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import logging
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Literal

from .paths import FILE_MODE
from .record import now_ms

__all__ = [
    "LOCK_SUFFIX",
    "OWNERS_DIR",
    "Lock",
    "hold",
    "is_own_token",
    "owner_alive",
    "pid_alive",
    "process_owner",
    "sweep_owners",
    "try_lock",
    "unhold",
]

logger = logging.getLogger("runcycles.journal")

LOCK_SUFFIX = ".lock"
_STALE_LOCK_SECONDS = 3600.0


def _optional_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


_fcntl: Any = _optional_module("fcntl")
_msvcrt: Any = _optional_module("msvcrt")

_LOCK_BACKEND: Literal["flock", "msvcrt", "excl"] = (
    "flock" if _fcntl is not None else "msvcrt" if _msvcrt is not None else "excl"
)

# Lock paths held by this process: makes claims exclusive between threads regardless of the OS lock's
# per-process or per-descriptor semantics.
_held: set[str] = set()
_held_lock = threading.Lock()


class Lock:
    """An acquired advisory lock on one ``.lock`` file."""

    def __init__(self, path: Path, fd: int | None, backend: str) -> None:
        self.path = path
        self.fd = fd
        self.backend = backend

    def release(self, *, remove: bool) -> None:
        try:
            if self.backend == "flock":
                if remove:
                    # Unlink while still holding the lock; a waiter that opened the old inode re-checks it.
                    with contextlib.suppress(OSError):
                        os.unlink(self.path)
                if self.fd is not None:
                    os.close(self.fd)
            elif self.backend == "msvcrt":
                if self.fd is not None:
                    with contextlib.suppress(OSError):
                        os.lseek(self.fd, 0, os.SEEK_SET)
                        _msvcrt.locking(self.fd, _msvcrt.LK_UNLCK, 1)
                    os.close(self.fd)
                if remove:
                    with contextlib.suppress(OSError):
                        os.unlink(self.path)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
        finally:
            with _held_lock:
                _held.discard(str(self.path))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _excl_lock_is_stale(path: Path) -> bool:
    try:
        content = path.read_text("ascii", errors="replace").split()
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return True
    if content and content[0].isdigit():
        return not pid_alive(int(content[0]))
    return time.time() - mtime > _STALE_LOCK_SECONDS


def _os_lock(path: Path) -> Lock | None:
    """Take the OS-level lock; ``None`` when another holder has it. Raises ``OSError``."""
    cloexec = getattr(os, "O_CLOEXEC", 0)
    if _LOCK_BACKEND == "excl":
        for _ in range(2):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | cloexec, FILE_MODE)
            except FileExistsError:
                if not _excl_lock_is_stale(path):
                    return None
                logger.warning("removing stale journal lock %s", path)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                continue
            try:
                os.write(fd, f"{os.getpid()} {now_ms()}\n".encode("ascii"))
            finally:
                os.close(fd)
            return Lock(path, None, "excl")
        return None
    for _ in range(8):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | cloexec, FILE_MODE)
        try:
            if _LOCK_BACKEND == "flock":
                _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
            else:
                _msvcrt.locking(fd, _msvcrt.LK_NBLCK, 1)
        except OSError as exc:
            os.close(fd)
            if isinstance(exc, BlockingIOError) or exc.errno in (errno.EACCES, errno.EAGAIN, errno.EDEADLK):
                return None
            raise
        if _LOCK_BACKEND == "flock":
            # The holder may have unlinked the lock file between our open and our flock: then we locked
            # an orphaned inode and must retry on the current file.
            try:
                current = os.stat(path)
            except FileNotFoundError:
                os.close(fd)
                continue
            mine = os.fstat(fd)
            if (current.st_ino, current.st_dev) != (mine.st_ino, mine.st_dev):
                os.close(fd)
                continue
        return Lock(path, fd, _LOCK_BACKEND)
    return None


def try_lock(path: Path) -> Lock | None:
    key = str(path)
    with _held_lock:
        if key in _held:
            return None
        _held.add(key)
    try:
        lock = _os_lock(path)
    except BaseException:
        with _held_lock:
            _held.discard(key)
        raise
    if lock is None:
        with _held_lock:
            _held.discard(key)
    return lock


def hold(path: Path | str) -> bool:
    """Mark ``path``'s lock held by this process without an OS lock; ``False`` if already held here."""
    key = str(path)
    with _held_lock:
        if key in _held:
            return False
        _held.add(key)
        return True


def unhold(path: Path | str) -> None:
    """Undo `hold`."""
    with _held_lock:
        _held.discard(str(path))


OWNERS_DIR = "owners"
_owners: dict[str, tuple[int, str, Lock]] = {}
_owners_lock = threading.Lock()
_probe_lock = threading.Lock()


def process_owner(directory: Path) -> str:
    """This process's owner token for ``directory``, its lock taken on first use and held until exit.

    Raises ``OSError``. A forked child gets its own token (the parent's lock is not the child's life).
    """
    key = str(directory)
    pid = os.getpid()
    with _owners_lock:
        known = _owners.get(key)
        if known is not None and known[0] == pid:
            return known[1]
        owners = directory / OWNERS_DIR
        with contextlib.suppress(FileExistsError):
            os.mkdir(owners, 0o700)
        for _ in range(4):
            token = f"{pid}-{secrets.token_hex(8)}"
            lock = try_lock(owners / f"{token}{LOCK_SUFFIX}")
            if lock is not None:
                _owners[key] = (pid, token, lock)
                return token
        raise OSError(errno.EAGAIN, "cannot take an owner lock", str(owners))


def owner_alive(directory: Path, token: object) -> bool:
    """Whether the process behind owner ``token`` still holds its lock (this process's own token: no).

    A dead owner's lock file is removed on the way.
    """
    if not isinstance(token, str) or not token or "/" in token or "\\" in token or token.startswith("."):
        return False
    with _owners_lock:
        known = _owners.get(str(directory))
    if known is not None and known[0] == os.getpid() and known[1] == token:
        return False
    path = directory / OWNERS_DIR / f"{token}{LOCK_SUFFIX}"
    # Another process's owner lock is taken in this process only by probes like this one. Two concurrent
    # probes must not see each other as the owner (a replay would skip a dead process's records), so they
    # take turns, and bypass the in-process claim registry that would report the other probe as a holder.
    with _probe_lock:
        if not path.exists():
            return False
        lock = _os_lock(path)
        if lock is None:
            return True
        lock.release(remove=True)
        return False


def sweep_owners(directory: Path) -> None:
    """Remove the lock files of owners that are gone (best effort)."""
    try:
        names = os.listdir(directory / OWNERS_DIR)
    except OSError:
        return
    for name in names:
        if name.endswith(LOCK_SUFFIX):
            with contextlib.suppress(OSError):
                owner_alive(directory, name[: -len(LOCK_SUFFIX)])


def _reset_probe_lock() -> None:
    global _probe_lock
    _probe_lock = threading.Lock()  # a probe in another thread at fork time never ends in the child


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_probe_lock)


def is_own_token(directory: Path, token: str) -> bool:
    """Whether ``token`` is this process's owner token for ``directory``."""
    with _owners_lock:
        known = _owners.get(str(directory))
    return known is not None and known[0] == os.getpid() and known[1] == token
