"""Tests of the durable settlement journal (runcycles._journal)."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import stat
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import attrs
import pytest

from runcycles._journal import (
    JOURNAL_VERSION,
    Journal,
    JournalBusyError,
    JournalError,
    JournalRecord,
    journal_filename,
    journal_fingerprint,
)
from runcycles._journal import locks as journal_locks
from runcycles._journal import paths as journal_paths
from runcycles._journal.locks import OWNERS_DIR
from runcycles._journal.spares import SPARE_SUFFIX, SparePool, pool_for
from runcycles.errors import CyclesError

BASE = "http://localhost:7878"
SECRET = "sk-live-SECRET-key-0123456789"


def entries(directory: Path) -> list[str]:
    """The directory's entries, without this process's owner directory and the blank spare files (empty, or
    recycled records overwritten with spaces)."""
    return sorted(
        p.name
        for p in directory.iterdir()
        if p.name != OWNERS_DIR and not (p.name.endswith(SPARE_SUFFIX) and not p.read_bytes().strip())
    )


def make_record(rid: str = "res-1", **changes: Any) -> JournalRecord:
    key = f"key-{rid}"
    commit = {"idempotency_key": key, "actual": {"unit": "USD_MICROCENTS", "amount": 42}}
    event = {
        "idempotency_key": key,
        "subject": {"tenant": "acme"},
        "action": {"kind": "llm.completion", "name": "gpt"},
        "actual": {"unit": "USD_MICROCENTS", "amount": 42},
        "metadata": {"runcycles.recovered_from": rid},
    }
    fields: dict[str, Any] = dict(
        reservation_id=rid,
        idempotency_key=key,
        commit_body=commit,
        event_body=event,
        base_url=BASE,
        recorded_at_ms=1_700_000_000_000,
    )
    fields.update(changes)
    return JournalRecord(**fields)


def make_journal(root: Path, *, tenant: str | None = "acme", api_key: str = SECRET) -> Journal:
    return Journal(root, base_url=BASE, tenant=tenant, api_key=api_key)


def legacy_v1(rid: str, *, mode: str | None = "commit", **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "version": 1,
        "reservation_id": rid,
        "base_url": BASE,
        "commit_body": {"idempotency_key": f"legacy-{rid}", "actual": {"unit": "TOKENS", "amount": 7}},
        "event_fallback_body": None,
        "recorded_at_ms": 1_600_000_000_000,
        "not_before_ms": None,
    }
    if mode is not None:
        data["mode"] = mode
    data.update(extra)
    return data


# ----------------------------------------------------------------------------------- fingerprint


def test_fingerprint_vectors_match_existing_clients() -> None:
    assert journal_fingerprint("http://localhost", tenant=None, api_key="test-key") == "68c905017df7dbfc"
    assert journal_fingerprint("http://localhost", tenant="acme", api_key="whatever") == "8baba538fb970da4"
    assert journal_fingerprint("http://localhost", tenant="acme", api_key="other") == "8baba538fb970da4"


def test_fingerprint_blank_tenant_is_absent_and_tenant_is_not_trimmed() -> None:
    by_key = journal_fingerprint("http://localhost", tenant=None, api_key="test-key")
    assert journal_fingerprint("http://localhost", tenant="  ", api_key="test-key") == by_key
    assert journal_fingerprint("http://localhost", tenant="", api_key="test-key") == by_key
    assert journal_fingerprint("http://localhost", tenant=" acme ", api_key="k") != "8baba538fb970da4"
    assert journal_fingerprint("http://localhost/", tenant="acme", api_key="k") != "8baba538fb970da4"


def test_tenant_partition_is_stable_across_key_rotation(tmp_path: Path) -> None:
    old = make_journal(tmp_path, tenant="acme", api_key="old-key")
    old.write(make_record("r1"))
    new = make_journal(tmp_path, tenant="acme", api_key="new-key")
    assert new.directory == old.directory
    assert new.directory.parent == tmp_path
    assert [r.reservation_id for r in new.load().records] == ["r1"]


def test_key_partition_differs_per_key_and_server(tmp_path: Path) -> None:
    a = make_journal(tmp_path, tenant=None, api_key="key-a")
    b = make_journal(tmp_path, tenant=None, api_key="key-b")
    c = Journal(tmp_path, base_url=BASE + "/", tenant=None, api_key="key-a")
    assert len({a.directory, b.directory, c.directory}) == 3
    a.write(make_record("r1"))
    assert b.load().records == []


# ------------------------------------------------------------------------------- write and load


def test_write_load_roundtrip_and_updates_persist(tmp_path: Path) -> None:
    j = make_journal(tmp_path)
    rec = make_record("r1")
    j.write(rec)
    assert j.load().records == [rec]

    rate_limited = attrs.evolve(rec, not_before_ms=1_700_000_123_456, attempts=3)
    j.update(rate_limited)
    switched = attrs.evolve(rate_limited, mode="event")
    j.update(switched)

    fresh = make_journal(tmp_path, api_key="rotated")
    [loaded] = fresh.load().records
    assert loaded.mode == "event"
    assert loaded.not_before_ms == 1_700_000_123_456
    assert loaded.attempts == 3
    assert loaded.idempotency_key == "key-r1"
    assert loaded.event_body == rec.event_body
    assert loaded.commit_body == rec.commit_body
    on_disk = json.loads(j.path_for("r1").read_text("utf-8"))
    assert on_disk["version"] == JOURNAL_VERSION == 2
    assert on_disk["mode"] == "event"
    assert on_disk["not_before_ms"] == 1_700_000_123_456


def test_delete_removes_record_and_missing_is_fine(tmp_path: Path) -> None:
    j = make_journal(tmp_path)
    j.write(make_record("r1"))
    j.write(make_record("r2"))
    j.delete("r1")
    j.delete("r1")
    j.delete("never-written")
    assert [r.reservation_id for r in j.load().records] == ["r2"]
    assert not j.path_for("r1").exists()


def test_load_orders_oldest_first(tmp_path: Path) -> None:
    j = make_journal(tmp_path)
    j.write(make_record("late", recorded_at_ms=3))
    j.write(make_record("early", recorded_at_ms=1))
    j.write(make_record("mid", recorded_at_ms=2))
    assert [r.reservation_id for r in j.load().records] == ["early", "mid", "late"]


def test_records_of_another_base_url_are_skipped(tmp_path: Path) -> None:
    j = make_journal(tmp_path)
    j.write(make_record("mine"))
    j.write(make_record("theirs", base_url="http://elsewhere"))
    result = j.load()
    assert [r.reservation_id for r in result.records] == ["mine"]
    assert result.quarantined == []
    assert j.path_for("theirs").exists()


def test_record_validation() -> None:
    with pytest.raises(ValueError, match="event_body"):
        make_record(mode="event", event_body=None)
    with pytest.raises(ValueError, match="attempts"):
        make_record(attempts=True)
    with pytest.raises(ValueError, match="not_before_ms"):
        make_record(not_before_ms=-1)
    with pytest.raises(ValueError, match="mode"):
        make_record(mode="release")
    with pytest.raises(ValueError, match="reservation_id"):
        make_record("")


def test_filename_is_sha256_of_exact_utf8_id(tmp_path: Path) -> None:
    ids = ["a/b", "a_b", "a:b", "..", "../escape", "ünïcødé-✓", "a b", "A/B"]
    j = make_journal(tmp_path / "root")
    for rid in ids:
        j.write(make_record(rid))
    names = set()
    for rid in ids:
        expected = "v2-" + hashlib.sha256(rid.encode("utf-8")).hexdigest() + ".json"
        assert journal_filename(rid) == expected
        assert j.path_for(rid) == j.directory / expected
        assert (j.directory / expected).is_file()
        assert json.loads((j.directory / expected).read_text("utf-8"))["reservation_id"] == rid
        names.add(expected)
    assert len(names) == len(ids)  # distinct ids never share a file
    assert entries(j.directory) == sorted(names)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]  # nothing escaped the directory
    assert sorted(r.reservation_id for r in j.load().records) == sorted(ids)


def test_permissions_are_private_even_with_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        root = tmp_path / "deep" / "root"
        j = make_journal(root)
        j.write(make_record("r1"))
        (j.directory / journal_filename("bad")).write_text("{nope", "utf-8")
        j.load()
    finally:
        os.umask(old)
    for directory in (tmp_path / "deep", root, j.directory, j.directory / "quarantine"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    assert stat.S_IMODE(j.path_for("r1").stat().st_mode) == 0o600
    j.write(make_record("r2"))
    assert stat.S_IMODE(j.path_for("r2").stat().st_mode) == 0o600


def test_api_key_is_never_on_disk_nor_in_repr(tmp_path: Path) -> None:
    j = make_journal(tmp_path, tenant=None, api_key=SECRET)
    j.write(make_record("r1"))
    j.update(attrs.evolve(make_record("r1"), mode="event", not_before_ms=5))
    with j.claim("r2") as rec:
        assert rec is None
        j.write(make_record("r2"))
        (j.directory / journal_filename("junk")).write_bytes(b"\x00garbage")
        assert len(j.load().quarantined) == 1
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) >= 3
    for path in tmp_path.rglob("*"):
        assert SECRET not in str(path)
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in repr(j)
    assert not any(SECRET in repr(getattr(j, name, None)) for name in Journal.__slots__)


# ---------------------------------------------------------------------------------- atomicity


def test_failed_rename_keeps_old_record_and_raises_journal_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    j = make_journal(tmp_path)
    original = make_record("r1")
    j.write(original)
    before = j.path_for("r1").read_bytes()

    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(JournalError, match="r1") as info:
        j.update(attrs.evolve(original, mode="event"))
    assert isinstance(info.value, CyclesError)
    monkeypatch.undo()

    assert j.path_for("r1").read_bytes() == before
    assert entries(j.directory) == [journal_filename("r1")]
    assert j.load().records == [original]


def test_write_without_a_spare_fsyncs_file_and_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    j = make_journal(tmp_path)
    _ = j.directory
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(SparePool, "take", lambda self: None)
    pool_for(j.directory).refill()  # the background refill is done (its directory sync is not counted)
    monkeypatch.setattr(os, "fsync", spy)
    monkeypatch.setattr(os, "fdatasync", spy, raising=False)
    j.write(make_record("r1"))
    assert synced == ["file", "dir"]


def _crash_during_rename(root: str) -> None:
    j = Journal(root, base_url=BASE, tenant="acme", api_key="k")

    def die(src: Any, dst: Any) -> None:
        os._exit(17)  # the process dies after the temp file is written, before the rename

    os.replace = die  # type: ignore[assignment]
    j.write(make_record("r1", attempts=9))


def test_crash_between_temp_write_and_rename_leaves_old_record(tmp_path: Path) -> None:
    j = make_journal(tmp_path)
    original = make_record("r1")
    j.write(original)

    proc = multiprocessing.get_context("spawn").Process(target=_crash_during_rename, args=(str(tmp_path),))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 17

    temps = [p for p in j.directory.iterdir() if p.name.endswith(".tmp")]
    assert len(temps) == 1
    assert json.loads(temps[0].read_text("utf-8"))["attempts"] == 9  # fully written, never renamed

    result = j.load()
    assert result.records == [original]
    assert result.quarantined == []
    assert temps[0].exists()  # a fresh temp may belong to a live writer: kept

    hours_ago = time.time() - 2 * 3600
    os.utime(temps[0], (hours_ago, hours_ago))
    assert j.load().records == [original]
    assert not temps[0].exists()


# ---------------------------------------------------------------------------------- quarantine


def test_corrupt_and_unsupported_records_are_quarantined_others_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    j = make_journal(tmp_path)
    good = make_record("good")
    j.write(good)
    bad: dict[str, bytes] = {
        "garbage": b"{not json",
        "future": json.dumps({**good.to_json_dict(), "reservation_id": "future", "version": 99}).encode(),
        "missing-key": json.dumps(
            {k: v for k, v in make_record("missing-key").to_json_dict().items() if k != "idempotency_key"}
        ).encode(),
        "array": b"[1, 2]",
        "bad-mode": json.dumps({**make_record("bad-mode").to_json_dict(), "mode": "release"}).encode(),
        "neg-time": json.dumps({**make_record("neg-time").to_json_dict(), "recorded_at_ms": -5}).encode(),
        "nan": b'{"version": 2, "attempts": NaN}',
        "bad-utf8": b"\xff\xfe\x00",
    }
    for rid, content in bad.items():
        (j.directory / journal_filename(rid)).write_bytes(content)

    with caplog.at_level(logging.ERROR, logger="runcycles.journal"):
        result = j.load()

    assert result.records == [good]
    assert len(result.quarantined) == len(bad)
    for rid, content in bad.items():
        name = journal_filename(rid)
        assert not (j.directory / name).exists()
        [moved] = [p for p in result.quarantined if p.name.startswith(name + ".corrupt-")]
        assert moved.parent == j.directory / "quarantine"
        assert moved.read_bytes() == content
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert any(str(j.directory / name) in message for message in errors)
    again = j.load()
    assert again.records == [good]
    assert again.quarantined == []


def test_record_under_the_wrong_name_is_quarantined(tmp_path: Path) -> None:
    j = make_journal(tmp_path)
    j.write(make_record("r1"))
    wrong = j.directory / journal_filename("r2")
    wrong.write_bytes(j.path_for("r1").read_bytes())
    result = j.load()
    assert [r.reservation_id for r in result.records] == ["r1"]
    assert [p.parent.name for p in result.quarantined] == ["quarantine"]
    assert not wrong.exists()


def test_claim_of_corrupt_record_quarantines_and_yields_none(tmp_path: Path) -> None:
    j = make_journal(tmp_path)
    j.write(make_record("r1"))
    j.path_for("r1").write_text('{"version": 2}', "utf-8")
    with j.claim("r1") as rec:
        assert rec is None
    assert not j.path_for("r1").exists()
    assert len(list((j.directory / "quarantine").iterdir())) == 1


# ------------------------------------------------------------------------------- legacy records


def test_version_1_record_under_standard_name_is_read_and_rewritten(tmp_path: Path) -> None:
    j = make_journal(tmp_path)
    j.path_for("r1").write_text(json.dumps(legacy_v1("r1", mode=None)), "utf-8")
    event_body = {"idempotency_key": "legacy-r2", "actual": {"unit": "TOKENS", "amount": 7}}
    j.path_for("r2").write_text(
        json.dumps(legacy_v1("r2", mode="event", commit_body=None, event_fallback_body=event_body)), "utf-8"
    )
    result = j.load()
    assert result.quarantined == []
    r1, r2 = sorted(result.records, key=lambda r: r.reservation_id)
    assert (r1.mode, r1.idempotency_key, r1.attempts, r1.not_before_ms) == ("commit", "legacy-r1", 0, None)
    assert r1.recorded_at_ms == 1_600_000_000_000
    assert r1.commit_body["actual"] == {"unit": "TOKENS", "amount": 7}
    assert (r2.mode, r2.idempotency_key, r2.event_body) == ("event", "legacy-r2", event_body)
    for rid in ("r1", "r2"):
        assert json.loads(j.path_for(rid).read_text("utf-8"))["version"] == 2


def test_version_1_record_with_null_mode_is_quarantined(tmp_path: Path) -> None:
    j = make_journal(tmp_path)
    j.path_for("r1").write_text(json.dumps(legacy_v1("r1", mode=None) | {"mode": None}), "utf-8")
    result = j.load()
    assert result.records == []
    assert len(result.quarantined) == 1


def test_legacy_name_migrates_to_standard_name_on_load(tmp_path: Path) -> None:
    j = make_journal(tmp_path)
    legacy = j.directory / "order_42.json"  # legacy encoding of "order/42"
    legacy.write_text(json.dumps(legacy_v1("order/42")), "utf-8")
    [rec] = j.load().records
    assert rec.reservation_id == "order/42"
    assert rec.idempotency_key == "legacy-order/42"
    assert not legacy.exists()
    assert json.loads(j.path_for("order/42").read_text("utf-8"))["version"] == 2
    assert j.load().records == [rec]


def test_colliding_legacy_ids_the_matching_one_migrates_the_other_survives(tmp_path: Path) -> None:
    # "a/b" and "a_b" share the legacy name a_b.json; the file there belongs to "a/b".
    j = make_journal(tmp_path)
    legacy = j.directory / "a_b.json"
    legacy.write_text(json.dumps(legacy_v1("a/b")), "utf-8")

    assert j.migrate_legacy("a_b") is None
    assert legacy.exists()
    j.delete("a_b")
    assert legacy.exists()
    with j.claim("a_b") as rec:
        assert rec is None
    assert legacy.exists()

    migrated = j.migrate_legacy("a/b")
    assert migrated is not None
    assert migrated.reservation_id == "a/b"
    assert not legacy.exists()
    assert j.path_for("a/b").exists()
    assert not j.path_for("a_b").exists()


def test_colliding_legacy_file_and_standard_record_both_survive_load(tmp_path: Path) -> None:
    j = make_journal(tmp_path)
    j.write(make_record("a_b"))
    (j.directory / "a_b.json").write_text(json.dumps(legacy_v1("a/b")), "utf-8")
    result = j.load()
    assert sorted(r.reservation_id for r in result.records) == ["a/b", "a_b"]
    assert result.quarantined == []
    assert j.path_for("a_b").exists() and j.path_for("a/b").exists()
    by_id = {r.reservation_id: r for r in result.records}
    assert by_id["a_b"].idempotency_key == "key-a_b"
    assert by_id["a/b"].idempotency_key == "legacy-a/b"


def test_legacy_file_whose_id_does_not_match_its_name_is_left_alone(tmp_path: Path) -> None:
    j = make_journal(tmp_path)
    stray = j.directory / "x_y.json"
    stray.write_text(json.dumps(legacy_v1("something-else")), "utf-8")
    result = j.load()
    assert result.records == []
    assert result.quarantined == []
    assert stray.exists()


# ------------------------------------------------------------------------------------- claims


def test_claim_yields_fresh_record_and_cleans_lock_after_delete(tmp_path: Path) -> None:
    j = make_journal(tmp_path)
    other = make_journal(tmp_path)
    j.write(make_record("r1"))
    other.update(make_record("r1", attempts=4))
    lock = j.path_for("r1").with_name(journal_filename("r1") + ".lock")
    with j.claim("r1") as rec:
        assert rec is not None and rec.attempts == 4  # re-read, not cached
        assert lock.exists()
        j.delete("r1")
    assert not lock.exists()
    with j.claim("r1") as rec:
        assert rec is None
    assert not lock.exists()
    assert entries(j.directory) == []


def test_lock_file_is_removed_by_delete_outside_a_claim(tmp_path: Path) -> None:
    j = make_journal(tmp_path)
    j.write(make_record("r1"))
    with j.claim("r1"):
        pass
    lock = j.directory / (journal_filename("r1") + ".lock")
    assert lock.exists()  # record still there: lock file kept
    j.delete("r1")
    assert not lock.exists()


def test_orphan_lock_file_is_cleaned_on_load(tmp_path: Path) -> None:
    j = make_journal(tmp_path)
    orphan = j.directory / (journal_filename("gone") + ".lock")
    orphan.write_bytes(b"")
    assert j.load().records == []
    assert not orphan.exists()


def test_claim_is_exclusive_between_threads_and_instances(tmp_path: Path) -> None:
    j = make_journal(tmp_path)
    j.write(make_record("r1"))
    other = make_journal(tmp_path, api_key="another")
    outcome: list[str] = []

    def contender() -> None:
        try:
            with other.claim("r1"):
                outcome.append("claimed")
        except JournalBusyError as exc:
            outcome.append(f"busy:{exc.reservation_id}")

    with j.claim("r1"):
        thread = threading.Thread(target=contender)
        thread.start()
        thread.join(30)
    assert outcome == ["busy:r1"]
    with other.claim("r1") as rec:
        assert rec is not None
    assert not issubclass(JournalBusyError, JournalError)


def test_owner_holds_claim_while_settling_so_replay_skips_it(tmp_path: Path) -> None:
    owner = make_journal(tmp_path)
    replayer = make_journal(tmp_path)
    with owner.claim("r1") as existing:
        assert existing is None
        owner.write(make_record("r1"))  # journaled before the request leaves
        [listed] = replayer.load().records
        with pytest.raises(JournalBusyError), replayer.claim(listed.reservation_id):
            pass
        owner.delete("r1")  # settled
    assert replayer.load().records == []
    assert entries(owner.directory) == []


def test_exception_inside_claim_releases_it(tmp_path: Path) -> None:
    j = make_journal(tmp_path)
    j.write(make_record("r1"))
    with pytest.raises(RuntimeError), j.claim("r1"):
        raise RuntimeError("boom")
    with j.claim("r1") as rec:
        assert rec is not None


def _claim_worker(root: str, barrier: Any, release: Any, results: Any) -> None:
    j = Journal(root, base_url=BASE, tenant="acme", api_key=f"key-{os.getpid()}")
    barrier.wait(60)
    try:
        with j.claim("shared") as rec:
            results.put(("claimed", rec.idempotency_key if rec is not None else None))
            release.wait(60)
    except JournalBusyError:
        results.put(("busy", None))


def test_concurrent_claim_from_two_processes_exactly_one_wins(tmp_path: Path) -> None:
    make_journal(tmp_path).write(make_record("shared"))
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    release = ctx.Event()
    results = ctx.Queue()
    args = (str(tmp_path), barrier, release, results)
    procs = [ctx.Process(target=_claim_worker, args=args) for _ in range(2)]
    for proc in procs:
        proc.start()
    try:
        # The winner holds its claim until both answers are in, so the loser tried while it was held.
        got = sorted([results.get(timeout=60), results.get(timeout=60)])
    finally:
        release.set()
        for proc in procs:
            proc.join(60)
    assert got == [("busy", None), ("claimed", "key-shared")]
    assert all(proc.exitcode == 0 for proc in procs)


def test_exclusive_file_lock_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_locks, "_LOCK_BACKEND", "excl")
    j = make_journal(tmp_path)
    j.write(make_record("r1"))
    lock = j.directory / (journal_filename("r1") + ".lock")

    lock.write_text(f"{os.getppid()} 0\n", "ascii")  # held by a live process
    with pytest.raises(JournalBusyError), j.claim("r1"):
        pass

    dead = multiprocessing.get_context("spawn").Process(target=int)
    dead.start()
    dead.join(60)
    lock.write_text(f"{dead.pid} 0\n", "ascii")  # its holder died: stale
    with j.claim("r1") as rec:
        assert rec is not None
        assert lock.read_text("ascii").split()[0] == str(os.getpid())
    assert not lock.exists()


# ------------------------------------------------------------------------------ directories


def test_default_root_per_platform() -> None:
    root = journal_paths._platform_state_root
    assert root("linux", {"XDG_STATE_HOME": "/xdg"}, "/home/u") == Path("/xdg/runcycles/journal")
    assert root("linux", {"XDG_STATE_HOME": "relative"}, "/home/u") == Path(
        "/home/u/.local/state/runcycles/journal"
    )
    assert root("linux", {}, "/home/u") == Path("/home/u/.local/state/runcycles/journal")
    assert root("darwin", {}, "/Users/u") == Path("/Users/u/Library/Application Support/runcycles/journal")
    assert root("win32", {"LOCALAPPDATA": "C:/Users/u/AppData/Local"}, "C:/Users/u") == Path(
        "C:/Users/u/AppData/Local/runcycles/journal"
    )


def test_default_directory_uses_xdg_state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    j = make_journal_default()
    assert j.directory == tmp_path / "state" / "runcycles" / "journal" / j.fingerprint
    j.write(make_record("r1"))
    assert j.path_for("r1").is_file()


def make_journal_default() -> Journal:
    return Journal(None, base_url=BASE, tenant="acme", api_key=SECRET)


def test_unwritable_default_falls_back_to_temp_dir_and_warns_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "home-is-a-file"
    blocker.write_text("not a directory", "utf-8")
    monkeypatch.setenv("XDG_STATE_HOME", str(blocker / "state"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(journal_paths, "_fallback_warned", False)

    with caplog.at_level(logging.WARNING, logger="runcycles.journal"):
        first = make_journal_default()
        first.write(make_record("r1"))
        second = make_journal_default()
        assert [r.reservation_id for r in second.load().records] == ["r1"]

    expected = tmp_path / "tmp" / f"runcycles-{os.getuid()}" / "journal" / first.fingerprint
    assert first.directory == second.directory == expected
    assert stat.S_IMODE((tmp_path / "tmp" / f"runcycles-{os.getuid()}").stat().st_mode) == 0o700
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "not writable" in r.getMessage()
    ]
    assert len(warnings) == 1
    assert str(blocker / "state") in warnings[0].getMessage()


def test_explicit_unusable_root_raises_journal_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x", "utf-8")
    j = make_journal(blocker / "journal")
    with pytest.raises(JournalError):
        j.write(make_record("r1"))
    with pytest.raises(JournalError):
        j.load()
    with pytest.raises(JournalError), j.claim("r1"):
        pass


def test_unserializable_body_raises_journal_error(tmp_path: Path) -> None:
    j = make_journal(tmp_path)
    with pytest.raises(JournalError, match="not JSON"):
        j.write(make_record("r1", commit_body={"idempotency_key": "k", "bad": object()}))
    assert entries(j.directory) == []


def test_unreadable_entry_does_not_stop_the_others(tmp_path: Path) -> None:
    j = make_journal(tmp_path)
    j.write(make_record("r1"))
    (j.directory / "odd.json").mkdir()
    result = j.load()
    assert [r.reservation_id for r in result.records] == ["r1"]
    assert result.quarantined == []
    assert (j.directory / "odd.json").is_dir()
