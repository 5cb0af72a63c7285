"""Spare record files: one sync barrier per fresh record in ``full`` mode, and what survives power loss.

`DiskModel` is the power-loss test seam: it watches the journal's ``os`` calls and keeps what a power cut
would leave on disk, under the weakest common rules (a directory entry survives only once its directory was
synced; a file's content only once the file was synced). When a commit request leaves the process, the test
rebuilds the directory from that durable state and loads it with a fresh journal: the record must be there.
"""

# ruff: noqa: F811
from __future__ import annotations

import json
import multiprocessing
import os
import stat
import threading
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
from fixtures_local import Harness, harness, uvicorn_switch  # noqa: F401

from runcycles import CyclesClient, with_cycles
from runcycles._journal import Journal, JournalRecord, journal_filename
from runcycles._journal import locks as journal_locks
from runcycles._journal import spares as spares_module
from runcycles._journal.spares import SPARE_NAME, SPARE_SUFFIX, SparePool, pool_for

pytestmark = pytest.mark.timeout(120)

SPAWN = multiprocessing.get_context("spawn")
BASE = "http://localhost:7878"


@pytest.fixture
def mode() -> str:
    return "inproc"


def _record(rid: str, **changes: Any) -> JournalRecord:
    record = JournalRecord(
        reservation_id=rid,
        idempotency_key=f"key-{rid}",
        commit_body={"idempotency_key": f"key-{rid}", "actual": {"unit": "USD_MICROCENTS", "amount": 5}},
        event_body={"idempotency_key": f"key-{rid}"},
        base_url=BASE,
        recorded_at_ms=1,
    )
    return attrs.evolve(record, **changes)


def _journal(root: Path, sync: str = "full") -> Journal:
    return Journal(root, base_url=BASE, tenant="acme", api_key="k", sync=sync)  # type: ignore[arg-type]


def _spares(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.endswith(SPARE_SUFFIX))


class DiskModel:
    """What a power cut would leave: the entries of each directory as of its last sync, and each file's
    content as of its last sync (``b""`` if never synced). Also notes every spare filled (opened and synced),
    and whether its directory entry was durable at that moment, and the barriers of the critical path
    (``barriers``: every thread's but the background thread's that prepares spares)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, durable: tuple[Path, ...] = ()) -> None:
        self.paths: dict[int, str] = {}
        self.entries: dict[str, dict[str, int]] = {}
        self.data: dict[int, bytes] = {}
        self.filled: list[tuple[str, bool]] = []
        self.barriers: list[str] = []
        self._spare_open: dict[int, tuple[str, bool]] = {}
        self._lock = threading.Lock()
        real_open, real_fsync = os.open, os.fsync
        real_datasync = getattr(os, "fdatasync", os.fsync)

        def model_open(path: Any, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
            fd = real_open(path, flags, mode, **kwargs)
            name = os.fspath(path)
            with self._lock:
                self.paths[fd] = name
                self._spare_open.pop(fd, None)
                if SPARE_NAME.match(os.path.basename(name)) and not flags & os.O_CREAT:
                    durable = os.path.basename(name) in self.entries.get(os.path.dirname(name), {})
                    self._spare_open[fd] = (name, durable)  # a fill if it is synced (a recycle blanks it, unsynced)
            return fd

        def synced(fd: int, real: Any) -> None:
            real(fd)
            with self._lock:
                path = self.paths[fd]
                if fd in self._spare_open:
                    self.filled.append(self._spare_open.pop(fd))
                is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
                if not spares_module.refilling():  # off the critical path
                    self.barriers.append("dir" if is_dir else "file")
                if is_dir:
                    self.entries[path] = {e.name: e.inode() for e in os.scandir(path) if e.is_file()}
                else:
                    self.data[os.fstat(fd).st_ino] = Path(path).read_bytes()

        monkeypatch.setattr(os, "open", model_open)
        monkeypatch.setattr(os, "fsync", lambda fd: synced(fd, real_fsync))
        monkeypatch.setattr(os, "fdatasync", lambda fd: synced(fd, real_datasync), raising=False)
        for directory in durable:  # the model starts from a state where these were synced
            with self._lock:
                self.entries[str(directory)] = {}
                for entry in os.scandir(directory):
                    if entry.is_file():
                        self.entries[str(directory)][entry.name] = entry.inode()
                        self.data[entry.inode()] = Path(entry.path).read_bytes()

    def restore(self, directory: Path, into: Path) -> Path:
        """Rebuild ``directory`` as a power cut now would leave it, under ``into``; returns the copy."""
        copy = into / directory.name
        copy.mkdir(parents=True)
        with self._lock:
            for name, inode in self.entries.get(str(directory), {}).items():
                (copy / name).write_bytes(self.data.get(inode, b""))
        return copy


class PowerCutAtCommit(httpx.BaseTransport):
    """When a commit leaves: what a fresh journal would load after a power cut at that instant."""

    def __init__(self, inner: httpx.BaseTransport, disk: DiskModel, into: Path) -> None:
        self.inner, self.disk, self.into = inner, disk, into
        self.directory = Path()
        self.base_url = ""
        self.recovered: list[list[JournalRecord]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/commit"):
            root = self.into / f"cut{len(self.recovered)}"
            self.disk.restore(self.directory, root)
            fresh = Journal(root, base_url=self.base_url, tenant="acme", api_key="x", sync="process")
            self.recovered.append(fresh.load().records)
        return self.inner.handle_request(request)


def _power_cut_call(h: Harness, tmp_path: Path, disk: DiskModel, **config: Any) -> PowerCutAtCommit:
    cut = PowerCutAtCommit(h.server.transport(), disk, tmp_path / "after-power-cut")
    with CyclesClient(h.config(**config), transport=cut) as client:
        cut.directory = client._journal_owner.journal.directory
        cut.base_url = client.config.base_url
        pool_for(cut.directory).refill()  # steady state: spares ready (normally done in the background)

        @with_cycles(estimate=10, actual=7, client=client)
        def work() -> int:
            return 1

        assert work() == 1
    return cut


def test_power_cut_when_the_commit_leaves_keeps_the_record_with_one_barrier(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = DiskModel(monkeypatch)
    cut = _power_cut_call(harness, tmp_path, disk)
    [recovered] = cut.recovered
    [record] = recovered  # durable under the spare's name (its rename was not synced): a load recovers it
    assert record.commit_body["actual"]["amount"] == 7
    [(spare, durable)] = disk.filled
    assert durable, "a spare was used before its directory entry was durable"
    assert not os.path.exists(spare)


def test_power_cut_when_the_commit_leaves_without_a_spare_keeps_the_record(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SparePool, "take", lambda self: None)
    disk = DiskModel(monkeypatch)
    cut = _power_cut_call(harness, tmp_path, disk)
    [[record]] = cut.recovered
    assert record.commit_body["actual"]["amount"] == 7
    assert disk.filled == []


def test_the_power_cut_model_loses_an_unsynced_record(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The negative control: ``journal_sync="process"`` survives the process, not the machine."""
    disk = DiskModel(monkeypatch)
    cut = _power_cut_call(harness, tmp_path, disk, journal_sync="process")
    assert cut.recovered == [[]]


def test_fresh_record_one_data_barrier_rewrite_two(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    j = _journal(tmp_path)
    pool_for(j.directory).refill()
    disk = DiskModel(monkeypatch, durable=(j.directory,))
    j.write(_record("r1"))
    assert disk.barriers == ["file"]
    [(spare, durable)] = disk.filled
    assert durable and not os.path.exists(spare)
    assert stat.S_IMODE(j.path_for("r1").stat().st_mode) == 0o600
    disk.barriers.clear()
    # A rewrite (mode switch, 429 floor) replaces the record the two-barrier way: never two versions on disk.
    j.update(_record("r1", mode="event", attempts=2))
    assert disk.barriers == ["file", "dir"]
    assert len(disk.filled) == 1
    assert j.load().records == [_record("r1", mode="event", attempts=2)]


def test_a_settlement_first_write_skips_the_existence_check_and_a_rewrite_keeps_it(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first write of a record by the settlement that owns it cannot find a file of it (its reservation id
    is new to this process), so it goes straight to a spare; a later write of the same record looks first."""
    looked: list[str] = []
    real = os.path.lexists

    def lexists(path: Any) -> bool:
        looked.append(os.path.basename(os.fspath(path)))
        return real(path)

    monkeypatch.setattr(os.path, "lexists", lexists)
    with CyclesClient(harness.config()) as client:
        owner = client._journal_owner
        pool_for(owner.journal.directory).refill()
        record = _record("r-fresh", base_url=client.config.base_url)
        owner.journal_write(record)
        assert looked == []
        assert owner.journal.path_for("r-fresh").exists()
        owner.journal_write(attrs.evolve(record, attempts=1))
        assert looked == [journal_filename("r-fresh")]
        owner.journal_delete("r-fresh")


def test_spares_are_private_and_refilled_in_one_directory_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = os.umask(0o022)
    try:
        j = _journal(tmp_path, "process")  # no background refill: this pool is the only one here
        pool = SparePool(j.directory)
        pool.refill()
    finally:
        os.umask(old)
    spares = _spares(j.directory)
    assert len(spares) == pool.ready == 8
    assert {stat.S_IMODE(p.stat().st_mode) for p in spares} == {0o600}
    assert {p.stat().st_size for p in spares} == {0}
    token = journal_locks.process_owner(j.directory)
    assert all(p.name.startswith(f"spare-{token}-") for p in spares)

    monkeypatch.setattr(spares_module, "_submit", lambda pool: None)  # refills only when asked here
    disk = DiskModel(monkeypatch)
    syncs = pool.directory_syncs
    while pool.ready:
        assert pool.take() is not None
    assert pool.take() is None  # ran dry: the pool grows by what was missing
    assert pool.take() is None
    pool.refill()
    assert pool.ready == len(spares) + 2 and pool.directory_syncs == syncs + 1
    assert disk.barriers.count("dir") == 1


def _place(path: Path, data: bytes) -> None:
    """Put a file in a journal directory whole (written beside it, then renamed in), as a gone process left it:
    the directory's background refill may sweep it at any moment, and must never see it half written."""
    beside = path.parent.parent / f"{path.name}.staging"
    beside.write_bytes(data)
    os.replace(beside, path)


def test_load_recovers_removes_and_quarantines_spares_of_a_gone_process(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    directory = j.directory
    gone = "999999-00000000deadbeef"
    valid = directory / f"spare-{gone}-{'1' * 16}.spare"
    _place(valid, json.dumps(_record("r1").to_json_dict() | {"owner": gone}).encode())
    empty = directory / f"spare-{gone}-{'2' * 16}.spare"
    _place(empty, b"")
    broken = directory / f"spare-{gone}-{'3' * 16}.spare"
    _place(broken, b'{"version": 2, "reserv')
    stale = directory / f"spare-{gone}-{'4' * 16}.spare"  # a copy of a record whose rename was synced later
    j.write(_record("r2", attempts=3))
    _place(stale, json.dumps(_record("r2").to_json_dict()).encode())

    result = j.load()
    assert [r.reservation_id for r in result.records] == ["r1", "r2"]
    assert result.records[1].attempts == 3  # the standard record is authoritative
    assert json.loads(j.path_for("r1").read_text("utf-8"))["reservation_id"] == "r1"
    assert "owner" not in json.loads(j.path_for("r1").read_text("utf-8"))
    assert not valid.exists() and not empty.exists() and not stale.exists() and not broken.exists()
    assert [p.name.split(".spare")[0] for p in result.quarantined] == [broken.name[: -len(".spare")]]
    with j.claim("r1") as record:
        assert record == _record("r1")


def test_load_leaves_the_spares_of_a_live_process_and_its_own_alone(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    directory = j.directory
    live = "424242-0000000000c0ffee"
    (directory / journal_locks.OWNERS_DIR).mkdir(exist_ok=True)
    lock = journal_locks.try_lock(directory / journal_locks.OWNERS_DIR / f"{live}.lock")
    assert lock is not None  # stands for another process that is alive
    try:
        in_flight = directory / f"spare-{live}-{'1' * 16}.spare"
        _place(in_flight, json.dumps(_record("r1").to_json_dict()).encode())
        idle = directory / f"spare-{live}-{'2' * 16}.spare"
        _place(idle, b"")
        own = directory / f"spare-{journal_locks.process_owner(directory)}-{'3' * 16}.spare"
        _place(own, json.dumps(_record("r3").to_json_dict()).encode())
        assert j.load().records == []
        assert in_flight.exists() and idle.exists() and own.exists()
    finally:
        lock.release(remove=True)
    own.unlink()
    assert [r.reservation_id for r in j.load().records] == ["r1"]  # its owner is gone now
    assert not in_flight.exists() and not idle.exists()


def _die_before_the_rename(root: str, sync: str) -> None:
    j = _journal(Path(root), sync)
    if sync == "full":
        pool_for(j.directory).refill()
    else:  # a process-mode spare is a settled record's file
        j.write(_record("r0"), owned=True)
        j.delete("r0", owned=True)
    real = os.replace

    def die(src: Any, dst: Any) -> None:
        if str(src).endswith(SPARE_SUFFIX):
            os._exit(17)  # the record's data is durable in the spare; its rename never happens
        real(src, dst)

    os.replace = die  # type: ignore[assignment]
    j.write(_record("r1", attempts=5), owned=True)


@pytest.mark.parametrize("sync", ["full", "process"])
def test_a_process_killed_between_the_barrier_and_the_rename_leaves_a_recoverable_record(
    tmp_path: Path, sync: str
) -> None:
    proc = SPAWN.Process(target=_die_before_the_rename, args=(str(tmp_path), sync))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 17
    j = _journal(tmp_path, "process")  # no spare refill (nor its sweep) of its own while we look
    holding = [p for p in _spares(j.directory) if p.stat().st_size]
    assert len(holding) == 1 and not j.path_for("r1").exists()
    assert j.load().records == [_record("r1", attempts=5)]
    assert j.path_for("r1").exists()
    assert [p for p in _spares(j.directory) if not p.name.startswith(f"spare-{os.getpid()}-")] == []


def _write_and_exit(root: str) -> None:
    j = _journal(Path(root))
    pool_for(j.directory).refill()
    j.write(_record("r1"), owned=True)


def test_a_process_that_exits_removes_its_unused_spares(tmp_path: Path) -> None:
    proc = SPAWN.Process(target=_write_and_exit, args=(str(tmp_path),))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    j = _journal(tmp_path, "process")  # process mode prepares no spares of its own
    assert [p.name for p in _spares(j.directory) if p.name.startswith(f"spare-{proc.pid}-")] == []
    assert j.path_for("r1").exists()
    assert journal_filename("r1") in os.listdir(j.directory)


def test_the_first_refill_sweeps_the_empty_spares_of_gone_processes(tmp_path: Path) -> None:
    j = _journal(tmp_path, "process")  # process mode: nothing prepared in the background
    directory = j.directory
    gone = "999999-00000000deadbeef"
    empty = directory / f"spare-{gone}-{'1' * 16}.spare"
    _place(empty, b"")
    holding = directory / f"spare-{gone}-{'2' * 16}.spare"
    holding.write_bytes(json.dumps(_record("r1").to_json_dict()).encode())
    pool_for(directory).refill()
    assert not empty.exists()
    assert holding.exists()  # a record: moved by a load, under its claim
    assert [r.reservation_id for r in j.load().records] == ["r1"]


def test_discard_at_exit_waits_for_a_refill_in_flight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runcycles._journal import spares

    directory = _journal(tmp_path, "process").directory
    pool = SparePool(directory)
    in_sync, go_on = threading.Event(), threading.Event()
    real = spares.fsync_dir

    def slow_sync(path: Path) -> None:
        in_sync.set()
        assert go_on.wait(30)
        real(path)

    monkeypatch.setattr(spares, "fsync_dir", slow_sync)
    refill = threading.Thread(target=pool.refill)
    refill.start()
    assert in_sync.wait(30)  # spare files exist, not yet published
    assert _spares(directory)
    discard = threading.Thread(target=pool.discard)
    discard.start()
    go_on.set()
    refill.join(30)
    discard.join(30)
    assert _spares(directory) == []  # none left behind
    pool.refill()
    assert pool.ready == 0  # and no refill after the discard
