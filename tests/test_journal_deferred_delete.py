"""Removing a settled record is off the settlement's path: the journal's I/O threads do it, the caller does not
wait for it, the process keeps holding the record until it is gone, and ``flush``/``close`` wait for it."""

# ruff: noqa: F811
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
from fixtures_local import Harness, harness, mode, uvicorn_switch  # noqa: F401

from runcycles import with_cycles
from runcycles._journal import Journal, JournalBusyError
from runcycles._journal_owner import JournalOwner

WAIT_S = 30.0


class _BlockedDeletes:
    """Holds every `Journal.delete` until released; notes the thread that ran it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.threads: list[str] = []
        real = Journal.delete

        def delete(journal: Journal, reservation_id: str) -> None:
            self.threads.append(threading.current_thread().name)
            self.entered.set()
            assert self.release.wait(WAIT_S)
            real(journal, reservation_id)

        monkeypatch.setattr(Journal, "delete", delete)


def _release_when_waited_for(owner: JournalOwner, blocked: _BlockedDeletes, monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the held removals go only once somebody waits for them (so a caller that did not wait would still
    find the record on disk)."""
    real = owner.wait_deletes

    def wait_deletes(timeout_s: float) -> bool:
        blocked.release.set()
        return real(timeout_s)

    monkeypatch.setattr(owner, "wait_deletes", wait_deletes)


def _records(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("v2-*.json"))


def test_a_sync_call_returns_before_its_record_is_removed_and_flush_waits_for_it(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = _BlockedDeletes(monkeypatch)
    client, _ = harness.sync_client()
    owner: JournalOwner = client._journal_owner

    @with_cycles(estimate=10, actual=5, client=client)
    def work() -> str:
        from runcycles import require_cycles_context

        return require_cycles_context().reservation_id

    rid = work()  # returns although the removal of its record is held
    assert blocked.entered.wait(WAIT_S)
    directory = owner.journal.directory
    assert len(_records(directory)) == 1 and owner.pending_deletes == 1
    harness.assert_ledger(spent=5)  # settled: only the record's removal is pending
    with pytest.raises(JournalBusyError), owner.journal.claim(rid):  # still held here until it is gone
        pass
    assert blocked.threads and blocked.threads[0] != threading.current_thread().name
    assert blocked.threads[0].startswith("runcycles-journal")

    assert not owner.wait_deletes(0)
    _release_when_waited_for(owner, blocked, monkeypatch)
    assert client.flush(int(WAIT_S * 1000)) == 0
    assert _records(directory) == [] and owner.pending_deletes == 0


@pytest.mark.anyio
async def test_an_async_call_hands_the_removal_to_the_io_threads_without_a_thread_hop(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = _BlockedDeletes(monkeypatch)
    client, _ = harness.async_client()
    hops: list[Any] = []
    real_run_sync = anyio.to_thread.run_sync

    async def counting_run_sync(fn: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(fn, "__name__", fn))
        return await real_run_sync(fn, *args, **kwargs)

    async with client:

        @with_cycles(estimate=10, actual=5, client=client)
        async def work() -> int:
            return 1

        assert await work() == 1  # warm: the first call also replays the journal (one hop of its own)
        blocked.release.set()
        await client.flush()
        blocked.release.clear()
        blocked.entered.clear()

        monkeypatch.setattr(anyio.to_thread, "run_sync", counting_run_sync)
        assert await work() == 1
        assert len(hops) == 1  # the record's durable write; its removal took none
        owner: JournalOwner = client._journal_owner
        assert owner.pending_deletes == 1 and len(_records(owner.journal.directory)) == 1
        _release_when_waited_for(owner, blocked, monkeypatch)
        assert await client.flush() == 0
        assert _records(owner.journal.directory) == [] and owner.pending_deletes == 0
    harness.assert_ledger(spent=10)


def test_close_waits_for_pending_removals(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    blocked = _BlockedDeletes(monkeypatch)
    client, _ = harness.sync_client()

    @with_cycles(estimate=10, actual=5, client=client)
    def work() -> int:
        return 1

    assert work() == 1
    assert blocked.entered.wait(WAIT_S)
    owner: JournalOwner = client._journal_owner
    directory = owner.journal.directory
    _release_when_waited_for(owner, blocked, monkeypatch)
    client.close()
    assert _records(directory) == [] and owner.pending_deletes == 0
