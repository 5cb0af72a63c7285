"""SQLite plumbing of the ledger: a bounded connection pool, the start-up integrity check, durability.

Connections are pooled rather than kept per thread: worker threads of an ASGI server come and go, and a
connection per thread that ever ran a request leaked one file descriptor (or three, with WAL) per retired
thread. The pool holds at most ``size`` connections in total; a caller beyond that waits for one to be
returned.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import tenacity

DURABILITY = ("full", "normal")
DEFAULT_POOL_SIZE = 8
_NEW_FILE_GRACE_S = 2.0

_SECRETS_SCHEMA = "CREATE TABLE IF NOT EXISTS server_secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL)"


class LocalDatabaseError(RuntimeError):
    """The database file cannot be used (damaged, not a Cycles database, unreadable); the message names it."""


class Pool:
    """At most ``size`` connections made by ``connect``, handed out one caller at a time."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], size: int = DEFAULT_POOL_SIZE) -> None:
        self._connect = connect
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self.opened = 0
        """How many connections are open now (idle or in use)."""

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """Borrow a connection (an idle one, or a new one while fewer than ``size`` exist)."""
        self._slots.acquire()
        try:
            with self._lock:
                if self._closed:
                    raise RuntimeError("the local Cycles server is closed")
                conn = self._idle.pop() if self._idle else None
                if conn is None:
                    self.opened += 1
            if conn is None:
                try:
                    conn = self._connect()
                except BaseException:
                    with self._lock:
                        self.opened -= 1
                    raise
            try:
                yield conn
            finally:
                with self._lock:
                    keep = not self._closed
                    if keep:
                        self._idle.append(conn)
                    else:
                        self.opened -= 1
                if not keep:
                    close(conn)
        finally:
            self._slots.release()

    def close(self) -> None:
        """Close the idle connections now and each borrowed one when it comes back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self.opened -= len(idle)
        for conn in idle:
            close(conn)


def close(conn: sqlite3.Connection) -> None:
    """Close a connection, ignoring errors (it is being discarded)."""
    with contextlib.suppress(sqlite3.Error):
        conn.close()


def check_file(path: str) -> None:
    """Refuse a file that cannot hold a Cycles ledger, before anything writes to it.

    A zero-length file is refused too: SQLite would silently treat it as a new, empty database, which for a
    file that once held a ledger means starting over with no budgets and no record of spend. A file created
    in the last few seconds may be another process initialising the same new database (SQLite creates the
    file empty and writes its header a moment later), so that gets a short wait first.
    """
    try:
        size = os.path.getsize(path)
        deadline = time.monotonic() + _NEW_FILE_GRACE_S
        while size == 0 and time.time() - os.path.getmtime(path) < _NEW_FILE_GRACE_S:
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)  # polling a file another process is writing; there is nothing to wait on
            size = os.path.getsize(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise LocalDatabaseError(f"cannot read database {path}: {exc.strerror or exc}") from None
    if size == 0:
        raise LocalDatabaseError(
            f"database {path} is an empty (0-byte) file, not a Cycles ledger; "
            "restore it from a backup, or delete it to start a new ledger"
        )


def _locked(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


def enable_wal(conn: sqlite3.Connection, timeout_s: float) -> None:
    """``PRAGMA journal_mode = WAL``, retried while another connection holds the database for up to
    ``timeout_s``: when several processes open a new database together, SQLite answers the mode switch with
    "database is locked" at once instead of calling the busy handler. Another error, or the lock's error once
    the time is up, is raised as it is."""
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(_locked),
        wait=tenacity.wait_exponential(multiplier=0.001, max=0.05),  # a lock held for a few statements
        stop=tenacity.stop_after_delay(timeout_s),
        reraise=True,
    )
    retrying(conn.execute, "PRAGMA journal_mode = WAL")


def quick_check(conn: sqlite3.Connection, path: str) -> None:
    """``PRAGMA quick_check`` (page structure, not index contents); raises :class:`LocalDatabaseError`."""
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        raise damaged(path, exc) from None
    problems = [
        line.strip()
        for row in rows
        if row and row[0] != "ok"
        for line in str(row[0]).splitlines()
        if line.strip() and not line.startswith("***")
    ]
    if problems:
        more = f"; {len(problems) - 1} more problems" if len(problems) > 1 else ""
        raise LocalDatabaseError(
            f"database {path} is damaged ({problems[0][:200]}{more}); restore it from a backup or move it aside"
        )


def damaged(path: str, exc: BaseException) -> LocalDatabaseError:
    """The error for a file SQLite refuses to open or read."""
    reason = " ".join(str(exc).split())[:200]
    return LocalDatabaseError(f"database {path} cannot be used: {reason}; restore it from a backup or move it aside")


def synchronous_pragma(durability: str) -> str:
    """The ``PRAGMA synchronous`` statement for a durability level (``full`` or ``normal``)."""
    if durability not in DURABILITY:
        raise ValueError(f"durability must be one of {', '.join(DURABILITY)}, not {durability!r}")
    return f"PRAGMA synchronous = {durability.upper()}"


def server_secret(conn: sqlite3.Connection, name: str) -> bytes:
    """A random per-database secret (created on first use, then stored in the database)."""
    conn.execute(_SECRETS_SCHEMA)
    # INSERT OR IGNORE first: processes starting together on one file all end up with the first one's secret.
    conn.execute("INSERT OR IGNORE INTO server_secrets VALUES (?, ?)", (name, secrets.token_bytes(32)))
    row = conn.execute("SELECT value FROM server_secrets WHERE name = ?", (name,)).fetchone()
    return bytes(row[0])
