"""Probing whether a record's owner process lives: concurrent probes in one process never mistake each other
for the owner.

A replay's load probes the owner lock of each record and spare it finds, while the journal directory's
background refill may probe the same owner's lock to sweep its empty spares. Each probe takes the lock for a
moment; a second probe that saw the first one's hold answered "alive", and the replay skipped the records of
a process that was gone (found by the SIGKILL crash test: a record left unsettled).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from runcycles._journal import locks as journal_locks

GONE = "999999-00000000deadbeef"
WAIT_S = 30.0


class _Turnstile:
    """A lock that tells when a second thread arrives at it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = threading.Lock()
        self.arrivals = 0
        self.second = threading.Event()

    def __enter__(self) -> None:
        with self._count:
            self.arrivals += 1
            if self.arrivals == 2:
                self.second.set()
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def _dead_owner_lock(directory: Path) -> Path:
    owners = directory / journal_locks.OWNERS_DIR
    owners.mkdir(mode=0o700, exist_ok=True)
    path = owners / f"{GONE}.lock"
    path.write_bytes(b"")  # left by a process that is gone: nobody holds it
    return path


def test_a_probe_waits_for_a_concurrent_probe_of_the_same_dead_owner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock_path = _dead_owner_lock(tmp_path)
    turnstile = _Turnstile()
    monkeypatch.setattr(journal_locks, "_probe_lock", turnstile)
    inside, leave = threading.Event(), threading.Event()
    real = journal_locks._os_lock
    first = threading.current_thread()

    def slow_os_lock(path: Path) -> Any:
        lock = real(path)
        if threading.current_thread() is not first:
            inside.set()
            assert leave.wait(WAIT_S)
        return lock

    monkeypatch.setattr(journal_locks, "_os_lock", slow_os_lock)
    answers: dict[str, bool] = {}

    def probe(name: str) -> None:
        answers[name] = journal_locks.owner_alive(tmp_path, GONE)

    a = threading.Thread(target=probe, args=("a",))
    a.start()
    assert inside.wait(WAIT_S)  # the first probe holds the dead owner's lock for a moment
    b = threading.Thread(target=probe, args=("b",))
    b.start()
    assert turnstile.second.wait(WAIT_S)  # the second probe arrived while the first one held the lock
    leave.set()
    a.join(WAIT_S)
    b.join(WAIT_S)
    assert answers == {"a": False, "b": False}
    assert not lock_path.exists()  # the first probe removed the dead owner's lock file
