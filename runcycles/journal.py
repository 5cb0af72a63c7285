"""Durable settlement journal: one record per unsettled spend, written before the request leaves.

The journal implements the durable part of the client recovery profile: a record is persisted atomically
(temp file, fsync, rename, directory fsync) before the first commit or event request is sent, survives
process restarts, retry exhaustion and authentication failures, and is deleted only after a valid
settlement or an understood terminal rejection.

Layout: ``<root>/<fingerprint>/v2-<sha256 of the exact UTF-8 reservation id>.json``, where the fingerprint
is a one-way PBKDF2 derivation of the server URL and the principal (the tenant when configured, so the
partition survives API-key rotation; else the API key, which is never stored). Directories are 0700,
files 0600.

The API is synchronous, thread-safe and multi-process-safe; every call is short and blocking, so async
callers wrap it with ``anyio.to_thread.run_sync``. :meth:`Journal.claim` takes an exclusive, non-blocking
advisory lock so that exactly one worker (thread or process) settles a record at a time.

Records written by the earlier ``runcycles`` clients (record ``version`` 1, and their older sanitized file
names) are read and migrated to this library's version 2 format.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib
import json
import logging
import os
import re
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from .errors import CyclesError

__all__ = [
    "JOURNAL_VERSION",
    "Journal",
    "JournalBusyError",
    "JournalError",
    "JournalRecord",
    "LoadResult",
    "default_journal_root",
    "journal_filename",
    "journal_fingerprint",
]

logger = logging.getLogger("runcycles.journal")

JOURNAL_VERSION = 2
"""The record format version this library writes."""

_LEGACY_VERSION = 1
_MAX_INT = 2**63 - 1
_STALE_TEMP_SECONDS = 3600.0
_STALE_LOCK_SECONDS = 3600.0
_DIR_MODE = 0o700
_FILE_MODE = 0o600
_V2_NAME = re.compile(r"^v2-[0-9a-f]{64}\.json$")
_LEGACY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_QUARANTINE_DIR = "quarantine"
_TEMP_SUFFIX = ".tmp"
_LOCK_SUFFIX = ".lock"

Mode = Literal["commit", "event"]
_MODES = ("commit", "event")


class JournalError(CyclesError):
    """A journal I/O operation failed (directory, write, read, lock).

    Durability is then best-effort: callers surface the error to operators and still attempt the
    settlement request.
    """


class JournalBusyError(CyclesError):
    """Another worker (thread or process) holds the claim on this record; skip it for now.

    Not a :class:`JournalError`: nothing failed, the record is simply being settled elsewhere.
    """

    def __init__(self, reservation_id: str) -> None:
        super().__init__(f"journal record for reservation {reservation_id!r} is claimed by another worker")
        self.reservation_id = reservation_id


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_non_negative(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_INT:
        raise ValueError(f"{attribute.name} must be a non-negative integer, got {value!r}")


def _check_optional_non_negative(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _check_non_negative(inst, attribute, value)


def _check_non_empty_str(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{attribute.name} must be a non-empty string")


def _check_mode(_inst: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    if value not in _MODES:
        raise ValueError(f"mode must be 'commit' or 'event', got {value!r}")


def _check_dict(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, dict):
        raise ValueError(f"{attribute.name} must be a dict")


def _check_optional_dict(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _check_dict(inst, attribute, value)


def _check_version(_inst: object, _attribute: attrs.Attribute[Any], value: object) -> None:
    if value != JOURNAL_VERSION or not _is_int(value):
        raise ValueError(f"version must be {JOURNAL_VERSION}, got {value!r}")


@attrs.frozen(kw_only=True)
class JournalRecord:
    """One unsettled spend.

    ``commit_body`` is the exact commit request body as sent; ``event_body`` the event-fallback body (same
    idempotency key, the original subject, action, actual, metrics and metadata plus recovery markers).
    ``mode`` is ``"event"`` once the reservation was found expired. ``not_before_ms`` is the absolute
    wall-clock time before which no retry may be sent (from a 429). Update with ``attrs.evolve`` and
    :meth:`Journal.update`.
    """

    reservation_id: str = attrs.field(validator=_check_non_empty_str)
    mode: Mode = attrs.field(default="commit", validator=_check_mode)
    idempotency_key: str = attrs.field(validator=_check_non_empty_str)
    commit_body: dict[str, Any] = attrs.field(validator=_check_dict)
    event_body: dict[str, Any] | None = attrs.field(default=None, validator=_check_optional_dict)
    base_url: str = attrs.field(validator=attrs.validators.instance_of(str))
    recorded_at_ms: int = attrs.field(factory=_now_ms, validator=_check_non_negative)
    not_before_ms: int | None = attrs.field(default=None, validator=_check_optional_non_negative)
    attempts: int = attrs.field(default=0, validator=_check_non_negative)
    version: int = attrs.field(default=JOURNAL_VERSION, validator=_check_version)

    def __attrs_post_init__(self) -> None:
        if self.mode == "event" and self.event_body is None:
            raise ValueError("event_body is required in event mode")

    def to_json_dict(self) -> dict[str, Any]:
        """The on-disk JSON object (format version 2)."""
        return {
            "version": JOURNAL_VERSION,
            "reservation_id": self.reservation_id,
            "mode": self.mode,
            "idempotency_key": self.idempotency_key,
            "base_url": self.base_url,
            "commit_body": self.commit_body,
            "event_body": self.event_body,
            "recorded_at_ms": self.recorded_at_ms,
            "not_before_ms": self.not_before_ms,
            "attempts": self.attempts,
        }


@attrs.frozen(kw_only=True)
class LoadResult:
    """What :meth:`Journal.load` found: the valid records (oldest first) and the files moved aside."""

    records: list[JournalRecord] = attrs.field(factory=list)
    quarantined: list[Path] = attrs.field(factory=list)


class _InvalidRecord(Exception):
    """A journal file that cannot be read as a record (reason in the message)."""


# ---------------------------------------------------------------------------------------------- names


def journal_filename(reservation_id: str) -> str:
    """The standard record file name: ``v2-<sha256 lower hex of the exact UTF-8 reservation id>.json``."""
    return f"v2-{hashlib.sha256(reservation_id.encode('utf-8')).hexdigest()}.json"


def _legacy_filename(reservation_id: str) -> str:
    return _LEGACY_UNSAFE.sub("_", reservation_id) + ".json"


_fingerprint_cache: dict[tuple[str, bytes], str] = {}
_fingerprint_lock = threading.Lock()


def journal_fingerprint(base_url: str, *, tenant: str | None, api_key: str) -> str:
    """The partition directory name for (server, principal), compatible with the earlier clients.

    PBKDF2-HMAC-SHA256 (30,000 iterations, 32 bytes, hex truncated to 16) of ``"tenant\\n" + tenant`` when
    the tenant is non-blank (used untrimmed), else ``"key\\n" + api_key``, salted with
    ``"runcycles-commit-journal\\n" + base_url``. Cached per process, keyed by a digest (not the key).
    """
    password = f"tenant\n{tenant}" if tenant is not None and tenant.strip() else f"key\n{api_key}"
    pw = password.encode("utf-8")
    cache_key = (base_url, hashlib.sha256(pw).digest())
    with _fingerprint_lock:
        cached = _fingerprint_cache.get(cache_key)
    if cached is not None:
        return cached
    value = hashlib.pbkdf2_hmac("sha256", pw, f"runcycles-commit-journal\n{base_url}".encode(), 30_000, 32)
    fingerprint = value.hex()[:16]
    with _fingerprint_lock:
        if len(_fingerprint_cache) >= 256:
            _fingerprint_cache.clear()
        _fingerprint_cache[cache_key] = fingerprint
    return fingerprint


def _platform_state_root(platform: str, env: Mapping[str, str], home: str) -> Path:
    if platform == "win32":
        base = env.get("LOCALAPPDATA") or os.path.join(home, "AppData", "Local")
        return Path(base) / "runcycles" / "journal"
    xdg = env.get("XDG_STATE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "runcycles" / "journal"
    if platform == "darwin":
        return Path(home) / "Library" / "Application Support" / "runcycles" / "journal"
    return Path(home) / ".local" / "state" / "runcycles" / "journal"


def default_journal_root() -> Path:
    """The per-user journal root: ``$XDG_STATE_HOME/runcycles/journal`` else ``~/.local/state/...``.

    On macOS (without ``XDG_STATE_HOME``) ``~/Library/Application Support/runcycles/journal``; on Windows
    ``%LOCALAPPDATA%\\runcycles\\journal``. When it cannot be created, :class:`Journal` falls back to
    ``<tempdir>/runcycles-<uid>/journal``.
    """
    return _platform_state_root(sys.platform, os.environ, os.path.expanduser("~"))


def _user_tag() -> str:
    getuid = getattr(os, "getuid", None)
    if getuid is not None:
        return str(getuid())
    import getpass

    try:
        return _LEGACY_UNSAFE.sub("_", getpass.getuser())
    except Exception:  # getpass raises various errors when no user name is available
        return "user"


def _fallback_root() -> Path:
    return Path(tempfile.gettempdir()) / f"runcycles-{_user_tag()}" / "journal"


_fallback_warned = False
_fallback_warn_lock = threading.Lock()


def _warn_fallback_once(preferred: Path, fallback: Path, exc: BaseException) -> None:
    global _fallback_warned
    with _fallback_warn_lock:
        if _fallback_warned:
            return
        _fallback_warned = True
    logger.warning(
        "journal directory %s is not writable (%s); using %s instead (it may not survive a reboot)",
        preferred,
        exc,
        fallback,
    )


# ------------------------------------------------------------------------------------------ file I/O


def _makedirs(path: Path) -> None:
    """Create ``path`` and any missing parents with mode 0700 (chmod'ed, so the umask cannot widen it)."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, _DIR_MODE)
        except FileExistsError:
            if not directory.is_dir():
                raise
            continue
        with contextlib.suppress(OSError):
            os.chmod(directory, _DIR_MODE)
    if not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(path))


def _fsync_dir(directory: Path) -> None:
    if os.name == "nt":
        return
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _atomic_write(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically and durably; raises ``OSError``."""
    tmp = target.with_name(f"{target.name}.{os.getpid()}.{secrets.token_hex(4)}{_TEMP_SUFFIX}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp, flags, _FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            if hasattr(os, "fchmod"):
                os.fchmod(handle.fileno(), _FILE_MODE)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON constant {name}")


def _read_json(path: Path) -> dict[str, Any]:
    """Read a journal file; ``FileNotFoundError`` passes through, unreadable content is ``_InvalidRecord``."""
    return _decode(path.read_bytes())


def _decode(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _InvalidRecord(f"not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise _InvalidRecord("top-level JSON value is not an object")
    return data


def _field_str(data: Mapping[str, Any], name: str, *, non_empty: bool = True) -> str:
    value = data.get(name)
    if not isinstance(value, str) or (non_empty and not value):
        raise _InvalidRecord(f"{name} must be a {'non-empty ' if non_empty else ''}string")
    return value


def _field_int(data: Mapping[str, Any], name: str, *, optional: bool = False) -> int | None:
    value = data.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_INT:
        raise _InvalidRecord(f"{name} must be a non-negative integer")
    return value


def _field_body(data: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _InvalidRecord(f"{name} must be an object or null")
    return value


def _parse_record(data: Mapping[str, Any]) -> JournalRecord:
    """Build a record from either on-disk format; raises ``_InvalidRecord``."""
    version = data.get("version")
    if not _is_int(version) or version not in (_LEGACY_VERSION, JOURNAL_VERSION):
        raise _InvalidRecord(f"unsupported record version {version!r}")
    reservation_id = _field_str(data, "reservation_id")
    base_url = _field_str(data, "base_url", non_empty=False)
    if version == JOURNAL_VERSION:
        mode = data.get("mode")
        commit_body = _field_body(data, "commit_body")
        event_body = _field_body(data, "event_body")
        idempotency_key = _field_str(data, "idempotency_key")
        attempts = _field_int(data, "attempts")
    else:
        # Legacy format: absent mode means commit; the key lives in the bodies; no attempt counter.
        mode = data.get("mode", "commit")
        commit_body = _field_body(data, "commit_body")
        event_body = _field_body(data, "event_fallback_body")
        key: object = None
        for body in (commit_body, event_body):
            if body is not None and isinstance(body.get("idempotency_key"), str) and body["idempotency_key"]:
                key = body["idempotency_key"]
                break
        if not isinstance(key, str):
            raise _InvalidRecord("no idempotency_key in the record bodies")
        idempotency_key = key
        attempts = 0
        if mode == "event" and commit_body is None:
            commit_body = {}
    if mode not in _MODES:
        raise _InvalidRecord(f"unknown mode {mode!r}")
    if commit_body is None:
        raise _InvalidRecord("commit_body is required")
    if mode == "event" and event_body is None:
        raise _InvalidRecord("event mode requires an event body")
    recorded_at_ms = _field_int(data, "recorded_at_ms")
    not_before_ms = _field_int(data, "not_before_ms", optional=True)
    try:
        return JournalRecord(
            reservation_id=reservation_id,
            mode=mode,
            idempotency_key=idempotency_key,
            commit_body=commit_body,
            event_body=event_body,
            base_url=base_url,
            recorded_at_ms=recorded_at_ms if recorded_at_ms is not None else 0,
            not_before_ms=not_before_ms,
            attempts=attempts if attempts is not None else 0,
        )
    except (TypeError, ValueError) as exc:
        raise _InvalidRecord(str(exc)) from exc


def _encode(record: JournalRecord) -> bytes:
    try:
        text = json.dumps(record.to_json_dict(), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        rid = record.reservation_id
        raise JournalError(f"journal record for reservation {rid!r} is not JSON: {exc}") from exc
    return text.encode("utf-8")


# -------------------------------------------------------------------------------------------- locking


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


class _Lock:
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


def _pid_alive(pid: int) -> bool:
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
        return not _pid_alive(int(content[0]))
    return time.time() - mtime > _STALE_LOCK_SECONDS


def _os_lock(path: Path) -> _Lock | None:
    """Take the OS-level lock; ``None`` when another holder has it. Raises ``OSError``."""
    cloexec = getattr(os, "O_CLOEXEC", 0)
    if _LOCK_BACKEND == "excl":
        for _ in range(2):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | cloexec, _FILE_MODE)
            except FileExistsError:
                if not _excl_lock_is_stale(path):
                    return None
                logger.warning("removing stale journal lock %s", path)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                continue
            try:
                os.write(fd, f"{os.getpid()} {_now_ms()}\n".encode("ascii"))
            finally:
                os.close(fd)
            return _Lock(path, None, "excl")
        return None
    for _ in range(8):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | cloexec, _FILE_MODE)
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
        return _Lock(path, fd, _LOCK_BACKEND)
    return None


def _try_lock(path: Path) -> _Lock | None:
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


# -------------------------------------------------------------------------------------------- journal


class Journal:
    """The settlement journal of one (server, principal) partition.

    ``root`` is the journal root (``None``: :func:`default_journal_root`, with a temp-dir fallback when it is
    not writable); records live in ``<root>/<fingerprint>/``. ``api_key`` only derives the fingerprint when
    no tenant is configured; it is never stored. Directories are created on first use. All methods are
    thread-safe; I/O failures raise :class:`JournalError`.
    """

    __slots__ = ("_base_url", "_dir_lock", "_directory", "_fingerprint", "_root")

    def __init__(self, root: Path | str | None, *, base_url: str, tenant: str | None, api_key: str) -> None:
        self._root = Path(os.path.abspath(root)) if root is not None else None
        self._base_url = base_url
        self._fingerprint = journal_fingerprint(base_url, tenant=tenant, api_key=api_key)
        self._directory: Path | None = None
        self._dir_lock = threading.Lock()

    def __repr__(self) -> str:
        where = self._directory if self._directory is not None else self._root
        return (
            f"Journal(directory={str(where)!r}, base_url={self._base_url!r}, "
            f"fingerprint={self._fingerprint!r})"
        )

    @property
    def base_url(self) -> str:
        """The server URL this journal's records belong to."""
        return self._base_url

    @property
    def fingerprint(self) -> str:
        """The partition name derived from (server, principal)."""
        return self._fingerprint

    @property
    def directory(self) -> Path:
        """The partition directory, created (0700) on first access; raises :class:`JournalError`."""
        directory = self._directory
        if directory is not None:
            return directory
        with self._dir_lock:
            if self._directory is None:
                self._directory = self._resolve_directory()
            return self._directory

    def _resolve_directory(self) -> Path:
        if self._root is not None:
            target = self._root / self._fingerprint
            try:
                self._prepare(target)
            except OSError as exc:
                raise JournalError(f"cannot create journal directory {target}: {exc}") from exc
            return target
        preferred = default_journal_root() / self._fingerprint
        try:
            self._prepare(preferred)
            return preferred
        except OSError as exc:
            fallback = _fallback_root() / self._fingerprint
            try:
                self._prepare(fallback, check_owner=fallback.parent.parent)
            except OSError as exc2:
                raise JournalError(
                    f"cannot create journal directory {preferred} ({exc}) nor fallback {fallback} ({exc2})"
                ) from exc2
            _warn_fallback_once(preferred, fallback, exc)
            return fallback

    @staticmethod
    def _prepare(directory: Path, check_owner: Path | None = None) -> None:
        _makedirs(directory)
        if check_owner is not None and hasattr(os, "getuid"):
            # The fallback lives in a shared temp dir: refuse one that another user created or a symlink.
            st = os.lstat(check_owner)
            if not os.path.isdir(check_owner) or os.path.islink(check_owner) or st.st_uid != os.getuid():
                raise PermissionError(errno.EPERM, "not owned by the current user", str(check_owner))
            os.chmod(check_owner, _DIR_MODE)
        with contextlib.suppress(OSError):
            os.chmod(directory, _DIR_MODE)
        if not os.access(directory, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "not writable", str(directory))

    def path_for(self, reservation_id: str) -> Path:
        """The record file of ``reservation_id`` (whether or not it exists)."""
        return self.directory / journal_filename(reservation_id)

    # ------------------------------------------------------------------------------------ writing

    def write(self, record: JournalRecord) -> None:
        """Persist ``record`` atomically and durably; complete when this returns."""
        data = _encode(record)
        target = self.path_for(record.reservation_id)
        try:
            _atomic_write(target, data)
        except OSError as exc:
            raise JournalError(
                f"failed to journal settlement for reservation {record.reservation_id!r} at {target}: {exc}"
            ) from exc

    def update(self, record: JournalRecord) -> None:
        """Replace the stored record (same as :meth:`write`)."""
        self.write(record)

    def delete(self, reservation_id: str) -> None:
        """Remove the record (and a legacy-named file whose stored id is exactly this id). Missing is fine."""
        directory = self.directory
        target = directory / journal_filename(reservation_id)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target)
            legacy = directory / _legacy_filename(reservation_id)
            if legacy.name != target.name and self._stored_id(legacy) == reservation_id:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(legacy)
            _fsync_dir(directory)
        except OSError as exc:
            raise JournalError(
                f"failed to delete journal record for reservation {reservation_id!r}: {exc}"
            ) from exc
        # Clean the lock file unless a claim holds it (the holder removes it when it releases).
        self._remove_lock_if_free(target)

    @staticmethod
    def _remove_lock_if_free(record_path: Path) -> None:
        lock_path = record_path.with_name(record_path.name + _LOCK_SUFFIX)
        if not lock_path.exists():
            return
        try:
            lock = _try_lock(lock_path)
        except OSError:
            return
        if lock is not None:
            lock.release(remove=not record_path.exists())

    @staticmethod
    def _stored_id(path: Path) -> str | None:
        try:
            value = _read_json(path).get("reservation_id")
        except (FileNotFoundError, _InvalidRecord):
            return None
        return value if isinstance(value, str) else None

    # ------------------------------------------------------------------------------------ claiming

    @contextlib.contextmanager
    def claim(self, reservation_id: str) -> Iterator[JournalRecord | None]:
        """Exclusively claim the record of ``reservation_id`` (non-blocking).

        Yields the freshly re-read record, or ``None`` when there is none (never written, or settled
        meanwhile; an invalid file is quarantined and gives ``None``). Raises :class:`JournalBusyError` when
        another thread or process holds the claim. The settlement worker that writes a record should hold
        the claim while it works (write, send, delete inside the ``with``) so replays elsewhere skip it.
        """
        target = self.path_for(reservation_id)
        lock = self._lock(target)
        if lock is None:
            raise JournalBusyError(reservation_id)
        try:
            record = self._read_claimed(reservation_id, target)
            yield record
        finally:
            lock.release(remove=not target.exists())

    def _lock(self, target: Path) -> _Lock | None:
        lock_path = target.with_name(target.name + _LOCK_SUFFIX)
        try:
            return _try_lock(lock_path)
        except OSError as exc:
            raise JournalError(f"cannot lock journal record {target}: {exc}") from exc

    def _read_claimed(
        self, reservation_id: str, target: Path, quarantined: list[Path] | None = None, *, legacy: bool = True
    ) -> JournalRecord | None:
        try:
            data = _read_json(target)
        except FileNotFoundError:
            return self._migrate_legacy_claimed(reservation_id, quarantined) if legacy else None
        except _InvalidRecord as exc:
            self._quarantine(target, str(exc), quarantined)
            return None
        except OSError as exc:
            raise JournalError(f"cannot read journal record {target}: {exc}") from exc
        try:
            record = _parse_record(data)
            if record.reservation_id != reservation_id:
                raise _InvalidRecord("stored reservation_id does not match the file name")
        except _InvalidRecord as exc:
            self._quarantine(target, str(exc), quarantined)
            return None
        if data.get("version") != JOURNAL_VERSION:
            self.write(record)
        return record

    def migrate_legacy(self, reservation_id: str) -> JournalRecord | None:
        """Migrate the legacy-named file of ``reservation_id`` to the standard name, under the claim.

        Only a file whose stored reservation id is exactly ``reservation_id`` is migrated and removed; a
        colliding legacy file of another id is left untouched. Returns the (standard) record, if any.
        Raises :class:`JournalBusyError` when the record is claimed.
        """
        with self.claim(reservation_id) as record:
            return record

    def _migrate_legacy_claimed(
        self, reservation_id: str, quarantined: list[Path] | None = None
    ) -> JournalRecord | None:
        directory = self.directory
        legacy = directory / _legacy_filename(reservation_id)
        target = directory / journal_filename(reservation_id)
        if legacy.name == target.name:
            return None
        try:
            data = _read_json(legacy)
        except FileNotFoundError:
            return None
        except _InvalidRecord:
            return None  # cannot tell whose it is: never touch it from a lookup by id
        except OSError as exc:
            raise JournalError(f"cannot read legacy journal record {legacy}: {exc}") from exc
        if data.get("reservation_id") != reservation_id:
            return None
        try:
            record = _parse_record(data)
        except _InvalidRecord as exc:
            self._quarantine(legacy, str(exc), quarantined)
            return None
        self.write(record)
        try:
            os.unlink(legacy)
            _fsync_dir(directory)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise JournalError(
                f"migrated {legacy} to {target} but cannot remove the legacy file: {exc}"
            ) from exc
        logger.info("migrated legacy journal record %s to %s", legacy, target)
        return record

    # ------------------------------------------------------------------------------------ loading

    def _quarantine(self, path: Path, reason: str, quarantined: list[Path] | None = None) -> Path | None:
        quarantine = path.parent / _QUARANTINE_DIR
        try:
            _makedirs(quarantine)
            destination = quarantine / f"{path.name}.corrupt-{_now_ms()}"
            if destination.exists():
                destination = destination.with_name(f"{destination.name}-{secrets.token_hex(4)}")
            os.replace(path, destination)
            _fsync_dir(path.parent)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise JournalError(f"cannot quarantine invalid journal record {path}: {exc}") from exc
        logger.error("quarantined invalid journal record %s (%s) as %s", path, reason, destination)
        if quarantined is not None:
            quarantined.append(destination)
        return destination

    def load(self) -> LoadResult:
        """Read every record of this partition (oldest first) for replay.

        Invalid files (bad JSON, unknown version, missing or invalid fields) are moved into ``quarantine/``,
        logged at ERROR and listed; the other records still load. Version 1 records are rewritten in
        version 2 format; legacy-named files are migrated to the standard name (only under their own stored
        id). Temp files older than one hour are removed. Records being claimed by another worker are still
        listed (their claim will report busy); records of another ``base_url`` are skipped.
        """
        directory = self.directory
        try:
            names = sorted(os.listdir(directory))
        except OSError as exc:
            raise JournalError(f"cannot list journal directory {directory}: {exc}") from exc
        records: list[JournalRecord] = []
        quarantined: list[Path] = []
        present = set(names)
        for name in names:
            path = directory / name
            if name.endswith(_TEMP_SUFFIX):
                self._remove_stale_temp(path)
            elif name.endswith(_LOCK_SUFFIX):
                if name[: -len(_LOCK_SUFFIX)] not in present:
                    self._remove_lock_if_free(path.with_name(name[: -len(_LOCK_SUFFIX)]))
            elif name.endswith(".json"):
                record = self._load_one(path, quarantined)
                if record is None:
                    continue
                if record.base_url != self._base_url:
                    logger.warning(
                        "skipping journal record %s: base_url %r is not %r",
                        path,
                        record.base_url,
                        self._base_url,
                    )
                    continue
                records.append(record)
        unique: dict[str, JournalRecord] = {}
        for record in records:
            unique.setdefault(record.reservation_id, record)
        ordered = sorted(unique.values(), key=lambda r: (r.recorded_at_ms, r.reservation_id))
        return LoadResult(records=ordered, quarantined=quarantined)

    def _load_one(self, path: Path, quarantined: list[Path]) -> JournalRecord | None:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            # One unreadable entry must not stop the replay of the others; it stays for a later load.
            logger.error("cannot read journal record %s: %s", path, exc)
            return None
        try:
            data = _decode(raw)
            record = _parse_record(data)
        except _InvalidRecord as exc:
            self._quarantine_unless_changed(path, raw, str(exc), quarantined)
            return None
        reservation_id = record.reservation_id
        standard = path.name == journal_filename(reservation_id)
        if not standard and path.name != _legacy_filename(reservation_id):
            if _V2_NAME.match(path.name) is None:
                # A legacy-looking file whose id does not map to its name: not provably ours, leave it.
                logger.warning(
                    "leaving journal file %s alone: its reservation_id does not match the name", path
                )
                return None
            reason = "reservation_id does not match the file name"
            self._quarantine_unless_changed(path, raw, reason, quarantined)
            return None
        if standard and data.get("version") == JOURNAL_VERSION:
            return record
        # A version 1 record to rewrite, or a legacy name to migrate: done under the record's claim.
        target = self.path_for(reservation_id)
        lock = self._lock(target)
        if lock is None:
            return None  # being worked on elsewhere; a later load sees the result
        try:
            if standard:
                return self._read_claimed(reservation_id, target, quarantined)
            existing = self._read_claimed(reservation_id, target, quarantined, legacy=False)
            if existing is None:
                return self._migrate_legacy_claimed(reservation_id, quarantined)
            # The standard record is authoritative; the legacy file is a stale copy of the same id.
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise JournalError(f"cannot remove migrated legacy journal record {path}: {exc}") from exc
            return existing
        finally:
            lock.release(remove=not target.exists())

    def _quarantine_unless_changed(
        self, path: Path, raw: bytes, reason: str, quarantined: list[Path]
    ) -> None:
        lock = self._lock(path)
        if lock is None:
            return
        try:
            # Re-check under the lock: a worker may have replaced the file with a valid record meanwhile.
            try:
                if path.read_bytes() != raw:
                    return
            except FileNotFoundError:
                return
            except OSError as exc:
                raise JournalError(f"cannot read journal record {path}: {exc}") from exc
            self._quarantine(path, reason, quarantined)
        finally:
            lock.release(remove=not path.exists())

    @staticmethod
    def _remove_stale_temp(path: Path) -> None:
        try:
            if time.time() - path.stat().st_mtime > _STALE_TEMP_SECONDS:
                os.unlink(path)
                logger.info("removed stale journal temp file %s", path)
        except OSError:
            pass
