"""Where journal records live: the partition fingerprint, the per-user root, record file names, directories."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path

from ..errors import JournalError

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "V2_NAME",
    "default_journal_root",
    "fallback_root",
    "fsync_dir",
    "journal_filename",
    "journal_fingerprint",
    "legacy_filename",
    "makedirs",
    "resolve_partition",
    "warn_fallback_once",
]

logger = logging.getLogger("runcycles.journal")

DIR_MODE = 0o700
FILE_MODE = 0o600
V2_NAME = re.compile(r"^v2-[0-9a-f]{64}\.json$")
_LEGACY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

def journal_filename(reservation_id: str) -> str:
    """The standard record file name: ``v2-<sha256 lower hex of the exact UTF-8 reservation id>.json``."""
    return f"v2-{hashlib.sha256(reservation_id.encode('utf-8')).hexdigest()}.json"


def legacy_filename(reservation_id: str) -> str:
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


def fallback_root() -> Path:
    return Path(tempfile.gettempdir()) / f"runcycles-{_user_tag()}" / "journal"


_fallback_warned = False
_fallback_warn_lock = threading.Lock()


def warn_fallback_once(preferred: Path, fallback: Path, exc: BaseException) -> None:
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




def fsync_dir(directory: Path) -> None:
    """Make ``directory``'s entries (creations, renames) durable; a no-op where directories cannot be synced."""
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


def makedirs(path: Path) -> None:
    """Create ``path`` and any missing parents with mode 0700 (chmod'ed, so the umask cannot widen it); each
    directory it creates is made durable in its parent (records synced inside it must not vanish with it)."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            if not directory.is_dir():
                raise
            continue
        with contextlib.suppress(OSError):
            os.chmod(directory, DIR_MODE)
        with contextlib.suppress(OSError):  # best effort: e.g. a parent we may not open
            fsync_dir(directory.parent)
    if not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(path))


def resolve_partition(root: Path | None, fingerprint: str) -> Path:
    """Create (0700) and return ``<root>/<fingerprint>``; without ``root`` the per-user default, falling back
    to a temp-dir root owned by this user. Raises :class:`JournalError`."""
    if root is not None:
        target = root / fingerprint
        try:
            _prepare(target)
        except OSError as exc:
            raise JournalError(f"cannot create journal directory {target}: {exc}") from exc
        return target
    preferred = default_journal_root() / fingerprint
    try:
        _prepare(preferred)
        return preferred
    except OSError as exc:
        fallback = fallback_root() / fingerprint
        try:
            _prepare(fallback, check_owner=fallback.parent.parent)
        except OSError as exc2:
            raise JournalError(
                f"cannot create journal directory {preferred} ({exc}) nor fallback {fallback} ({exc2})"
            ) from exc2
        warn_fallback_once(preferred, fallback, exc)
        return fallback


def _prepare(directory: Path, check_owner: Path | None = None) -> None:
    makedirs(directory)
    if check_owner is not None and hasattr(os, "getuid"):
        # The fallback lives in a shared temp dir: refuse one that another user created or a symlink.
        st = os.lstat(check_owner)
        if not os.path.isdir(check_owner) or os.path.islink(check_owner) or st.st_uid != os.getuid():
            raise PermissionError(errno.EPERM, "not owned by the current user", str(check_owner))
        os.chmod(check_owner, DIR_MODE)
    with contextlib.suppress(OSError):
        os.chmod(directory, DIR_MODE)
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "not writable", str(directory))
