"""Async settlements leave the delete of their settled record to the journal thread, off the critical path: it
runs after the thread's next batch or within a linger, and flush, close and exit run what is left."""

# ruff: noqa: F811
from __future__ import annotations

import logging
import queue
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
from fixtures_local import Harness, harness  # noqa: F401

from runcycles import AsyncCyclesClient, with_cycles
from runcycles._journal import GROUP, Journal, JournalError
from runcycles._journal import async_jobs as async_jobs_module
from runcycles._journal.writer import Unsynced

pytestmark = [pytest.mark.timeout(60), pytest.mark.anyio]


@pytest.fixture
def mode() -> str:
    return "inproc"


@pytest.fixture
def thread_never_drains(monkeypatch: pytest.MonkeyPatch) -> None:
    """The journal thread leaves deferred jobs alone (when the loop defers a delete before the thread has
    finished the batch that delivered the write, the thread would run it right after that batch)."""
    real = GROUP.run_deferred

    def run_deferred(*, wait: bool = False, limit: int | None = None) -> int:
        if threading.current_thread().name == "runcycles-journal-batch":
            return 0
        return real(wait=wait, limit=limit)

    monkeypatch.setattr(GROUP, "run_deferred", run_deferred)


def records(client: AsyncCyclesClient) -> list[Path]:
    directory = client._journal_owner.journal.directory
    return sorted(p for p in directory.iterdir() if p.is_file() and (p.suffix == ".json" or p.read_bytes().strip()))


def guarded(client: AsyncCyclesClient) -> Any:
    @with_cycles(estimate=10, actual=5, client=client)
    async def work() -> int:
        return 1

    return work


class DeleteGate:
    """Holds every `Journal.delete` until opened, and says when one has finished."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.open = threading.Event()
        self.entered = threading.Event()
        self.deleted = threading.Event()
        self.threads: list[str] = []
        real = Journal.delete

        def delete(journal: Journal, reservation_id: str, *, owned: bool = False) -> None:
            self.threads.append(threading.current_thread().name)
            self.entered.set()
            assert self.open.wait(30)
            real(journal, reservation_id, owned=owned)
            self.deleted.set()

        monkeypatch.setattr(Journal, "delete", delete)


async def test_the_call_returns_before_its_record_is_deleted(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, anyio_backend: str
) -> None:
    gate = DeleteGate(monkeypatch)
    client, _ = harness.async_client()
    async with client:
        work = guarded(client)
        assert await work() == 1  # returns although the delete is held
        harness.assert_ledger(spent=5)
        assert len(records(client)) == 1
        gate.open.set()
        assert await anyio.to_thread.run_sync(gate.deleted.wait, 30)
        assert records(client) == []
        assert gate.threads == ["runcycles-journal-batch"]


async def test_deletes_make_no_batch_of_their_own(harness: Harness, anyio_backend: str) -> None:
    client, _ = harness.async_client()
    n = 6
    async with client:
        work = guarded(client)
        await work()
        await client.flush()
        batches = GROUP.batches
        for _ in range(n):
            await work()
        assert len(records(client)) <= 2  # at most the last call's and the one before (deleted after a batch)
        batches = GROUP.batches - batches
        assert batches == n
        await client.flush()
        assert records(client) == []
    harness.assert_ledger(spent=5 * (n + 1))


async def test_flush_waits_for_a_delete_the_journal_thread_is_running(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, anyio_backend: str
) -> None:
    gate = DeleteGate(monkeypatch)
    client, _ = harness.async_client()
    async with client:
        await guarded(client)()
        assert await anyio.to_thread.run_sync(gate.entered.wait, 30)  # the thread is in the delete
        assert GROUP.deferred == 1
        async with anyio.create_task_group() as tg:

            async def flush() -> None:
                await client.flush()
                assert gate.deleted.is_set()
                assert records(client) == []

            tg.start_soon(flush)
            await anyio.wait_all_tasks_blocked()
            gate.open.set()
        assert GROUP.deferred == 0


async def test_the_journal_thread_runs_a_deferred_delete_on_its_own(harness: Harness, monkeypatch: pytest.MonkeyPatch,
                                                                    anyio_backend: str) -> None:
    gate = DeleteGate(monkeypatch)
    gate.open.set()
    client, _ = harness.async_client()
    async with client:
        await guarded(client)()
        # No other call, no flush: the thread's linger runs it.
        assert await anyio.to_thread.run_sync(gate.deleted.wait, 30)
        assert records(client) == []


async def test_close_runs_what_is_deferred(harness: Harness, thread_never_drains: None, anyio_backend: str) -> None:
    client, _ = harness.async_client()
    async with client:
        await guarded(client)()
        assert len(records(client)) == 1
    assert GROUP.deferred == 0
    assert records(client) == []


async def test_a_failed_deferred_delete_is_logged_and_the_call_stands(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, anyio_backend: str
) -> None:
    def failing(journal: Journal, reservation_id: str, *, owned: bool = False) -> None:
        raise JournalError(f"cannot delete {reservation_id} (injected)")

    monkeypatch.setattr(Journal, "delete", failing)
    client, _ = harness.async_client()
    with caplog.at_level(logging.WARNING, logger="runcycles"):
        async with client:
            assert await guarded(client)() == 1
            await client.flush()
            assert GROUP.deferred == 0
    harness.assert_ledger(spent=5)
    assert any("deferred journal work failed" in r.getMessage() and "injected" in r.getMessage()
               for r in caplog.records)
    assert len(records(client)) == 1  # left behind: a later replay settles it idempotently


async def test_a_record_whose_delete_is_deferred_is_not_replayed_by_its_own_process(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, anyio_backend: str
) -> None:
    gate = DeleteGate(monkeypatch)
    client, _ = harness.async_client()
    other, _ = harness.async_client()
    async with client, other:
        await guarded(client)()
        assert await other.replay_journal() == 0
        gate.open.set()
        await client.flush()
        assert records(client) == []
    harness.assert_ledger(spent=5)


async def test_the_journal_thread_survives_a_failed_batch(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, anyio_backend: str
) -> None:
    real = GROUP.run
    failed = []

    def run_once_failing(jobs: list[Any]) -> list[BaseException | None]:
        if not failed:
            failed.append(True)
            raise RuntimeError("injected batch failure")
        return real(jobs)

    monkeypatch.setattr(GROUP, "run", run_once_failing)
    client, _ = harness.async_client()
    with caplog.at_level(logging.ERROR, logger="runcycles"):
        async with client:
            work = guarded(client)
            assert await work() == 1  # the journal write failed: logged, and the settlement went on
            assert await work() == 1
            await client.flush()
    harness.assert_ledger(spent=10)
    assert any("injected batch failure" in r.getMessage() for r in caplog.records)


def test_interpreter_exit_runs_what_is_deferred(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, threading
        import runcycles
        from runcycles._journal import GROUP
        from runcycles.local import LocalCyclesServer

        real = GROUP.run_deferred
        # The journal thread leaves the deferred delete alone: only the exit hook (main thread) runs it.
        GROUP.run_deferred = lambda **kw: real(**kw) if threading.current_thread() is threading.main_thread() else 0
        server = LocalCyclesServer()
        server.create_tenant("tnt")
        key = server.create_api_key("tnt")
        server.create_budget("tenant:tnt", "USD_MICROCENTS", allocated=1000)
        config = runcycles.CyclesConfig(base_url="http://local", api_key=key, tenant="tnt",
                                        journal_dir={str(tmp_path / "journal")!r})

        async def main():
            client = runcycles.AsyncCyclesClient(config, transport=server.async_transport())

            @runcycles.with_cycles(estimate=10, actual=5, client=client)
            async def work():
                return 1

            await work()
            directory = client._journal_owner.journal.directory
            print(len([p for p in directory.iterdir() if p.is_file() and p.read_bytes().strip()]))
            # no flush, no close: the process ends here

        asyncio.run(main())
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["1"], out.stderr  # still there when the call returned
    left = [p for p in (tmp_path / "journal").rglob("*") if p.is_file() and p.suffix in {".json", ".spare"}]
    assert left == []


def test_batches_that_wait_together_run_as_one() -> None:
    thread = async_jobs_module._JournalThread()
    hold, holding = threading.Event(), threading.Event()
    delivered: list[tuple[str, Any]] = []
    all_done = threading.Event()

    def job_holding() -> None:
        holding.set()
        assert hold.wait(30)

    def deliver(name: str) -> Any:
        def into(result: Any) -> None:
            delivered.append((name, result))
            if len(delivered) == 3:
                all_done.set()

        return into

    try:
        batches = GROUP.batches
        assert thread.submit(async_jobs_module._Request([job_holding], deliver("first")))
        assert holding.wait(30)
        assert thread.submit(async_jobs_module._Request([lambda: None, lambda: None], deliver("second")))
        assert thread.submit(async_jobs_module._Request([lambda: None], deliver("third")))
        hold.set()
        assert all_done.wait(30)
        assert GROUP.batches - batches == 2  # the first alone, the two that waited as one
        assert delivered == [("first", [None]), ("second", [None, None]), ("third", [None])]
    finally:
        thread.stop()
    assert not thread.submit(async_jobs_module._Request([lambda: None], deliver("late")))


def test_deferred_jobs_run_before_a_batch_hands_back_its_results(monkeypatch: pytest.MonkeyPatch) -> None:
    """Up to DEFERRED_FIRST deferred jobs run while the batch's loop still waits (then they do not compete with
    its next steps for the GIL); a longer backlog runs after the results."""
    thread = async_jobs_module._JournalThread()
    real = GROUP.run_deferred

    def ours_only(*, wait: bool = False, limit: int | None = None) -> int:
        # Another journal thread of this process (left lingering by an earlier test) must not take these jobs.
        return real(wait=wait, limit=limit) if threading.current_thread() is thread._thread else 0

    monkeypatch.setattr(GROUP, "run_deferred", ours_only)
    first = async_jobs_module.DEFERRED_FIRST
    events: list[str] = []
    all_ran = threading.Event()

    def deferred(i: int) -> Unsynced:
        def job() -> None:
            events.append(f"deferred {i}")
            if i == first + 1:
                all_ran.set()

        return Unsynced(job)

    def batch_job() -> None:
        events.append("batch")
        for i in range(first + 2):
            GROUP.defer(deferred(i))

    try:
        assert thread.submit(async_jobs_module._Request([batch_job], lambda result: events.append("delivered")))
        assert all_ran.wait(30)
    finally:
        thread.stop()
    expected = ["batch"] + [f"deferred {i}" for i in range(first)] + ["delivered", f"deferred {first}"]
    assert events == expected + [f"deferred {first + 1}"]
    assert GROUP.deferred == 0


def test_a_batch_gives_lanes_only_to_jobs_that_sync() -> None:
    ran_on: list[str] = []

    def note() -> None:
        ran_on.append(threading.current_thread().name)

    assert GROUP.run([Unsynced(note) for _ in range(8)]) == [None] * 8
    assert set(ran_on) == {threading.current_thread().name}  # no lane, no thread hop

    together = threading.Barrier(4, timeout=30)

    def syncing() -> None:
        together.wait()  # returns only when four jobs run at once: one per lane

    assert GROUP.run([syncing] * 4 + [Unsynced(note)]) == [None] * 5


def test_stop_runs_the_batches_queued_before_it() -> None:
    thread = async_jobs_module._JournalThread()
    stop_queued = threading.Event()

    class Queue(queue.SimpleQueue[object]):
        def put(self, item: object, block: bool = True, timeout: float | None = None) -> None:
            super().put(item, block, timeout)
            if item is async_jobs_module._STOP:
                stop_queued.set()

    thread._queue = Queue()
    hold, holding = threading.Event(), threading.Event()
    delivered: list[Any] = []

    def job_holding() -> None:
        holding.set()
        assert hold.wait(30)

    assert thread.submit(async_jobs_module._Request([job_holding], delivered.append))
    assert holding.wait(30)
    assert thread.submit(async_jobs_module._Request([lambda: None], delivered.append))
    stopper = threading.Thread(target=thread.stop)
    stopper.start()
    assert stop_queued.wait(30)  # behind the second batch
    hold.set()
    stopper.join(30)
    assert delivered == [[None], [None]]
