"""The whole program under stress: ``runcycles serve`` subprocesses over real HTTP.

Bounded SQLite connections under ``prlimit --nofile=64`` across load bursts and idle periods (worker threads
retire after 10 s idle in anyio, which is what used to leak a connection per retired thread), the body
limit on the wire (declared and chunked), refusal of damaged databases, and acknowledged writes surviving
SIGKILL at both durability levels.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from serve_process import Serve, run_serve

from runcycles.local import LocalCyclesServer, LocalDatabaseError, _sqlite

USD = "USD_MICROCENTS"
WORKERS = 24  # concurrent clients: the old thread-per-connection ledger needed > 64 fds for this
ROUNDS = 8


def _burst(serve: Serve, tag: str) -> int:
    """WORKERS clients each reserve+commit ROUNDS times concurrently; returns the number of commits."""

    def worker(n: int) -> int:
        done = 0
        with serve.client() as client:
            for i in range(ROUNDS):
                body = {
                    "idempotency_key": f"{tag}-{n}-{i}",
                    "subject": {"tenant": "acme"},
                    "action": {"kind": "k", "name": "n"},
                    "estimate": {"unit": USD, "amount": 3},
                }
                reserved = client.post("/v1/reservations", json=body)
                assert reserved.status_code == 200, reserved.text
                rid = reserved.json()["reservation_id"]
                commit = {"idempotency_key": f"{tag}-c-{n}-{i}", "actual": {"unit": USD, "amount": 3}}
                committed = client.post(f"/v1/reservations/{rid}/commit", json=commit)
                assert committed.status_code == 200, committed.text
                done += 1
        return done

    with ThreadPoolExecutor(WORKERS) as pool:
        return sum(pool.map(worker, range(WORKERS)))


def test_bursts_and_idle_periods_under_a_64_fd_limit_keep_fds_flat(tmp_path: Path) -> None:
    db = tmp_path / "cycles.db"
    with Serve(db, nofile=64) as serve:
        commits = _burst(serve, "b0")
        db_fds = [serve.open_fds(under=tmp_path)]
        for cycle in range(1, 3):
            # An idle period longer than anyio's worker-thread idle time (10 s): the workers retire, and
            # the next burst runs on new threads. This wait is the condition under test, not a sync.
            time.sleep(10.5)
            commits += _burst(serve, f"b{cycle}")
            db_fds.append(serve.open_fds(under=tmp_path))
        assert serve.proc.poll() is None
        # Flat: bounded by the pool (8 connections, each a db and a wal descriptor, plus the shared shm)
        # whatever the number of cycles. The pool fills lazily, so how far a given burst fills it depends
        # on how much the requests overlapped; a thread-per-connection ledger grew ~2 per retired thread.
        assert max(db_fds) <= 2 * 8 + 2, db_fds
        assert serve.open_fds() < 64
        with serve.client() as client:
            balance = client.get("/v1/balances", params={"tenant": "acme"}).json()["balances"][0]
    assert commits == 3 * WORKERS * ROUNDS
    assert balance["spent"]["amount"] == commits * 3 and balance["reserved"]["amount"] == 0


def test_connections_are_bounded_with_short_lived_threads(tmp_path: Path) -> None:
    with LocalCyclesServer(tmp_path / "c.db") as server:
        server.create_tenant("acme")
        for round_ in range(5):
            threads = [
                threading.Thread(target=server.create_budget, args=(f"tenant:acme/app:a{round_}-{i}", USD, 1))
                for i in range(30)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert server._env.ledger.open_connections <= 8
        assert len(server.get_budget("tenant:acme/app:a4-29", USD)) > 0


def _raw_http(port: int, request: bytes, then: bytes = b"") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        if then:
            # The server may close before reading all of it; its answer is what matters.
            with contextlib.suppress(OSError):
                sock.sendall(then)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def test_body_limit_on_the_wire(tmp_path: Path) -> None:
    with Serve(None, "--max-body-bytes", "1000") as serve:
        head = (
            f"POST /v1/decide HTTP/1.1\r\nHost: x\r\nX-Cycles-API-Key: {serve.key}\r\n"
            "Content-Type: application/json\r\n"
        ).encode()
        # Declared too large: answered without the body ever being sent.
        declared = _raw_http(serve.port, head + b"Content-Length: 1000000000\r\n\r\n")
        assert declared.startswith(b"HTTP/1.1 413"), declared[:200]
        # Chunked: counted while streaming.
        chunk = b"x" * 600
        chunked = _raw_http(
            serve.port,
            head + b"Transfer-Encoding: chunked\r\n\r\n",
            b"%x\r\n%s\r\n" % (len(chunk), chunk) * 3 + b"0\r\n\r\n",
        )
        assert chunked.startswith(b"HTTP/1.1 413"), chunked[:200]
        with serve.client() as client:
            small = client.post(
                "/v1/decide",
                json={
                    "idempotency_key": "d",
                    "subject": {"tenant": "acme"},
                    "action": {"kind": "k", "name": "n"},
                    "estimate": {"unit": USD, "amount": 1},
                },
            )
            assert small.status_code == 200
            big = client.post("/v1/decide", content=b"{" + b" " * 2000 + b"}")
            assert big.status_code == 413 and big.json()["error"] == "INVALID_REQUEST"


def _good_db(path: Path) -> None:
    with LocalCyclesServer(path) as server:
        server.create_tenant("acme")
        for i in range(200):
            server.create_budget(f"tenant:acme/workspace:w{i}", USD, 1000)


def _zero_page(path: Path, page: int) -> None:
    with path.open("r+b") as handle:
        handle.seek(4096 * (page - 1))
        handle.write(b"\x00" * 4096)


@pytest.mark.parametrize("damage", ["garbage", "empty", "page"])
def test_damaged_databases_are_refused(tmp_path: Path, damage: str) -> None:
    db = tmp_path / "ledger.db"
    if damage == "garbage":
        db.write_bytes(b"not a database at all " * 200)
    elif damage == "empty":
        db.write_bytes(b"")
        os.utime(db, (time.time() - 3600, time.time() - 3600))  # an old file, not one being created now
    else:
        _good_db(db)
        _zero_page(db, 3)
    before = db.read_bytes()
    with pytest.raises(LocalDatabaseError) as caught:
        LocalCyclesServer(db)
    assert str(db) in str(caught.value) and "\n" not in str(caught.value)
    result = run_serve("--db", str(db))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(db) in lines[0] and "Traceback" not in result.stderr, result.stderr
    assert db.read_bytes() == before  # refused without writing to it


def test_a_restored_backup_starts(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    _good_db(db)
    backup = tmp_path / "backup.db"
    shutil.copy(db, backup)
    _zero_page(db, 3)
    with pytest.raises(LocalDatabaseError):
        LocalCyclesServer(db)
    shutil.copy(backup, db)
    with LocalCyclesServer(db) as server:
        assert server.get_budget("tenant:acme/workspace:w199", USD)["allocated"] == 1000


@pytest.mark.parametrize("durability", ["full", "normal"])
def test_acknowledged_writes_survive_sigkill(tmp_path: Path, durability: str) -> None:
    db = tmp_path / "ledger.db"
    serve = Serve(db, "--durability", durability, budget=1_000_000)
    try:
        with serve.client() as client:
            for i in range(40):
                body = {
                    "idempotency_key": f"e{i}",
                    "subject": {"tenant": "acme"},
                    "action": {"kind": "k", "name": "n"},
                    "actual": {"unit": USD, "amount": 7},
                }
                assert client.post("/v1/events", json=body).status_code == 201
        serve.kill()
    finally:
        serve.stop()
    with LocalCyclesServer(db, durability=durability) as server:
        assert server.durability == durability
        assert server.get_budget("tenant:acme", USD)["spent"] == 40 * 7


def test_durability_levels(tmp_path: Path) -> None:
    with LocalCyclesServer(tmp_path / "a.db") as full:
        assert full.durability == "full"
        with full._env.ledger.read() as conn:
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with LocalCyclesServer(tmp_path / "b.db", durability="normal") as normal, normal._env.ledger.read() as conn:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    with LocalCyclesServer() as memory:
        assert memory.durability == "memory"
    with pytest.raises(ValueError, match="durability"):
        LocalCyclesServer(tmp_path / "c.db", durability="sometimes")
    bad = run_serve("--durability", "sometimes")
    assert bad.returncode == 2 and "durability" in bad.stderr


def test_processes_starting_together_share_one_cursor_secret(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    servers: list[LocalCyclesServer] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            servers.append(LocalCyclesServer(db))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len({server._env.ledger.cursor_secret for server in servers}) == 1
    for server in servers:
        server.close()


def test_switching_a_new_database_to_wal_waits_for_another_connections_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite answers the WAL switch with "database is locked" at once (no busy handler) while another connection
    holds the file, as when processes open a new database together: the switch retries until the lock goes."""
    db = str(tmp_path / "new.db")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    retrying = threading.Event()
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        retrying.set()
        real_sleep(seconds)

    monkeypatch.setattr(_sqlite.time, "sleep", sleep)
    opener = sqlite3.connect(db, isolation_level=None, check_same_thread=False, timeout=0)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        _sqlite.enable_wal(opener, 0.0)  # no time left: the lock's error, unchanged
    with ThreadPoolExecutor(1) as pool:
        switched = pool.submit(_sqlite.enable_wal, opener, 30.0)
        assert retrying.wait(30)
        holder.execute("COMMIT")
        switched.result(30)
    assert opener.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    opener.close()
    holder.close()


def test_a_new_empty_file_that_stays_empty_is_refused_after_a_short_grace(tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    db.write_bytes(b"")  # just created, as by a process that is about to initialise it - but nothing comes
    with pytest.raises(LocalDatabaseError, match="empty"):
        LocalCyclesServer(db)
    assert db.read_bytes() == b""
