"""Constructing a client is pure: no file I/O, no thread. Replay happens on first need or when asked.

A client's journal partition may hold records of an earlier process. They are resumed on the client's first
guarded call (``with_cycles`` / ``reserve_for_stream``) or by ``replay_journal()``, never by the constructor.
"""

# ruff: noqa: F811
from __future__ import annotations

import builtins
import io
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from faults import AsyncFaultyTransport
from fixtures_local import TENANT, USD, Harness, harness, mode, uvicorn_switch  # noqa: F401

from runcycles import AsyncCyclesClient, CyclesClient, CyclesConfig, reserve_for_stream, with_cycles
from runcycles._journal import Journal, JournalRecord
from runcycles._journal.spares import pool_for

ACTUAL = 40


class Forbidden(AssertionError):
    pass


def _forbid(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every file-system listing, file open and thread start fail (and note it)."""
    calls: list[str] = []

    def refuse(name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            raise Forbidden(f"{name} during construction")

        return call

    for module, name in ((os, "scandir"), (os, "listdir"), (os, "open"), (os, "mkdir"), (builtins, "open")):
        monkeypatch.setattr(module, name, refuse(f"{module.__name__}.{name}"))
    monkeypatch.setattr(io, "open", refuse("io.open"))
    monkeypatch.setattr(threading.Thread, "start", refuse("Thread.start"))
    return calls


def _config_with_stored_record(tmp_path: Path) -> CyclesConfig:
    """A config whose journal partition already holds a record (what an earlier process left)."""
    config = CyclesConfig(
        base_url="http://cycles.local", api_key="k", tenant=TENANT, journal_dir=str(tmp_path / "journal")
    )
    journal = Journal(config.journal_dir, base_url=config.base_url, tenant=config.tenant, api_key=config.api_key)
    journal.write(_record("r-stored", base_url=config.base_url))
    # The journal's background refill of spare files may still be running: let it finish (a refill asked for
    # later finds the pool full and touches no file), so that only the clients are watched below.
    pool_for(journal.directory).refill()
    return config


def _record(rid: str, *, base_url: str) -> JournalRecord:
    key = str(uuid.uuid4())
    return JournalRecord(
        reservation_id=rid,
        idempotency_key=key,
        commit_body={"idempotency_key": key, "actual": {"unit": USD, "amount": ACTUAL}},
        base_url=base_url,
    )


@pytest.mark.parametrize("given_transport", [False, True], ids=["default_transport", "given_transport"])
def test_constructing_either_client_reads_no_file_and_starts_no_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given_transport: bool
) -> None:
    config = _config_with_stored_record(tmp_path)
    sync_transport = httpx.MockTransport(lambda request: httpx.Response(500)) if given_transport else None
    async_transport = httpx.MockTransport(lambda request: httpx.Response(500)) if given_transport else None
    threads = threading.active_count()
    calls = _forbid(monkeypatch)
    sync_client = CyclesClient(config, transport=sync_transport)
    async_client = AsyncCyclesClient(config, transport=async_transport)
    assert calls == []
    assert sync_client.pending_settlements == 0 and async_client.pending_settlements == 0
    monkeypatch.undo()
    assert threading.active_count() == threads
    assert not sync_client._worker.started and not async_client._worker.started
    sync_client.close()


def test_the_forbidding_patch_catches_what_a_replay_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Guards the test above against passing vacuously: replaying this journal trips the patch.
    transport = httpx.MockTransport(lambda request: httpx.Response(500))
    client = CyclesClient(_config_with_stored_record(tmp_path), transport=transport)
    calls = _forbid(monkeypatch)
    with pytest.raises(Forbidden):
        client.replay_journal()
    assert calls
    monkeypatch.undo()
    client.close()


# --------------------------------------------------------------------------- replay still happens


def _leave_a_record(harness: Harness) -> str:
    """What a process that died mid-settlement leaves: a live reservation and its journaled commit."""
    previous, _ = harness.sync_client(journal_enabled=False)
    response = previous.create_reservation(
        {
            "idempotency_key": str(uuid.uuid4()),
            "subject": {"tenant": TENANT},
            "action": {"kind": "llm.completion", "name": "test"},
            "estimate": {"unit": USD, "amount": 100},
            "ttl_ms": 60_000,
        }
    )
    assert response.status == 200, response.body
    rid: str = response.body["reservation_id"]
    config = harness.config()
    journal = Journal(config.journal_dir, base_url=config.base_url, tenant=config.tenant, api_key=config.api_key)
    journal.write(_record(rid, base_url=config.base_url))
    return rid


def _stored(harness: Harness) -> list[str]:
    config = harness.config()
    journal = Journal(config.journal_dir, base_url=config.base_url, tenant=config.tenant, api_key=config.api_key)
    return [record.reservation_id for record in journal.load().records]


def test_sync_client_replays_on_its_first_guarded_call_once(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    rid = _leave_a_record(harness)
    client, faults = harness.sync_client()
    assert faults.ops() == [] and _stored(harness) == [rid] and not client._worker.started

    @with_cycles(estimate=100, actual=7, client=client)
    def work() -> str:
        return "done"

    assert work() == "done"
    assert client.flush(10_000) == 0
    assert _stored(harness) == []
    harness.assert_ledger(spent=ACTUAL + 7)
    monkeypatch.setattr(os, "scandir", lambda *a: pytest.fail("the journal is scanned once per client"))
    assert work() == "done"
    harness.assert_ledger(spent=ACTUAL + 14)


def test_sync_stream_is_a_first_need_too(harness: Harness) -> None:
    rid = _leave_a_record(harness)
    client, _ = harness.sync_client()
    assert _stored(harness) == [rid]
    with reserve_for_stream(client=client, estimate=100) as stream:
        stream.actual = 3
    assert client.flush(10_000) == 0
    assert _stored(harness) == []
    harness.assert_ledger(spent=ACTUAL + 3)


def test_replay_journal_resumes_without_a_guarded_call(harness: Harness) -> None:
    rid = _leave_a_record(harness)
    client, faults = harness.sync_client()
    assert _stored(harness) == [rid]
    assert client.replay_journal() == 1
    assert client.flush(10_000) == 0
    assert _stored(harness) == [] and faults.ops() == ["commit"]
    harness.assert_ledger(spent=ACTUAL)


def _async_client(harness: Harness) -> tuple[AsyncCyclesClient, AsyncFaultyTransport]:
    """An async client whose worker (where replays run) has a transport of its own loop."""
    inner: httpx.AsyncBaseTransport = httpx.AsyncHTTPTransport() if harness.http else harness.server.async_transport()
    faults = AsyncFaultyTransport(inner)
    worker_transport = httpx.AsyncHTTPTransport if harness.http else harness.server.async_transport
    return AsyncCyclesClient(harness.config(), transport=faults, background_transport=worker_transport), faults


@pytest.mark.anyio
async def test_async_client_replays_on_its_first_guarded_call(harness: Harness) -> None:
    rid = _leave_a_record(harness)
    client, faults = _async_client(harness)
    async with client:
        assert faults.ops() == [] and _stored(harness) == [rid] and not client._worker.started

        @with_cycles(estimate=100, actual=7, client=client)
        async def work() -> str:
            return "done"

        assert await work() == "done"
        assert await client.flush(10_000) == 0
        assert _stored(harness) == []
    harness.assert_ledger(spent=ACTUAL + 7)


@pytest.mark.anyio
async def test_async_replay_journal_resumes_without_a_guarded_call(harness: Harness) -> None:
    rid = _leave_a_record(harness)
    client, _ = _async_client(harness)
    async with client:
        assert _stored(harness) == [rid]
        assert await client.replay_journal() == 1
        assert await client.flush(10_000) == 0
        assert _stored(harness) == []
    harness.assert_ledger(spent=ACTUAL)


def test_flush_of_a_client_that_never_replayed_settles_what_an_earlier_process_left(harness: Harness) -> None:
    rid = _leave_a_record(harness)
    client, faults = harness.sync_client()
    assert _stored(harness) == [rid]
    assert client.flush(10_000) == 0  # a restarted service's shutdown flush, with no guarded call before it
    assert _stored(harness) == [] and faults.ops() == ["commit"]
    harness.assert_ledger(spent=ACTUAL)
    assert client.replay_journal() == 0  # nothing left to resume


@pytest.mark.anyio
async def test_async_flush_of_a_client_that_never_replayed_settles_the_earlier_records(harness: Harness) -> None:
    rid = _leave_a_record(harness)
    client, _ = _async_client(harness)
    async with client:
        assert _stored(harness) == [rid]
        assert await client.flush(10_000) == 0
        assert _stored(harness) == []
    harness.assert_ledger(spent=ACTUAL)


def test_flush_with_the_journal_off_reads_no_file(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    client, _ = harness.sync_client(journal_enabled=False)
    monkeypatch.setattr(os, "scandir", lambda *a: pytest.fail("no journal to scan"))
    assert client.flush(1_000) == 0
