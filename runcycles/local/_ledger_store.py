"""The SQLite ledger: schema, connections and transactions (row types and SQL operations: ``_ledger``).

One database is either a file (WAL mode, a bounded connection pool, ``busy_timeout`` so several processes
can share it) or private memory (one connection behind a lock). Every mutation runs inside :meth:`Ledger.write`,
a ``BEGIN IMMEDIATE`` transaction, so a multi-scope reserve or commit is all-or-nothing and writers never
interleave. Within one process writers are also serialised by a lock, which is much cheaper than letting
threads spin on SQLite's busy handler.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager, contextmanager

import attrs

from . import _sqlite

_EPOCH = "SELECT n FROM auth_epoch WHERE id = 0"
_MAX_BATCH = 64
"""At most this many write transactions share one commit (group commit on a file database)."""


@attrs.define(eq=False)
class _Batch:
    """One open ``BEGIN IMMEDIATE`` transaction that several writers' savepoints share until one commits it."""

    conn: sqlite3.Connection
    stack: contextlib.ExitStack
    done: threading.Event = attrs.Factory(threading.Event)
    error: BaseException | None = None
    size: int = 0



def _in_savepoint(batch: _Batch) -> Generator[sqlite3.Connection, None, BaseException | None]:
    """Run the caller's work in a savepoint of ``batch``; returns what it raised, to re-raise once settled."""
    try:
        batch.conn.execute("SAVEPOINT w")
    except BaseException as exc:
        return exc
    outcome: BaseException | None = None
    try:
        yield batch.conn
    except BaseException as exc:
        outcome = exc
    try:
        if outcome is not None and not getattr(outcome, "commit_on_error", False):
            batch.conn.execute("ROLLBACK TO w")
        batch.conn.execute("RELEASE w")
    except BaseException as exc:  # the transaction is in an unknown state: the batch must fail
        outcome = outcome or exc
        batch.error = batch.error or exc
    return outcome


def _raise_for(batch: _Batch, outcome: BaseException | None) -> None:
    """Re-raise what a writer raised, or the batch's failure when the writer's work was not committed."""
    if batch.error is not None and (outcome is None or getattr(outcome, "commit_on_error", False)):
        if outcome is batch.error:
            raise outcome
        raise sqlite3.OperationalError(f"the write transaction failed: {batch.error}") from batch.error
    if outcome is not None:
        raise outcome


class _MemoryWrite:
    """The write transaction of an in-memory ledger (a plain context manager: this is the hot path).

    ``BEGIN IMMEDIATE`` under the write lock and the connection lock; committed on normal exit or on an
    error that carries ``commit_on_error``, rolled back otherwise.
    """

    __slots__ = ("_ledger",)

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def __enter__(self) -> sqlite3.Connection:
        ledger = self._ledger
        ledger._write_lock.acquire()
        ledger._memory_lock.acquire()
        try:
            if ledger._closed:
                raise RuntimeError("the local Cycles server is closed")
            ledger._memory_conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            ledger._memory_lock.release()
            ledger._write_lock.release()
            raise
        return ledger._memory_conn

    def __exit__(self, _type: object, exc: BaseException | None, _tb: object) -> None:
        ledger = self._ledger
        try:
            if exc is None or getattr(exc, "commit_on_error", False):
                ledger._memory_conn.execute("COMMIT")
            else:
                ledger.rollbacks += 1
                ledger._memory_conn.execute("ROLLBACK")
        finally:
            ledger._memory_lock.release()
            ledger._write_lock.release()


# ``auth_epoch`` counts changes to API keys and tenants, by any process (triggers), so that a process may
# cache what authenticating a key found and know, with one cheap read, when that may have changed.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    tenant_id TEXT PRIMARY KEY, status TEXT NOT NULL, doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, key_prefix TEXT NOT NULL, salt BLOB NOT NULL,
    key_hash BLOB NOT NULL, status TEXT NOT NULL, expires_at_ms INTEGER NOT NULL, doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS api_keys_prefix ON api_keys(key_prefix);
CREATE TABLE IF NOT EXISTS budgets (
    scope TEXT NOT NULL, unit TEXT NOT NULL, tenant_id TEXT NOT NULL, ledger_id TEXT NOT NULL,
    allocated INTEGER NOT NULL, reserved INTEGER NOT NULL, spent INTEGER NOT NULL, debt INTEGER NOT NULL,
    overdraft_limit INTEGER NOT NULL, is_over_limit INTEGER NOT NULL, status TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (scope, unit)
);
CREATE INDEX IF NOT EXISTS budgets_tenant ON budgets(tenant_id, scope);
CREATE TABLE IF NOT EXISTS reservations (
    reservation_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, status TEXT NOT NULL, unit TEXT NOT NULL,
    reserved INTEGER NOT NULL, committed INTEGER, created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL, grace_ms INTEGER NOT NULL, deadline_ms INTEGER NOT NULL,
    finalized_at_ms INTEGER, extension_count INTEGER NOT NULL, overage_policy TEXT NOT NULL,
    scope_path TEXT NOT NULL, idempotency_key TEXT NOT NULL,
    s_tenant TEXT, s_workspace TEXT, s_app TEXT, s_workflow TEXT, s_agent TEXT, s_toolset TEXT,
    budget_scopes TEXT NOT NULL, doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reservations_due ON reservations(status, deadline_ms);
CREATE INDEX IF NOT EXISTS reservations_tenant ON reservations(tenant_id, created_at_ms);
CREATE TABLE IF NOT EXISTS idempotency (
    tenant_id TEXT NOT NULL, endpoint TEXT NOT NULL, key TEXT NOT NULL, payload_hash TEXT NOT NULL,
    status INTEGER NOT NULL, body BLOB NOT NULL, expires_at_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, endpoint, key)
);
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, created_at_ms INTEGER NOT NULL, doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS auth_epoch (id INTEGER PRIMARY KEY CHECK (id = 0), n INTEGER NOT NULL);
INSERT OR IGNORE INTO auth_epoch VALUES (0, 0);
CREATE TRIGGER IF NOT EXISTS auth_epoch_api_keys_insert AFTER INSERT ON api_keys
    BEGIN UPDATE auth_epoch SET n = n + 1 WHERE id = 0; END;
CREATE TRIGGER IF NOT EXISTS auth_epoch_api_keys_update AFTER UPDATE ON api_keys
    BEGIN UPDATE auth_epoch SET n = n + 1 WHERE id = 0; END;
CREATE TRIGGER IF NOT EXISTS auth_epoch_api_keys_delete AFTER DELETE ON api_keys
    BEGIN UPDATE auth_epoch SET n = n + 1 WHERE id = 0; END;
CREATE TRIGGER IF NOT EXISTS auth_epoch_tenants_insert AFTER INSERT ON tenants
    BEGIN UPDATE auth_epoch SET n = n + 1 WHERE id = 0; END;
CREATE TRIGGER IF NOT EXISTS auth_epoch_tenants_update AFTER UPDATE ON tenants
    BEGIN UPDATE auth_epoch SET n = n + 1 WHERE id = 0; END;
CREATE TRIGGER IF NOT EXISTS auth_epoch_tenants_delete AFTER DELETE ON tenants
    BEGIN UPDATE auth_epoch SET n = n + 1 WHERE id = 0; END;
"""


class Ledger:
    """The SQLite store. ``path=None`` (or ``":memory:"``) keeps everything in memory.

    A file database is checked at start (:class:`~runcycles.local.LocalDatabaseError` if it is damaged)
    and served by a bounded pool of ``pool_size`` connections. ``durability`` is ``"full"`` (a commit is
    on disk before it is acknowledged) or ``"normal"`` (WAL ``synchronous=NORMAL``: survives a process
    crash, not necessarily a power loss).
    """

    def __init__(
        self,
        path: str | None = None,
        *,
        busy_timeout_ms: int = 30_000,
        durability: str = "full",
        pool_size: int = _sqlite.DEFAULT_POOL_SIZE,
    ) -> None:
        self.path = path if path not in (None, ":memory:") else None
        self._busy_timeout_ms = busy_timeout_ms
        self._synchronous = _sqlite.synchronous_pragma(durability)
        self.durability = durability if self.path is not None else "memory"
        self._write_lock = threading.Lock()
        self._waiting_lock = threading.Lock()
        self._waiting = 0
        self._batch: _Batch | None = None
        self._group: _Batch | None = None
        self._group_owner: int | None = None
        self._group_conn: sqlite3.Connection | None = None
        self._memory_lock = threading.RLock()
        self._pool: _sqlite.Pool | None = None
        self._closed = False
        self.rollbacks = 0
        """How many write transactions (or savepoints) were rolled back so far: caches keyed by ``auth_epoch``
        check it too, since a rollback can bring an epoch value back with other rows behind it."""
        if self.path is None:
            self._memory_conn = self._connect()
            with self._write_lock:
                self._memory_conn.executescript(_SCHEMA)
                self.cursor_secret = _sqlite.server_secret(self._memory_conn, "cursor")
            return
        _sqlite.check_file(self.path)
        try:
            first = self._connect()
        except sqlite3.DatabaseError as exc:
            raise _sqlite.damaged(self.path, exc) from None
        try:
            _sqlite.quick_check(first, self.path)
            with self._write_lock:
                first.executescript(_SCHEMA)
                self.cursor_secret = _sqlite.server_secret(first, "cursor")
        except sqlite3.DatabaseError as exc:
            first.close()
            raise _sqlite.damaged(self.path, exc) from None
        except BaseException:
            first.close()
            raise
        first.close()
        self._pool = _sqlite.Pool(self._connect, pool_size)

    @property
    def in_memory(self) -> bool:
        """Whether the database lives in memory (then calls are cheap enough to run inline)."""
        return self.path is None

    @property
    def open_connections(self) -> int:
        """How many SQLite connections are open now (bounded by the pool size)."""
        if self._pool is None:
            return 1
        return self._pool.opened

    def _connect(self) -> sqlite3.Connection:
        target = self.path if self.path is not None else ":memory:"
        conn = sqlite3.connect(
            target,
            timeout=self._busy_timeout_ms / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            if self.path is not None:
                _sqlite.enable_wal(conn, self._busy_timeout_ms / 1000)
                conn.execute(self._synchronous)
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        if self._pool is None:
            # The single in-memory connection is shared, so readers must not overlap writers on it.
            with self._memory_lock:
                if self._closed:
                    raise RuntimeError("the local Cycles server is closed")
                yield self._memory_conn
        else:
            with self._pool.connection() as conn:
                yield conn

    def write(self) -> AbstractContextManager[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction: committed on normal exit or on a controlled error.

        Exceptions that carry ``commit_on_error = True`` (the handlers' API errors, raised before any
        mutation other than expiry sweeping) still commit; anything else rolls back.

        On a file database writers that queue up share one transaction (group commit): each runs in its own
        savepoint, and a writer that finds others waiting hands the open transaction on instead of committing;
        it returns only once a later writer has committed the batch, so nothing is acknowledged before it is
        durable, and one ``fsync`` covers the whole batch. Inside :meth:`group` (same thread) a write is a
        savepoint of the group's transaction.
        """
        if self._pool is None:
            return _MemoryWrite(self)
        return self._write_file()

    @contextmanager
    def _write_file(self) -> Iterator[sqlite3.Connection]:
        if self._group is not None and self._group_owner == threading.get_ident():
            outcome = yield from _in_savepoint(self._group)
            self._count_rollback(outcome)
            if outcome is not None:
                raise outcome
            return
        batch = self._join_batch()
        outcome = yield from _in_savepoint(batch)
        self._count_rollback(outcome)
        self._finish(batch)
        _raise_for(batch, outcome)

    def _count_rollback(self, outcome: BaseException | None) -> None:
        if outcome is not None and not getattr(outcome, "commit_on_error", False):
            self.rollbacks += 1

    def _open_batch(self, connection: Callable[[], sqlite3.Connection] | None = None) -> _Batch:
        """A new batch: a pooled (or the given) connection in ``BEGIN IMMEDIATE``; called holding the write lock."""
        assert self._pool is not None
        stack = contextlib.ExitStack()
        try:
            conn = connection() if connection is not None else stack.enter_context(self._pool.connection())
            conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            stack.close()
            raise
        return _Batch(conn, stack)

    def _join_batch(self) -> _Batch:
        """Take the write lock and join the open batch (or open one); the caller then runs a savepoint."""
        with self._waiting_lock:
            self._waiting += 1
        self._write_lock.acquire()
        with self._waiting_lock:
            self._waiting -= 1
        batch = self._batch
        if batch is None:
            try:
                batch = self._batch = self._open_batch()
            except BaseException:
                self._write_lock.release()
                raise
        batch.size += 1
        return batch

    def _finish(self, batch: _Batch) -> None:
        """Hand the open transaction to a waiting writer, or commit it; called holding the write lock."""
        with self._waiting_lock:
            hand_on = self._waiting > 0 and batch.size < _MAX_BATCH and batch.error is None
        if hand_on:
            self._write_lock.release()
            batch.done.wait()
            return
        self._batch = None
        self._settle(batch)

    def _settle(self, batch: _Batch) -> None:
        """Commit the batch (or roll it back after an error), return its connection, release the write lock."""
        try:
            if batch.error is None:
                if not batch.conn.in_transaction:
                    raise sqlite3.OperationalError("the transaction was rolled back by SQLite")
                batch.conn.execute("COMMIT")
        except BaseException as exc:
            batch.error = exc
        if batch.error is not None:
            self.rollbacks += 1
            with contextlib.suppress(sqlite3.Error):
                if batch.conn.in_transaction:
                    batch.conn.execute("ROLLBACK")
        try:
            batch.stack.close()
        finally:
            batch.done.set()
            self._write_lock.release()

    @contextmanager
    def group(self) -> Iterator[None]:
        """Run every write and read of this thread in one transaction, committed once at the end.

        For a server that runs a batch of requests on one thread: their writes share one commit, each in
        its own savepoint as with :meth:`write`'s group commit. The commit does not wait for the disk, so the
        next group can start at once: the caller must call :meth:`sync` after this block and acknowledge
        none of the batch before both succeeded. If this block raises, nothing of the batch was committed.
        In memory (where a commit costs nothing) this does nothing.
        """
        if self._pool is None:
            yield
            return
        self._write_lock.acquire()
        try:
            batch = self._open_batch(self._group_connection)
        except BaseException:
            self._write_lock.release()
            raise
        self._group, self._group_owner = batch, threading.get_ident()
        try:
            yield
        except BaseException as exc:
            batch.error = batch.error or exc
            raise
        finally:
            self._group, self._group_owner = None, None
            self._settle(batch)
        if batch.error is not None:
            raise sqlite3.OperationalError(f"the write transaction failed: {batch.error}") from batch.error

    def _group_connection(self) -> sqlite3.Connection:
        """The connection of :meth:`group` (``synchronous = NORMAL``: :meth:`sync` makes its commits durable)."""
        if self._group_conn is None:
            if self._closed:
                raise RuntimeError("the local Cycles server is closed")
            conn = self._connect()
            try:
                conn.execute("PRAGMA synchronous = NORMAL")
            except BaseException:
                conn.close()
                raise
            self._group_conn = conn
        return self._group_conn

    def sync(self) -> None:
        """Make every commit so far durable, as ``synchronous = FULL`` would have (after :meth:`group`).

        In WAL mode FULL differs from NORMAL only by an ``fsync`` of the WAL file after each commit; this is
        that ``fsync``, run outside the write lock so that it overlaps the next batch. Without a WAL file
        everything was checkpointed into the database file, which is synced instead. Nothing to do in
        memory or with ``durability="normal"``.
        """
        if self.path is None or self.durability != "full":
            return
        for target in (self.path + "-wal", self.path):
            try:
                fd = os.open(target, os.O_RDWR | getattr(os, "O_BINARY", 0))
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            return

    def auth_epoch(self) -> int:
        """The count of API key and tenant changes so far (one statement, no transaction of its own)."""
        if self._pool is None:
            with self._memory_lock:
                if self._closed:
                    raise RuntimeError("the local Cycles server is closed")
                return int(self._memory_conn.execute(_EPOCH).fetchone()[0])
        if self._group is not None and self._group_owner == threading.get_ident():
            return int(self._group.conn.execute(_EPOCH).fetchone()[0])
        with self._connection() as conn:
            return int(conn.execute(_EPOCH).fetchone()[0])

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction (a consistent snapshot; WAL readers never block the writer)."""
        if self._group is not None and self._group_owner == threading.get_ident():
            yield self._group.conn  # inside a group: its open transaction (sees the batch's own writes)
            return
        with self._connection() as conn:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    def close(self) -> None:
        """Close every connection this ledger opened (borrowed ones as they are returned)."""
        self._closed = True
        if self._pool is not None:
            self._pool.close()
            with self._write_lock:
                if self._group_conn is not None:
                    _sqlite.close(self._group_conn)
                    self._group_conn = None
        else:
            with self._memory_lock, contextlib.suppress(sqlite3.ProgrammingError):
                self._memory_conn.close()
