"""Recycled record files: a settled record's file becomes a spare instead of being removed (``full`` mode: used
again once its new name is durable; ``process`` mode: at once, nothing synced).

Removing a file whose blocks were synced is the costly part of a settlement's journal work on ext4 and xfs;
a file that keeps its blocks is overwritten in place at its size by the next fill, so its barrier syncs data
only. These tests hold the guarantees around it: a recycled file is blank, is used again only once its
spare name is durable, and a power cut at any commit still recovers the record in flight (`DiskModel`).
"""

# ruff: noqa: F811
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from fixtures_local import Harness, harness, uvicorn_switch  # noqa: F401
from test_journal_spares import DiskModel, PowerCutAtCommit, _journal, _record

from runcycles import CyclesClient, with_cycles
from runcycles._journal import spares as spares_module
from runcycles._journal.spares import BLOCK, SPARE_SUFFIX, SparePool, padded, pool_for

pytestmark = pytest.mark.timeout(120)

@pytest.fixture
def mode() -> str:
    return "inproc"


@pytest.fixture
def manual_refills(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refills run only when a test calls them (no background refill racing the assertions)."""
    monkeypatch.setattr(spares_module, "_submit", lambda pool: pool.cancel_request())


def _spares(directory: Path) -> dict[int, Path]:
    return {p.stat().st_ino: p for p in directory.iterdir() if p.name.endswith(SPARE_SUFFIX)}


def test_padded_fills_whole_blocks_and_never_shrinks_a_file() -> None:
    assert padded(b"{}", 0) == b"{}" + b" " * (BLOCK - 2)
    assert len(padded(b"x" * (BLOCK + 1), 0)) == 2 * BLOCK
    assert len(padded(b"{}", 3 * BLOCK)) == 3 * BLOCK  # an overwrite in place keeps the file's size
    assert json.loads(padded(b'{"a": 1}', 0)) == {"a": 1}  # trailing spaces are JSON whitespace


@pytest.mark.usefixtures("manual_refills")
def test_a_settled_record_file_becomes_a_blank_spare_used_again_after_a_directory_sync(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    pool = pool_for(j.directory)
    pool.refill()
    j.write(_record("r1"), owned=True)
    target = j.path_for("r1")
    inode = target.stat().st_ino
    assert target.stat().st_size == BLOCK
    assert j.load().records == [_record("r1")]  # the padded record reads back whole

    j.delete("r1", owned=True)
    assert not target.exists()
    recycled = _spares(j.directory)[inode]
    assert recycled.read_bytes() == b" " * BLOCK  # blank: nothing a later load could replay
    assert stat.S_IMODE(recycled.stat().st_mode) == 0o600
    assert pool.recycled == 1
    assert j.load().records == []

    taken = []
    while (spare := pool.take()) is not None:  # not handed out before its new name is durable
        taken.append(spare)
    assert recycled not in taken
    for spare in taken:
        spare.unlink()
    syncs, created = pool.directory_syncs, pool.created
    pool.refill()
    assert pool.directory_syncs == syncs + 1
    assert pool.ready == pool.created - created + 1  # the recycled file, and new ones up to the target

    written = [f"s{n}" for n in range(pool.ready)]
    for rid in written:
        j.write(_record(rid), owned=True)
    assert pool.ready == 0
    reused = [rid for rid in written if j.path_for(rid).stat().st_ino == inode]
    assert len(reused) == 1  # the same file, overwritten in place at its size
    again = j.path_for(reused[0])
    assert again.stat().st_size == BLOCK
    assert json.loads(again.read_bytes())["reservation_id"] == reused[0]


@pytest.mark.usefixtures("manual_refills")
def test_a_pool_keeps_at_most_twice_its_target_and_nothing_when_unused(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    pool = pool_for(j.directory)
    pool.refill()
    assert pool.ready == 8  # its target
    kept = []
    for n in range(9):
        settled = j.directory / f"settled-{n}.json"
        settled.write_bytes(b"{}")
        if pool.recycle(settled):
            kept.append(settled)
            assert not settled.exists()
        else:
            assert settled.exists()  # refused: the caller removes it
    assert len(kept) == 8 and pool.recycled == 8  # ready + recycled reached twice the target
    pool.refill()
    assert pool.ready == 16

    lone = SparePool(j.directory)  # no journal counts on it (see `retain`): it keeps nothing
    record = j.directory / "settled.json"
    record.write_bytes(b"{}")
    assert lone.recycle(record) is False
    assert record.exists()


def test_process_mode_reuses_a_settled_record_file_and_syncs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    j = _journal(tmp_path, "process")
    assert j.directory.is_dir()  # created (and its parent synced) once, before the spy
    syncs: list[int] = []
    monkeypatch.setattr(os, "fsync", lambda fd: syncs.append(fd))
    monkeypatch.setattr(os, "fdatasync", lambda fd: syncs.append(fd), raising=False)
    j.write(_record("r1"), owned=True)  # no settled file yet: a new one
    inode = j.path_for("r1").stat().st_ino
    j.delete("r1", owned=True)
    assert not j.path_for("r1").exists()
    (spare,) = _spares(j.directory).values()  # the settled record's file, blank, ready at once
    assert spare.stat().st_ino == inode and set(spare.read_bytes()) == {ord(" ")}
    assert stat.S_IMODE(spare.stat().st_mode) == 0o600

    j.write(_record("r2"), owned=True)
    assert j.path_for("r2").stat().st_ino == inode  # overwritten in place: no file created
    assert _spares(j.directory) == {}
    assert j.load().records == [_record("r2")]
    assert syncs == []

    j.delete("r2", owned=True)
    j.close()  # the last journal of the directory in this process removes its spares
    assert [p.name for p in j.directory.iterdir() if p.is_file()] == []


def test_full_and_process_journals_of_one_directory_never_share_spares(tmp_path: Path) -> None:
    full, process = _journal(tmp_path), _journal(tmp_path, "process")
    assert full.directory == process.directory
    synced, unsynced = pool_for(full.directory), pool_for(process.directory, synced=False)
    assert synced is not unsynced and synced.synced and not unsynced.synced
    process.write(_record("r1"), owned=True)
    process.delete("r1", owned=True)
    assert unsynced.ready == 1
    # A full-mode fill relies on its spare's name being durable, which a process-mode recycle does not make it.
    assert str(unsynced.take()) not in {str(p) for p in synced._ready}
    unsynced.refill()
    assert unsynced.ready == 0 and unsynced.directory_syncs == 0  # an unsynced pool creates and syncs nothing
    full.close()
    process.close()


def test_a_process_mode_pool_keeps_at_most_twice_its_target(tmp_path: Path) -> None:
    j = _journal(tmp_path, "process")
    pool = pool_for(j.directory, synced=False)
    for n in range(20):
        j.write(_record(f"r{n}"), owned=True)
    for n in range(20):
        j.delete(f"r{n}", owned=True)
    assert pool.ready == 16 == len(_spares(j.directory))  # the rest were removed
    assert [p for p in j.directory.iterdir() if p.name.endswith(".json")] == []
    j.close()


def test_blank_spares_of_a_gone_process_are_removed_by_a_load(tmp_path: Path) -> None:
    j = _journal(tmp_path, "process")
    gone = "999999-00000000deadbeef"
    blank = j.directory / f"spare-{gone}-{'1' * 16}.spare"
    blank.write_bytes(b" " * BLOCK)
    with os.scandir(j.directory) as entries:
        assert any(spares_module.holds_record(e) for e in entries)  # cannot tell without reading: load looks
    assert j.load().records == []
    assert not blank.exists()


@pytest.mark.usefixtures("manual_refills")
def test_own_spares_do_not_count_as_stored_records(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    pool_for(j.directory).refill()
    j.write(_record("r1"), owned=True)
    j.delete("r1", owned=True)  # a blank spare of this process now
    with os.scandir(j.directory) as entries:
        assert not any(spares_module.holds_record(e) for e in entries)


def test_a_power_cut_at_any_commit_of_a_run_recovers_the_record_in_flight(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, manual_refills: None
) -> None:
    disk = DiskModel(monkeypatch)
    cut = PowerCutAtCommit(harness.server.transport(), disk, tmp_path / "after-power-cut")
    calls = 12
    with CyclesClient(harness.config(), transport=cut) as client:
        cut.directory = client._journal_owner.journal.directory
        cut.base_url = client.config.base_url
        pool = pool_for(cut.directory)
        pool.refill()
        for n in range(1, calls + 1):

            @with_cycles(estimate=100, actual=n, client=client)
            def work() -> int:
                return 1

            assert work() == 1
            pool.refill()  # what the background does when the pool runs low
        created, recycled = pool.created, pool.recycled
    assert recycled == calls
    assert created < calls  # files were used again, not made anew for each record
    assert all(durable for _, durable in disk.filled), "a spare was filled before its name was durable"
    assert len(disk.filled) == calls
    for n, records in enumerate(cut.recovered, start=1):
        amounts = sorted(r.commit_body["actual"]["amount"] for r in records)
        assert n in amounts  # the record in flight is there
        # Others are settled records whose blanking was not synced: replayed, the server answers idempotently.
        assert set(amounts) <= set(range(1, n + 1))
        assert len({r.reservation_id for r in records}) == len(records)


@pytest.mark.usefixtures("manual_refills")
def test_without_pwrite_files_are_still_written_from_their_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(os, "pwrite")  # as on Windows
    j = _journal(tmp_path)
    pool = pool_for(j.directory)
    pool.refill()
    j.write(_record("r1"), owned=True)
    inode = j.path_for("r1").stat().st_ino
    j.delete("r1", owned=True)
    assert _spares(j.directory)[inode].read_bytes() == b" " * BLOCK
    pool.refill()
    for n in range(pool.ready):
        j.write(_record(f"s{n}", attempts=n), owned=True)
    assert [r.attempts for r in j.load().records if r.reservation_id.startswith("s")] == list(range(n + 1))


def test_paths_are_resolved_again_after_close(tmp_path: Path) -> None:
    j = _journal(tmp_path, "process")
    before = j.path_for("r1")
    j.close()
    j._root = tmp_path / "elsewhere"  # as when the partition resolves elsewhere on reopening (fallback root)
    assert j.path_for("r1") != before
    assert j.path_for("r1").parent == j.directory
