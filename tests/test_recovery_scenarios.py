"""The client recovery profile (``cycles-sdk-recovery`` v0.3, durable claim), one or more tests per scenario.

Every test runs against the embedded server with HTTP-layer fault injection (tests/faults.py) and asserts the
scenario's request choreography from the request log and its outcome from the ledger itself. Restart
scenarios build a fresh client from durable state only (the shared SQLite ledger file and the journal
directory); CR-DURABLE-001/002/003 kill a real child process with SIGKILL while a request is parked inside
its transport, CR-DURABLE-006 replays from two independently constructed OS processes synchronized by a
``multiprocessing.Barrier``. scripts/recovery_conformance_adapter.py maps scenario ids to these tests.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import re
import shutil
import signal
from pathlib import Path
from typing import Any

import anyio
import pytest
from faults import AsyncFaultyTransport, FaultPlan, FaultyTransport
from recovery_helpers import (
    ACTUAL,
    BASE_URL,
    ESTIMATE,
    TENANT,
    USD,
    ClientSpec,
    World,
    build_client,
    guarded_call,
    iter_files,
    make_world,
    read_log,
    rotate_key,
    run_child,
    run_replay_worker,
    sequence,
    settlement_requests,
    wall_ms,
)

from runcycles import (
    AsyncCyclesClient,
    CyclesClient,
    HeartbeatEvent,
    MissingActualError,
    get_cycles_context,
    reserve_for_stream,
    with_cycles,
)
from runcycles._journal import Journal, journal_filename, journal_fingerprint

pytestmark = pytest.mark.timeout(120)

SPAWN = multiprocessing.get_context("spawn")
HOUR_MS = 3_600_000
WAIT_S = 30.0


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path / "world")


# What a commit answers (when the fault layer answers in the server's stead, it starts from this).
_COMMITTED = {"status": "COMMITTED", "charged": {"unit": USD, "amount": ACTUAL}}


def _drop(field: str) -> Any:
    return lambda real: {k: v for k, v in (real or _COMMITTED).items() if k != field}


def _with(field: str, value: Any) -> Any:
    return lambda real: {**(real or _COMMITTED), field: value}


def _rid_of(entry: dict[str, Any]) -> str:
    return str(entry["path"].split("/")[3])


def _assert_ledger(world: World, *, spent: int, reserved: int = 0) -> None:
    budget = world.budget()
    assert (budget["spent"], budget["reserved"]) == (spent, reserved), budget
    assert budget["remaining"] == budget["allocated"] - spent - reserved - budget["debt"]


def _assert_committed_once(world: World, rid: str, actual: int = ACTUAL) -> None:
    status, detail = world.reservation(rid)
    assert status == 200 and detail["status"] == "COMMITTED", detail
    assert detail["committed"]["amount"] == actual
    _assert_ledger(world, spent=actual)


# --------------------------------------------------------------------------- child processes


def _start(spec: ClientSpec, *, call: bool = True, not_before: bool = False) -> tuple[Any, Any]:
    """A child running `run_child`; returns (process, the event it sets when parked / when the 429 floor is
    journaled)."""
    signal_event = SPAWN.Event()
    args = (spec, None, call, signal_event) if not_before else (spec, signal_event, call, None)
    proc = SPAWN.Process(target=run_child, args=args, daemon=True)
    proc.start()
    return proc, signal_event


def _wait_then_kill(proc: Any, event: Any) -> None:
    try:
        assert event.wait(WAIT_S), "the child never reached the kill point"
    finally:
        proc.kill()
        proc.join(WAIT_S)
    assert proc.exitcode == -signal.SIGKILL


def _killed_in_first_commit(world: World, log: Path, *, applied: bool = False) -> dict[str, Any]:
    """Run a guarded call in a child and SIGKILL it while its first commit is in flight; returns that commit."""
    proc, parked = _start(ClientSpec(world=world, log_path=str(log), gate=("commit", applied)))
    _wait_then_kill(proc, parked)
    entries = read_log(log)
    assert sequence(entries) == ["create", "commit"]
    commit = entries[1]
    assert "status" not in commit and "error" not in commit  # the response never arrived
    return commit


def _the_record(world: World) -> dict[str, Any]:
    records = world.journal_records()
    assert len(records) == 1, records
    return records[0]


# --------------------------------------------------------------------------- CR-CORE-001


@pytest.mark.parametrize("fault", ["lost_response", "reset", "truncated"])
def test_cr_core_001_lost_commit_response_reuses_same_key(world: World, fault: str) -> None:
    """The server applied the commit, the answer was lost: the retry carries the identical key and body and
    the idempotent replay settles it — spent exactly once."""
    with build_client(ClientSpec(world=world)) as built:
        getattr(built.faults.on("commit"), fault)()
        rid = guarded_call(built.client)
        assert built.client.flush(10_000) == 0
        assert built.faults.sequence() == ["create", "commit", "commit_same_key"]
        first, retry = built.faults.entries("commit")
    assert first.forwarded and first.fault is not None and first.status in (None, 200)
    assert retry.fault is None and retry.status == 200
    assert retry.headers["x-idempotency-key"] == first.headers["x-idempotency-key"] == first.body["idempotency_key"]
    assert retry.body == first.body and retry.path == first.path == f"/v1/reservations/{rid}/commit"
    assert world.journal_files() == []
    _assert_committed_once(world, rid)


@pytest.mark.anyio
async def test_cr_core_001_lost_commit_response_async_client(world: World) -> None:
    server = world.server()
    faults = AsyncFaultyTransport(server.async_transport())
    faults.on("commit").lost_response()
    rids: list[str] = []
    try:
        async with AsyncCyclesClient(world.config(), transport=faults) as client:

            @with_cycles(estimate=ESTIMATE, actual=ACTUAL, client=client)
            async def work() -> str:
                ctx = get_cycles_context()
                assert ctx is not None
                rids.append(ctx.reservation_id)
                return "ok"

            assert await work() == "ok"
            assert await client.flush(10_000) == 0
    finally:
        server.close()
    assert faults.sequence() == ["create", "commit", "commit_same_key"]
    first, retry = faults.entries("commit")
    assert retry.idempotency_key == first.idempotency_key and retry.body == first.body and retry.status == 200
    assert world.journal_files() == []
    _assert_committed_once(world, rids[0])


# --------------------------------------------------------------------------- CR-CORE-002


def _assert_event_carries_original(faults: FaultPlan, rid: str) -> None:
    (create,) = faults.entries("create")
    (commit,) = faults.entries("commit")
    (event,) = faults.entries("event")
    assert event.idempotency_key == commit.idempotency_key
    assert event.body["subject"] == create.body["subject"] == {"tenant": TENANT}
    assert event.body["action"] == create.body["action"]
    assert event.body["actual"] == commit.body["actual"] == {"unit": USD, "amount": ACTUAL}
    assert event.body["metrics"] == commit.body["metrics"]
    assert event.body["metadata"]["recovered_reservation_id"] == rid
    assert event.status == 201


def test_cr_core_002_expired_commit_falls_back_to_event(world: World) -> None:
    """The reservation really expired on the server (its clock jumps past TTL + grace while the work runs):
    the commit's 410 becomes an event with the same key and the original subject, action and actual."""
    with build_client(ClientSpec(world=world)) as built:

        @with_cycles(estimate=ESTIMATE, actual=ACTUAL, client=built.client, action_kind="llm.completion",
                     action_name="expiring")
        def work() -> str:
            ctx = get_cycles_context()
            assert ctx is not None
            built.clock.offset_ms += HOUR_MS
            return ctx.reservation_id

        rid = work()
        assert built.client.flush(10_000) == 0
        assert built.faults.sequence() == ["create", "commit", "event_same_key"]
        assert built.faults.entries("commit")[0].status == 410
        _assert_event_carries_original(built.faults, rid)
        status, _ = world.reservation(rid, clock_offset_ms=built.clock.offset_ms)
    assert status == 410  # expired: the hold went back, the spend came in once, as the event
    assert world.journal_files() == []
    _assert_ledger(world, spent=ACTUAL)


def test_cr_core_002_injected_410_falls_back_to_event(world: World) -> None:
    with build_client(ClientSpec(world=world)) as built:
        built.faults.on("commit").expired()
        rid = guarded_call(built.client)
        assert built.client.flush(10_000) == 0
        assert built.faults.sequence() == ["create", "commit", "event_same_key"]
        _assert_event_carries_original(built.faults, rid)
    assert world.journal_files() == []
    # The event holds the spend; the (still live) reservation keeps its hold until it expires.
    _assert_ledger(world, spent=ACTUAL, reserved=ESTIMATE)


# --------------------------------------------------------------------------- CR-CORE-003


def _extended_once(faults: FaultPlan) -> bool:
    extends = faults.entries("extend")
    return len(extends) >= 2 and extends[-1].status == 200


def test_cr_core_003_heartbeat_transport_error_is_reported_and_non_fatal(world: World) -> None:
    """An extend raises a connect error: the report names the reservation and "retrying", the extend is
    retried with the same key, the work goes on and its spend is committed."""
    events: list[HeartbeatEvent] = []
    server = world.server()
    faults = FaultyTransport(server.transport())
    faults.on("extend").connect_error()
    client = CyclesClient(world.config(), transport=faults, on_heartbeat_failure=events.append)
    try:
        ran: list[str] = []

        @with_cycles(estimate=ESTIMATE, actual=ACTUAL, ttl_ms=3000, client=client)
        def work() -> str:
            ctx = get_cycles_context()
            assert ctx is not None
            ran.append(ctx.reservation_id)
            faults.wait_for_sync(_extended_once, timeout=20)  # the work keeps running through the failure
            ran.append("finished")
            return ctx.reservation_id

        rid = work()
        assert client.flush(10_000) == 0
    finally:
        client.close()
        server.close()
    assert ran == [rid, "finished"]
    assert faults.sequence() == ["create", "extend", "extend_same_key", "commit"]
    first, second = faults.entries("extend")
    assert first.error == "ConnectError" and second.status == 200 and first.body == second.body
    assert [(e.reservation_id, e.disposition) for e in events] == [(rid, "retrying")]
    assert events[0].retry_in_ms is not None and events[0].retry_in_ms > 0
    _assert_committed_once(world, rid)


# --------------------------------------------------------------------------- CR-CORE-004

NONCONFORMANT = {
    "202_empty": (202, b""),
    "204_empty": (204, b""),
    "200_missing_charged": (200, _drop("charged")),
    "200_status_released": (200, _with("status", "RELEASED")),
    "200_not_json": (200, "<html>ok</html>"),
}


@pytest.mark.parametrize("applied", [True, False], ids=["applied", "not_applied"])
@pytest.mark.parametrize("case", sorted(NONCONFORMANT))
def test_cr_core_004_nonconformant_commit_success_is_ambiguous(world: World, case: str, applied: bool) -> None:
    """Only 200 + a valid CommitResponse ends a commit: anything else is retried with the original key."""
    code, payload = NONCONFORMANT[case]
    with build_client(ClientSpec(world=world)) as built:
        built.faults.on("commit").body(code, payload, forward=applied)
        rid = guarded_call(built.client)
        assert built.client.flush(10_000) == 0
        assert built.faults.sequence() == ["create", "commit", "commit_same_key"]
        first, retry = built.faults.entries("commit")
    assert first.status == code and retry.status == 200 and retry.fault is None
    assert retry.idempotency_key == first.idempotency_key and retry.body == first.body
    assert world.journal_files() == []
    _assert_committed_once(world, rid)


# --------------------------------------------------------------------------- CR-DURABLE-001


@pytest.mark.parametrize("applied", [False, True], ids=["in_flight", "applied_response_lost"])
def test_cr_durable_001_commit_journaled_before_it_leaves_and_replayed_after_kill(
    world: World, tmp_path: Path, applied: bool
) -> None:
    """SIGKILL while the first commit is inside the transport (before the server saw it, or after it applied
    it); a fresh client built from the journal and the ledger file replays it with the same key and body."""
    commit = _killed_in_first_commit(world, tmp_path / "child.log", applied=applied)
    rid = _rid_of(commit)
    # The record was durable before the commit left: it is on disk although the child died inside the commit.
    record = _the_record(world)
    assert record["reservation_id"] == rid and record["mode"] == "commit"
    assert record["idempotency_key"] == commit["key"] and record["commit_body"] == commit["body"]
    assert record["recorded_at_ms"] <= commit["wall_ms"]
    _assert_ledger(world, spent=ACTUAL if applied else 0, reserved=0 if applied else ESTIMATE)

    with build_client(ClientSpec(world=world)) as fresh:  # the restart: durable state only
        assert fresh.client.flush(10_000) == 0
        entries = fresh.recorder.entries
    assert sequence(entries, seen={commit["key"]}) == ["commit_same_key"]
    assert entries[0]["body"] == commit["body"] and entries[0]["path"] == commit["path"]
    assert entries[0]["status"] == 200
    assert world.journal_files() == []  # successful replay removes the record
    _assert_committed_once(world, rid)


def test_cr_durable_001_record_survives_restart_without_server(world: World, tmp_path: Path) -> None:
    """A restart that cannot reach the server keeps the record (retries exhausted); the next one settles it."""
    commit = _killed_in_first_commit(world, tmp_path / "child.log")
    before = _the_record(world)
    down = (("commit", "connect_error", (), None),)
    with build_client(ClientSpec(world=world, faults=down, config=(("retry_max_attempts", 2),))) as fresh:
        assert fresh.client.flush(10_000) == 0
        assert sequence(fresh.recorder.entries, seen={commit["key"]}) == ["commit_same_key"] * 3
    kept = _the_record(world)
    assert {k: v for k, v in kept.items() if k != "attempts"} == {k: v for k, v in before.items() if k != "attempts"}
    with build_client(ClientSpec(world=world)) as again:
        assert again.client.flush(10_000) == 0
        assert sequence(again.recorder.entries, seen={commit["key"]}) == ["commit_same_key"]
    assert world.journal_files() == []
    _assert_committed_once(world, _rid_of(commit))


# --------------------------------------------------------------------------- CR-DURABLE-002


@pytest.mark.parametrize("applied", [False, True], ids=["event_in_flight", "event_applied_response_lost"])
def test_cr_durable_002_replayed_expired_commit_switches_durably_to_event(
    world: World, tmp_path: Path, applied: bool
) -> None:
    """Restart 1 replays the commit and gets a genuine 410 (the reservation expired meanwhile): the record
    switches to event mode on disk before the event leaves; SIGKILL inside the event. Restart 2 sends the
    event (not the commit) with the same key, and success removes the record."""
    commit = _killed_in_first_commit(world, tmp_path / "first.log")
    rid, key = _rid_of(commit), commit["key"]

    second_log = tmp_path / "second.log"
    spec = ClientSpec(world=world, log_path=str(second_log), clock_offset_ms=HOUR_MS, gate=("event", applied))
    proc, parked = _start(spec, call=False)
    _wait_then_kill(proc, parked)
    second = read_log(second_log)
    assert sequence(second, seen={key}) == ["commit_same_key", "event_same_key"]
    replayed, event = second
    assert replayed["body"] == commit["body"] and replayed["status"] == 410
    assert "status" not in event and "error" not in event  # killed while the event was in flight
    record = _the_record(world)
    assert record["mode"] == "event" and record["idempotency_key"] == key  # persisted before the event left
    assert record["event_body"] == event["body"] and record["commit_body"] == commit["body"]
    assert event["body"]["subject"] == {"tenant": TENANT}
    assert event["body"]["action"] == {"kind": "llm.completion", "name": "recovery-test"}
    assert event["body"]["actual"] == commit["body"]["actual"]
    _assert_ledger(world, spent=ACTUAL if applied else 0)  # the expired hold went back

    with build_client(ClientSpec(world=world, clock_offset_ms=HOUR_MS)) as fresh:
        assert fresh.client.flush(10_000) == 0
        third = fresh.recorder.entries
    assert sequence(third, seen={key}) == ["event_same_key"]  # no commit after the durable switch
    assert third[0]["body"] == event["body"] and third[0]["status"] == 201
    assert world.journal_files() == []
    assert world.reservation(rid)[0] == 410
    _assert_ledger(world, spent=ACTUAL)


# --------------------------------------------------------------------------- CR-DURABLE-003


def test_cr_durable_003_rate_limit_floor_survives_restart(world: World, tmp_path: Path) -> None:
    """A 429 with Retry-After: 2 is journaled as an absolute not_before; the child is killed once that is on
    disk; the restarted client (started well before the floor) sends nothing before it, then commits."""
    log = tmp_path / "child.log"
    limited = (("commit", "rate_limited", (("retry_after", 2),), 1),)
    proc, journaled = _start(ClientSpec(world=world, log_path=str(log), faults=limited), not_before=True)
    _wait_then_kill(proc, journaled)
    first = read_log(log)
    assert sequence(first) == ["create", "commit"] and first[1]["status"] == 429
    record = _the_record(world)
    not_before = record["not_before_ms"]
    assert record["idempotency_key"] == first[1]["key"]
    assert first[1]["wall_ms"] + 2000 <= not_before <= wall_ms() + 2000  # absolute: the 429's time + 2 s

    restarted_at = wall_ms()
    assert restarted_at < not_before - 200, "the restart must happen before the floor for this test to mean much"
    with build_client(ClientSpec(world=world)) as fresh:
        assert fresh.client.flush(15_000) == 0
        entries = fresh.recorder.entries
    assert sequence(entries, seen={first[1]["key"]}) == ["commit_same_key"]
    (retry,) = entries
    assert retry["wall_ms"] >= not_before, (retry["wall_ms"], not_before)
    assert retry["body"] == first[1]["body"] and retry["status"] == 200
    assert world.journal_files() == []
    _assert_committed_once(world, _rid_of(first[1]))


# --------------------------------------------------------------------------- CR-DURABLE-004


def test_cr_durable_004_tenant_journal_survives_api_key_rotation(world: World, tmp_path: Path) -> None:
    """The record was written under key 1; the key is rotated (new key created, old one revoked); a fresh
    client with the new key and the same tenant finds the record in the same partition and replays it. The old
    key is stored nowhere on disk."""
    commit = _killed_in_first_commit(world, tmp_path / "child.log")
    (partition,) = world.partitions()
    rotated = rotate_key(world)
    assert rotated.key != world.key
    with world.server() as server, world.reader(server) as old:
        assert old.get(f"/v1/reservations/{_rid_of(commit)}").status_code == 401  # really rotated
    assert partition.name == journal_fingerprint(BASE_URL, tenant=TENANT, api_key=rotated.key)
    assert partition.name != journal_fingerprint(BASE_URL, tenant=None, api_key=world.key)  # not keyed by the key

    with build_client(ClientSpec(world=rotated)) as fresh:
        assert fresh.client.flush(10_000) == 0
        entries = fresh.recorder.entries
    assert sequence(entries, seen={commit["key"]}) == ["commit_same_key"]
    assert entries[0]["status"] == 200 and entries[0]["body"] == commit["body"]
    assert world.partitions() == [partition]
    assert world.journal_files() == []
    _assert_committed_once(rotated, _rid_of(commit))
    for secret in (world.key, rotated.key):
        for path in iter_files(tmp_path):
            assert secret.encode() not in path.read_bytes(), path


# --------------------------------------------------------------------------- CR-DURABLE-005


def _retained_record(world: World) -> tuple[str, str]:
    """A guarded call whose commit never got through (retries off): its record is retained on disk."""
    down = (("commit", "connect_error", (), None),)
    with build_client(ClientSpec(world=world, faults=down, config=(("retry_enabled", False),))) as built:
        rid = guarded_call(built.client)
        (commit,) = built.faults.entries("commit")
    record = _the_record(world)
    assert record["reservation_id"] == rid
    return rid, str(commit.idempotency_key)


def test_cr_durable_005_corrupt_and_unsupported_records_are_quarantined(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    rid, key = _retained_record(world)
    (partition,) = world.partitions()
    corrupt = partition / journal_filename("rsv-corrupt")
    corrupt_bytes = b'{"version": 2, "reservation_id": "rsv-corrupt", "commit_bo'
    corrupt.write_bytes(corrupt_bytes)
    future = partition / journal_filename("rsv-future")
    valid = json.loads((partition / journal_filename(rid)).read_text())
    future_bytes = json.dumps({**valid, "reservation_id": "rsv-future", "version": 99}).encode()
    future.write_bytes(future_bytes)

    caplog.set_level(logging.ERROR, logger="runcycles.journal")
    with build_client(ClientSpec(world=world)) as fresh:
        assert fresh.client.flush(10_000) == 0
        entries = fresh.recorder.entries
    # Expected requests for the bad records: none. The valid record still replays.
    assert sequence(entries, seen={key}) == ["commit_same_key"]
    assert _rid_of(entries[0]) == rid and entries[0]["status"] == 200
    assert not corrupt.exists() and not future.exists()
    moved = sorted((partition / "quarantine").iterdir())
    assert [p.name.split(".corrupt-")[0] for p in moved] == sorted([corrupt.name, future.name])
    assert sorted(p.read_bytes() for p in moved) == sorted([corrupt_bytes, future_bytes])  # kept for forensics
    reports = [r for r in caplog.records if r.name == "runcycles.journal" and r.levelno == logging.ERROR]
    text = "\n".join(r.getMessage() for r in reports)
    assert corrupt.name in text and "not valid JSON" in text
    assert future.name in text and "unsupported record version 99" in text
    assert world.journal_files() == []
    _assert_committed_once(world, rid)


# --------------------------------------------------------------------------- CR-DURABLE-006


def _collect(queue: Any, messages: list[tuple[str, int, int]], kind: str, count: int) -> list[tuple[str, int, int]]:
    """Read the workers' reports into ``messages`` until ``count`` of ``kind`` arrived; returns those."""
    while sum(1 for m in messages if m[0] == kind) < count:
        messages.append(queue.get(timeout=WAIT_S))
    return [m for m in messages if m[0] == kind]


def _join_all(procs: list[Any]) -> None:
    for proc in procs:
        proc.join(WAIT_S)
        if proc.exitcode is None:
            proc.kill()
            proc.join(WAIT_S)
    assert [p.exitcode for p in procs] == [0, 0]


def test_cr_durable_006_concurrent_replay_from_two_processes_settles_once(world: World, tmp_path: Path) -> None:
    """Two independently constructed workers (OS processes, released together by a Barrier) replay the same
    journal: exactly one claims the record — the other finds it busy — and the commit is held until both have
    tried, so the overlap is real. One settlement, record removed."""
    commit = _killed_in_first_commit(world, tmp_path / "child.log")
    barrier, release, report = SPAWN.Barrier(2), SPAWN.Event(), SPAWN.Queue()
    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    procs = [
        SPAWN.Process(
            target=run_replay_worker,
            args=(ClientSpec(world=world, log_path=str(log), gate=("commit", False)), barrier, None, release, report),
            daemon=True,
        )
        for log in logs
    ]
    for proc in procs:
        proc.start()
    messages: list[tuple[str, int, int]] = []
    try:
        constructed = _collect(report, messages, "constructed", 2)
        assert sorted(pending for _, _, pending in constructed) == [0, 1]  # one took it, one found it busy
        release.set()
        done = _collect(report, messages, "done", 2)
    finally:
        release.set()
        _join_all(procs)
    assert all(kind == "done" and remaining == 0 for kind, _, remaining in done)
    commits = [e for log in logs for e in settlement_requests(read_log(log))]
    assert len(commits) == 1
    assert commits[0]["key"] == commit["key"] and commits[0]["body"] == commit["body"] and commits[0]["status"] == 200
    winner = next(pid for _, pid, pending in constructed if pending == 1)
    assert commits[0]["pid"] == winner
    assert world.journal_files() == []  # terminal record removed
    _assert_committed_once(world, _rid_of(commit))


def test_cr_durable_006_concurrent_commits_with_the_stored_key_settle_once(world: World, tmp_path: Path) -> None:
    """No shared lock at all (each worker has its own copy of the journal, as on two hosts): both workers send
    the stored commit at the same moment (a Barrier inside their transports). The stored key makes it safe:
    the server settles once, both records are removed."""
    commit = _killed_in_first_commit(world, tmp_path / "child.log")
    copy = tmp_path / "journal-copy"
    shutil.copytree(world.journal_dir, copy)
    start, together, report = SPAWN.Barrier(2), SPAWN.Barrier(2), SPAWN.Queue()
    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    specs = [
        ClientSpec(world=world, log_path=str(logs[0]), gate=("commit", False)),
        ClientSpec(world=world, log_path=str(logs[1]), gate=("commit", False), config=(("journal_dir", str(copy)),)),
    ]
    procs = [
        SPAWN.Process(target=run_replay_worker, args=(spec, start, None, together, report), daemon=True)
        for spec in specs
    ]
    for proc in procs:
        proc.start()
    messages: list[tuple[str, int, int]] = []
    try:
        constructed = _collect(report, messages, "constructed", 2)
        done = _collect(report, messages, "done", 2)
    finally:
        _join_all(procs)
    assert [pending for _, _, pending in constructed] == [1, 1]  # each worker resumed its copy
    assert [remaining for _, _, remaining in done] == [0, 0]
    commits = [e for log in logs for e in settlement_requests(read_log(log))]
    assert sequence(commits, seen={commit["key"]}) == ["commit_same_key", "commit_same_key"]
    assert {c["pid"] for c in commits} == {p.pid for p in procs}
    assert all(c["body"] == commit["body"] for c in commits)
    assert [c["status"] for c in commits] == [200, 200]  # one applied, the other the idempotent replay
    assert abs(commits[0]["wall_ms"] - commits[1]["wall_ms"]) < 5000
    assert world.journal_files() == [] and not list(copy.glob("*/*.json"))
    _assert_committed_once(world, _rid_of(commit))


# --------------------------------------------------------------------------- CR-DURABLE-007

_LEGACY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def _legacy_name(reservation_id: str) -> str:
    """The earlier clients' file name: unsafe characters replaced by ``_`` (so distinct ids can collide)."""
    return _LEGACY_UNSAFE.sub("_", reservation_id) + ".json"


def _legacy_v1(reservation_id: str, key: str, amount: int) -> dict[str, Any]:
    commit = {"idempotency_key": key, "actual": {"unit": USD, "amount": amount}}
    return {
        "version": 1,
        "reservation_id": reservation_id,
        "base_url": BASE_URL,
        "commit_body": commit,
        "event_fallback_body": {**commit, "subject": {"tenant": TENANT}, "action": {"kind": "k", "name": "n"}},
        "recorded_at_ms": 1,
        "not_before_ms": None,
    }


def _journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "j", base_url=BASE_URL, tenant=TENANT, api_key="not-used-with-a-tenant")


def _v2(reservation_id: str, key: str) -> Any:
    from runcycles._journal import JournalRecord

    return JournalRecord(
        reservation_id=reservation_id,
        idempotency_key=key,
        commit_body={"idempotency_key": key, "actual": {"unit": USD, "amount": 5}},
        base_url=BASE_URL,
    )


IDS = ["a/b", "a:b", "a_b", "a b", "A_B", "ünï/cødé", "..", "../escape", "x" * 300, "rsv\n1", "rsv\\1"]


def test_cr_durable_007_filenames_are_sha256_of_exact_utf8_id(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    for i, rid in enumerate(IDS):
        journal.write(_v2(rid, f"key-{i}"))
    names = sorted(p.name for p in journal.directory.glob("*.json"))
    expected = sorted(f"v2-{hashlib.sha256(rid.encode('utf-8')).hexdigest()}.json" for rid in IDS)
    assert names == expected and len(set(names)) == len(IDS)  # distinct ids never share a file
    assert all(journal_filename(rid) == journal.path_for(rid).name for rid in IDS)
    assert all(journal.path_for(rid).parent == journal.directory for rid in IDS)
    loaded = journal.load()
    assert sorted(r.reservation_id for r in loaded.records) == sorted(IDS) and loaded.quarantined == []
    # "a/b", "a:b" and "a b" collided under the legacy encoding; here each keeps its own key.
    keys = {r.reservation_id: r.idempotency_key for r in loaded.records}
    assert [keys[rid] for rid in IDS] == [f"key-{i}" for i in range(len(IDS))]


def test_cr_durable_007_legacy_migration_never_deletes_a_colliding_file(tmp_path: Path) -> None:
    """``a_b.json`` (legacy) holds "a/b"; "a:b" (same legacy name) has a standard record. Looking up or
    deleting "a:b" or "a_b" leaves the legacy file alone; migrating "a/b" moves it to its v2 name."""
    journal = _journal(tmp_path)
    directory = journal.directory
    legacy = directory / _legacy_name("a/b")
    assert legacy.name == _legacy_name("a:b") == _legacy_name("a_b") == "a_b.json"
    legacy_bytes = json.dumps(_legacy_v1("a/b", "key-slash", 7)).encode()
    legacy.write_bytes(legacy_bytes)
    journal.write(_v2("a:b", "key-colon"))

    colon = journal.migrate_legacy("a:b")
    assert colon is not None and colon.idempotency_key == "key-colon"
    assert journal.migrate_legacy("a_b") is None
    journal.delete("a_b")
    journal.delete("a:b")
    assert legacy.read_bytes() == legacy_bytes  # never deleted for another id

    migrated = journal.migrate_legacy("a/b")
    assert migrated is not None and migrated.reservation_id == "a/b" and migrated.idempotency_key == "key-slash"
    assert migrated.commit_body["actual"]["amount"] == 7
    assert not legacy.exists()
    stored = json.loads(journal.path_for("a/b").read_text())
    assert stored["version"] == 2 and stored["idempotency_key"] == "key-slash"


def test_cr_durable_007_load_migrates_legacy_beside_colliding_standard_record(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    (journal.directory / "c_d.json").write_text(json.dumps(_legacy_v1("c:d", "key-colon", 3)))
    journal.write(_v2("c/d", "key-slash"))
    loaded = journal.load()
    assert {r.reservation_id: r.idempotency_key for r in loaded.records} == {"c:d": "key-colon", "c/d": "key-slash"}
    assert sorted(p.name for p in journal.directory.glob("*.json")) == sorted(
        [journal_filename("c:d"), journal_filename("c/d")]
    )


def test_cr_durable_007_legacy_record_of_a_real_reservation_replays(world: World) -> None:
    """A v1 record under its legacy name (as an earlier client left it) is migrated and replayed with its key."""
    rid, key = _retained_record(world)
    (partition,) = world.partitions()
    standard = partition / journal_filename(rid)
    v2 = json.loads(standard.read_text())
    standard.unlink()
    legacy = partition / _legacy_name(rid)
    # Written when the spend was (a record days old would be verified with a GET first: test_replay_age).
    legacy.write_text(json.dumps({**_legacy_v1(rid, key, ACTUAL), "commit_body": v2["commit_body"],
                                  "event_fallback_body": v2["event_body"], "recorded_at_ms": v2["recorded_at_ms"]}))
    with build_client(ClientSpec(world=world)) as fresh:
        assert fresh.client.flush(10_000) == 0
        entries = fresh.recorder.entries
    assert sequence(entries, seen={key}) == ["commit_same_key"]
    assert entries[0]["body"] == v2["commit_body"] and entries[0]["status"] == 200
    assert not legacy.exists() and world.journal_files() == []
    _assert_committed_once(world, rid)


# --------------------------------------------------------------------------- CR-BOUNDARY-001


def test_cr_boundary_001_missing_actual_is_rejected_before_any_request(world: World) -> None:
    """No actual and no estimate fallback: a configuration error at decoration time — nothing is reserved,
    committed or journaled."""
    with build_client(ClientSpec(world=world)) as built:
        with pytest.raises(ValueError, match="actual"):
            with_cycles(estimate=ESTIMATE, use_estimate_if_actual_not_provided=False, client=built.client)
        assert built.recorder.entries == []
    assert world.journal_files() == []
    _assert_ledger(world, spent=0)


@pytest.mark.parametrize(
    "actual",
    [lambda r: r["cost"], lambda r: -5, lambda r: 1.5, lambda r: "640"],
    ids=["raises", "negative", "float", "str"],
)
def test_cr_boundary_001_actual_unknown_at_run_time_settles_nothing_and_raises(
    world: World, actual: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The guarded action returned, but its actual is unknown (the ``actual`` callable raised or gave no valid
    amount) and the estimate may not stand in: no commit, no event, no release (the lease expires on its own);
    `MissingActualError` reaches the caller, naming the reservation and carrying the result; ERROR logged."""
    with build_client(ClientSpec(world=world)) as built:

        @with_cycles(
            estimate=ESTIMATE, actual=actual, use_estimate_if_actual_not_provided=False, client=built.client
        )
        def work() -> dict[str, int]:
            return {"tokens": 12}

        with caplog.at_level(logging.ERROR, logger="runcycles"), pytest.raises(MissingActualError) as caught:
            work()
        assert built.client.flush(10_000) == 0
        assert built.faults.sequence() == ["create"]
    rid = caught.value.reservation_id
    assert rid and rid in str(caught.value) and caught.value.result == {"tokens": 12}
    assert any(rid in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    assert world.journal_files() == []
    status, detail = world.reservation(rid)
    assert status == 200 and detail["status"] == "ACTIVE"  # neither committed nor released
    _assert_ledger(world, spent=0, reserved=ESTIMATE)


@pytest.mark.anyio
async def test_cr_boundary_001_stream_without_actual_settles_nothing_and_raises(world: World) -> None:
    """A stream with the fallback off, left normally with no ``actual`` and no commit: no settlement request,
    `MissingActualError` raised from the block's exit."""
    server = world.server()
    faults = AsyncFaultyTransport(server.async_transport())
    try:
        async with AsyncCyclesClient(world.config(), transport=faults) as client:
            with pytest.raises(MissingActualError) as caught:
                async with reserve_for_stream(
                    client=client, estimate=ESTIMATE, use_estimate_if_actual_not_provided=False
                ) as stream:
                    rid = stream.reservation_id
            assert stream.finalized and caught.value.reservation_id == rid
            # With an actual recorded, the same stream options commit it.
            async with reserve_for_stream(
                client=client, estimate=ESTIMATE, use_estimate_if_actual_not_provided=False
            ) as stream:
                stream.actual = ACTUAL
            assert await client.flush(10_000) == 0
    finally:
        server.close()
    assert faults.sequence() == ["create", "create", "commit"]
    _assert_ledger(world, spent=ACTUAL, reserved=ESTIMATE)


class _ActionFailed(Exception):
    pass


def test_cr_boundary_001_guarded_failure_releases_and_surfaces(world: World) -> None:
    """The guarded action raises, so its actual is unknown: release, no commit or event, the exception
    reaches the caller."""
    with build_client(ClientSpec(world=world)) as built:
        rids: list[str] = []
        failure = _ActionFailed("provider call failed")

        @with_cycles(estimate=ESTIMATE, actual=ACTUAL, client=built.client)
        def work() -> str:
            ctx = get_cycles_context()
            assert ctx is not None
            rids.append(ctx.reservation_id)
            raise failure

        with pytest.raises(_ActionFailed) as caught:
            work()
        assert caught.value is failure
        assert built.client.flush(10_000) == 0
        assert built.faults.sequence() == ["create", "release"]
        assert built.faults.entries("release")[0].status == 200
    assert world.journal_files() == []
    status, detail = world.reservation(rids[0])
    assert status == 200 and detail["status"] == "RELEASED"
    _assert_ledger(world, spent=0)


@pytest.mark.anyio
async def test_cr_boundary_001_guarded_failure_async_client(world: World) -> None:
    server = world.server()
    faults = AsyncFaultyTransport(server.async_transport())
    try:
        async with AsyncCyclesClient(world.config(), transport=faults) as client:

            @with_cycles(estimate=ESTIMATE, actual=ACTUAL, client=client)
            async def work() -> str:
                await anyio.sleep(0)
                raise _ActionFailed("boom")

            with pytest.raises(_ActionFailed, match="boom"):
                await work()
            assert await client.flush(10_000) == 0
    finally:
        server.close()
    assert faults.sequence() == ["create", "release"]
    assert faults.count("commit") == 0 and faults.count("event") == 0
    assert world.journal_files() == []
    _assert_ledger(world, spent=0)

