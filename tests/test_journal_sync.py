"""The journal's sync modes, its barriers, lock-free ownership of fresh records and the group commit."""

# ruff: noqa: F811
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fixtures_local import Harness, harness, uvicorn_switch  # noqa: F401
from recovery_helpers import ClientSpec, build_client, make_world, run_child, sequence

from runcycles import CyclesClient, CyclesConfig, with_cycles
from runcycles._journal import GROUP, Journal, JournalBusyError, JournalRecord, journal_filename
from runcycles._journal import spares as spares_module
from runcycles._journal.locks import OWNERS_DIR
from runcycles._journal.spares import SPARE_SUFFIX, SparePool, pool_for

pytestmark = pytest.mark.timeout(120)

SPAWN = multiprocessing.get_context("spawn")
BASE = "http://localhost:7878"


@pytest.fixture
def mode() -> str:
    return "inproc"


class FsyncSpy:
    """Counts ``os.fsync``/``os.fdatasync`` calls by kind (file or directory), except those of the thread that
    prepares spare files in the background (off every settlement's critical path)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        self.background = 0
        real = os.fsync

        def spy(fd: int) -> None:
            if spares_module.refilling():
                self.background += 1
            else:
                self.calls.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
            real(fd)

        monkeypatch.setattr(os, "fsync", spy)
        if hasattr(os, "fdatasync"):
            monkeypatch.setattr(os, "fdatasync", spy)

    def count(self, kind: str) -> int:
        return self.calls.count(kind)


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> FsyncSpy:
    return FsyncSpy(monkeypatch)


@pytest.fixture
def no_spares(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fresh records take the two-barrier path (as when no spare file is ready)."""
    monkeypatch.setattr(SparePool, "take", lambda self: None)


def ready_spares(directory: Path, at_least: int = 0) -> None:
    """Make the spare pool of ``directory`` ready now (normally a background thread does it)."""
    pool_for(directory).refill(at_least)


class Watch(httpx.BaseTransport):
    """Notes, when a commit leaves, the fsyncs so far and the journal directory's entries."""

    def __init__(self, inner: httpx.BaseTransport, spy: FsyncSpy, directory: Path) -> None:
        self.inner, self.spy, self.directory = inner, spy, directory
        self.at_commit: list[tuple[int, list[str]]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/commit"):
            self.at_commit.append((len(self.spy.calls), sorted(os.listdir(self.directory))))
        return self.inner.handle_request(request)


def _record(rid: str) -> JournalRecord:
    return JournalRecord(
        reservation_id=rid,
        idempotency_key=f"key-{rid}",
        commit_body={"idempotency_key": f"key-{rid}", "actual": {"unit": "USD_MICROCENTS", "amount": 5}},
        event_body={"idempotency_key": f"key-{rid}"},
        base_url=BASE,
    )


def _journal(tmp_path: Path, sync: str = "full") -> Journal:
    return Journal(tmp_path / "j", base_url=BASE, tenant="acme", api_key="k", sync=sync)  # type: ignore[arg-type]


def _guarded_call(h: Harness, spy: FsyncSpy, **config: Any) -> tuple[Watch, Path]:
    watch = Watch(h.server.transport(), spy, Path())
    with CyclesClient(h.config(**config), transport=watch) as client:
        watch.directory = client._journal_owner.journal.directory
        ready_spares(watch.directory)
        spy.calls.clear()

        @with_cycles(estimate=10, actual=5, client=client)
        def work() -> int:
            return 1

        assert work() == 1
    return watch, watch.directory


# ------------------------------------------------------------------------------ configuration


def test_journal_sync_defaults_to_full_and_reads_the_environment() -> None:
    assert CyclesConfig(base_url=BASE, api_key="k").journal_sync == "full"
    env = {"CYCLES_BASE_URL": BASE, "CYCLES_API_KEY": "k", "CYCLES_JOURNAL_SYNC": " Process "}
    assert CyclesConfig.from_env(environ=env).journal_sync == "process"
    with pytest.raises(ValueError, match="journal_sync"):
        CyclesConfig(base_url=BASE, api_key="k", journal_sync="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="journal_sync"):
        CyclesConfig.from_env(environ={**env, "CYCLES_JOURNAL_SYNC": "sometimes"})
    with pytest.raises(ValueError, match="sync"):
        Journal(None, base_url=BASE, tenant="acme", api_key="k", sync="never")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ barriers


def test_full_mode_one_barrier_before_the_commit_and_none_after(harness: Harness, fsyncs: FsyncSpy) -> None:
    watch, directory = _guarded_call(harness, fsyncs)
    [(synced_before_commit, entries)] = watch.at_commit
    # The record's data was synced into a spare file whose directory entry was durable already: one barrier ...
    assert fsyncs.calls[:synced_before_commit] == ["file"]
    # ... with no lock file and no temp file around: the writing process owns the record without one.
    assert [e for e in entries if e not in (OWNERS_DIR,) and not e.endswith(SPARE_SUFFIX)] == [
        e for e in entries if e.startswith("v2-")
    ]
    assert len([e for e in entries if e.startswith("v2-")]) == 1
    # Deleting the settled record synced nothing.
    assert len(fsyncs.calls) == synced_before_commit
    assert not [p for p in directory.iterdir() if p.name.endswith((".json", ".lock", ".tmp"))]


def test_full_mode_without_a_spare_two_barriers_before_the_commit(
    harness: Harness, fsyncs: FsyncSpy, no_spares: None
) -> None:
    watch, _ = _guarded_call(harness, fsyncs)
    [(synced_before_commit, _)] = watch.at_commit
    assert fsyncs.calls[:synced_before_commit] == ["file", "dir"]  # data, then its new directory entry


def test_process_mode_performs_no_fsync(harness: Harness, fsyncs: FsyncSpy) -> None:
    watch, directory = _guarded_call(harness, fsyncs, journal_sync="process")
    [(_, entries)] = watch.at_commit
    assert len([e for e in entries if e.startswith("v2-")]) == 1  # journaled before the commit left
    assert fsyncs.calls == []
    assert not [p for p in directory.iterdir() if p.name.endswith(".json")]


@pytest.mark.parametrize("sync", ["full", "process"])
def test_permissions_in_both_modes(tmp_path: Path, sync: str) -> None:
    old = os.umask(0o022)
    try:
        j = _journal(tmp_path, sync)
        j.own("r1")
        j.write(_record("r1"), owned=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE(j.path_for("r1").stat().st_mode) == 0o600
    assert stat.S_IMODE(j.directory.stat().st_mode) == 0o700
    owners = j.directory / OWNERS_DIR
    assert stat.S_IMODE(owners.stat().st_mode) == 0o700
    assert [stat.S_IMODE(p.stat().st_mode) for p in owners.iterdir()] == [0o600]


def test_delete_does_not_sync(tmp_path: Path, fsyncs: FsyncSpy) -> None:
    j = _journal(tmp_path)
    j.write(_record("r1"))
    fsyncs.calls.clear()
    j.delete("r1")
    assert not j.path_for("r1").exists()
    assert fsyncs.calls == []


@pytest.mark.anyio
async def test_concurrent_async_settlements_share_barriers(harness: Harness, fsyncs: FsyncSpy) -> None:
    n = 40
    client, _ = harness.async_client()
    arrived = 0
    all_here = anyio.Event()
    async with client:

        @with_cycles(estimate=10, actual=5, client=client)
        async def work() -> int:
            nonlocal arrived
            arrived += 1
            if arrived == n:
                all_here.set()
            await all_here.wait()  # every call settles in the same burst
            return 1

        ready_spares(client._journal_owner.journal.directory, n)
        batches = GROUP.batches
        fsyncs.calls.clear()
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(work)
        batches = GROUP.batches - batches
    harness.assert_ledger(spent=5 * n)
    # One data barrier per record in a spare, no directory barrier, and the thread hop is shared by each batch.
    assert fsyncs.count("file") == n
    assert fsyncs.count("dir") == 0
    assert batches < n // 2


@pytest.mark.anyio
async def test_concurrent_async_settlements_without_spares_share_directory_barriers(
    harness: Harness, fsyncs: FsyncSpy, no_spares: None
) -> None:
    n = 40
    client, _ = harness.async_client()
    arrived = 0
    all_here = anyio.Event()
    async with client:

        @with_cycles(estimate=10, actual=5, client=client)
        async def work() -> int:
            nonlocal arrived
            arrived += 1
            if arrived == n:
                all_here.set()
            await all_here.wait()
            return 1

        _ = client._journal_owner.journal.directory  # created (and its creation synced) beforehand
        batches = GROUP.batches
        fsyncs.calls.clear()
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(work)
        batches = GROUP.batches - batches
    harness.assert_ledger(spent=5 * n)
    # One data fsync per record, but the directory fsync (and the thread hop) is shared by each batch.
    assert fsyncs.count("file") == n
    assert 1 <= fsyncs.count("dir") <= batches < n // 2


def test_concurrent_sync_writers_share_directory_fsyncs(tmp_path: Path, fsyncs: FsyncSpy, no_spares: None) -> None:
    j = _journal(tmp_path)
    _ = j.directory
    fsyncs.calls.clear()  # creating the directory synced its parents
    n = 8
    first_in = threading.Event()
    release = threading.Event()
    blocked = False

    def slow(rid: str) -> Any:
        inner = j.write_job(_record(rid))

        def job() -> Path | None:
            nonlocal blocked
            if not blocked:  # the first batch waits until every other writer is queued behind it
                blocked = True
                first_in.set()
                release.wait(30)
            return inner()

        return job

    threads = [threading.Thread(target=GROUP.run_one, args=(slow(f"r{i}"),)) for i in range(n)]
    threads[0].start()
    assert first_in.wait(30)
    for t in threads[1:]:
        t.start()
    deadline = time.monotonic() + 30
    while len(GROUP._pending) < n - 1:  # the followers are queued (no event to wait on inside the lock)
        assert time.monotonic() < deadline
        os.sched_yield()
    release.set()
    for t in threads:
        t.join(30)
    assert sorted(p.name for p in j.directory.glob("*.json")) == sorted(journal_filename(f"r{i}") for i in range(n))
    assert fsyncs.count("file") == n
    assert fsyncs.count("dir") == 2  # the first batch, then everyone else together


# ------------------------------------------------------------------------------ ownership


def test_own_makes_claims_in_this_process_busy_until_disowned(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    j.own("r1")
    j.write(_record("r1"), owned=True)
    assert not (j.directory / (journal_filename("r1") + ".lock")).exists()
    with pytest.raises(JournalBusyError), j.claim("r1"):
        pass
    with pytest.raises(JournalBusyError):
        j.own("r1")
    j.disown("r1", keep=True)
    stored = json.loads(j.path_for("r1").read_text("utf-8"))
    assert "owner" not in stored  # released: anyone may replay it now
    with j.claim("r1") as record:
        assert record is not None and record.reservation_id == "r1"


def test_a_dead_owners_record_is_claimable(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    j.write(_record("r1"))
    data = json.loads(j.path_for("r1").read_text("utf-8"))
    data["owner"] = "999999-deadbeef"  # no lock file: the owner is gone
    j.path_for("r1").write_text(json.dumps(data), "utf-8")
    with j.claim("r1") as record:
        assert record is not None


def test_runtime_release_clears_the_owner(harness: Harness) -> None:
    client, _ = harness.sync_client()
    runtime = client._journal_owner
    pending = JournalRecord(
        reservation_id="r-rel", idempotency_key="k-rel", commit_body={"idempotency_key": "k-rel"}, event_body={}
    )
    runtime.journal_write(pending)
    path = runtime.journal.path_for("r-rel")
    assert json.loads(path.read_text("utf-8"))["owner"]
    with pytest.raises(JournalBusyError), runtime.journal.claim("r-rel"):
        pass
    runtime.release_claim("r-rel")
    assert "owner" not in json.loads(path.read_text("utf-8"))
    with runtime.journal.claim("r-rel") as record:
        assert record is not None


def _own_and_wait(root: str, ready: Any, done: Any) -> None:
    j = Journal(root, base_url=BASE, tenant="acme", api_key="k")
    j.own("r1")
    j.write(_record("r1"), owned=True)
    ready.set()
    done.wait(60)


@pytest.mark.parametrize("ending", ["exit", "kill"])
def test_another_process_skips_a_record_its_live_writer_owns(tmp_path: Path, ending: str) -> None:
    root = str(tmp_path / "j")
    ready, done = SPAWN.Event(), SPAWN.Event()
    proc = SPAWN.Process(target=_own_and_wait, args=(root, ready, done), daemon=True)
    proc.start()
    try:
        assert ready.wait(60)
        j = Journal(root, base_url=BASE, tenant="acme", api_key="k")
        assert [r.reservation_id for r in j.load().records] == ["r1"]
        assert not (j.directory / (journal_filename("r1") + ".lock")).exists()  # the writer made none
        with pytest.raises(JournalBusyError), j.claim("r1"):
            pass
        assert not (j.directory / (journal_filename("r1") + ".lock")).exists()  # nor did the skipped claim
    finally:
        if ending == "kill":
            proc.kill()  # (setting `done` after this could wait forever for the dead waiter)
        else:
            done.set()
        proc.join(60)
    with j.claim("r1") as record:  # its owner is gone, however it ended
        assert record is not None
    j.load()
    left = [p.name for p in (j.directory / OWNERS_DIR).iterdir() if not p.name.startswith(f"{os.getpid()}-")]
    assert left == []  # the dead owner's lock file was swept


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Any]:
    yield make_world(tmp_path / "world")


def test_replay_in_another_process_never_settles_what_a_live_process_is_settling(world: Any, tmp_path: Path) -> None:
    """Two real processes: the child's commit is parked in its transport (its record owned, no lock file);
    the parent's client resumes the journal and takes nothing; once the child is killed, it settles the record."""
    reached = SPAWN.Event()
    spec = ClientSpec(world=world, log_path=str(tmp_path / "child.log"), gate=("commit", False))
    proc = SPAWN.Process(target=run_child, args=(spec, reached, True, None), daemon=True)
    proc.start()
    try:
        assert reached.wait(60), "the child never reached its commit"
        [record] = world.journal_records()
        assert record["owner"].startswith(f"{proc.pid}-")
        with build_client(ClientSpec(world=world)) as other:
            assert other.client.pending_settlements == 0
            assert other.client.replay_journal() == 0
            assert other.client.flush(10_000) == 0
            assert sequence(other.recorder.entries) == []
        proc.kill()
        proc.join(60)
        assert proc.exitcode == -signal.SIGKILL
        with build_client(ClientSpec(world=world)) as fresh:
            assert fresh.client.flush(10_000) == 0
            assert sequence(fresh.recorder.entries, seen={record["idempotency_key"]}) == ["commit_same_key"]
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(60)
    assert world.journal_files() == []
    status, detail = world.reservation(record["reservation_id"])
    assert status == 200 and detail["status"] == "COMMITTED"


def test_a_failed_directory_sync_fails_the_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_spares: None
) -> None:
    from runcycles._journal import writer
    from runcycles.errors import JournalError

    j = _journal(tmp_path)

    def broken(directory: Path) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(writer, "fsync_dir", broken)
    with pytest.raises(JournalError, match="cannot sync journal directory"):
        j.write(_record("r1"))
    _journal(tmp_path, "process").write(_record("r2"))  # process mode never syncs the directory
