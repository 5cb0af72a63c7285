"""Journaled settlements older than ``replay_verify_after_ms`` are verified before anything is resent.

A server keeps idempotency keys for a limited time (the reference server: events, 7 days), so resending an
old event blind could charge it twice. Against the embedded server (in process and over HTTP): an old record
whose reservation is committed is settled without a request; an old commit of a still-active reservation is
committed; anything else is quarantined and reported, never resent; an unverifiable one is kept.
"""

# ruff: noqa: F811
from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import attrs
import httpx
import pytest
from faults import AsyncFaultyTransport
from fixtures_local import TENANT, USD, Harness, harness, mode, uvicorn_switch  # noqa: F401

from runcycles import AsyncCyclesClient, CyclesClient
from runcycles._journal import JournalRecord

DAY_MS = 86_400_000
TTL_MS = 60_000
ACTUAL = 40


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def reserve(client: CyclesClient) -> str:
    response = client.create_reservation(
        {
            "idempotency_key": str(uuid.uuid4()),
            "subject": {"tenant": TENANT},
            "action": {"kind": "llm.completion", "name": "test"},
            "estimate": {"unit": USD, "amount": 100},
            "ttl_ms": TTL_MS,
            "grace_period_ms": 0,
        }
    )
    assert response.status == 200, response.body
    rid = response.body["reservation_id"]
    assert isinstance(rid, str)
    return rid


def record(harness: Harness, rid: str, *, mode: str, age_ms: int, key: str | None = None) -> JournalRecord:
    key = key or str(uuid.uuid4())
    actual = {"unit": USD, "amount": ACTUAL}
    return JournalRecord(
        reservation_id=rid,
        mode=mode,  # type: ignore[arg-type]
        idempotency_key=key,
        commit_body={"idempotency_key": key, "actual": actual},
        event_body={
            "idempotency_key": key,
            "subject": {"tenant": TENANT},
            "action": {"kind": "llm.completion", "name": "test"},
            "actual": actual,
            "metadata": {"recovered_reservation_id": rid, "recovery_reason": "commit_after_reservation_expired"},
        },
        base_url=harness.base_url,
        recorded_at_ms=wall_ms() - age_ms,
    )


def replay(client: CyclesClient, journaled: JournalRecord) -> None:
    client._journal_owner.journal.write(journaled)
    assert client.replay_journal() == 1
    assert client.flush(10_000) == 0


def journal_dir(client: CyclesClient) -> Path:
    return client._journal_owner.journal.directory


def quarantined(client: CyclesClient) -> list[str]:
    directory = journal_dir(client) / "quarantine"
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def records(client: CyclesClient) -> list[JournalRecord]:
    return client._journal_owner.journal.load().records


def expire(harness: Harness) -> None:
    harness.clock.advance(TTL_MS + 1)


@pytest.mark.parametrize("record_mode", ["event", "commit"])
def test_old_record_of_an_expired_reservation_is_quarantined_not_resent(
    harness: Harness, record_mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    client, faults = harness.sync_client()
    rid = reserve(client)
    expire(harness)
    faults.clear_log()
    replay(client, record(harness, rid, mode=record_mode, age_ms=7 * DAY_MS))
    assert faults.ops() == ["get"]  # verified; no commit, no event
    assert records(client) == []
    (name,) = quarantined(client)
    assert ".unsettled-" in name
    reports = [r for r in caplog.records if r.levelno == logging.ERROR and rid in r.getMessage()]
    assert reports and "quarantined" in reports[0].getMessage() and "expired" in reports[0].getMessage().lower()
    harness.assert_ledger(spent=0)


@pytest.mark.parametrize("record_mode", ["event", "commit"])
def test_old_record_of_a_committed_reservation_is_settled_without_resending(
    harness: Harness, record_mode: str
) -> None:
    client, faults = harness.sync_client()
    rid = reserve(client)
    key = str(uuid.uuid4())
    committed = client.commit_reservation(rid, {"idempotency_key": key, "actual": {"unit": USD, "amount": ACTUAL}})
    assert committed.status == 200
    faults.clear_log()
    replay(client, record(harness, rid, mode=record_mode, age_ms=30 * DAY_MS, key=key))
    assert faults.ops() == ["get"]
    assert records(client) == [] and quarantined(client) == []
    harness.assert_ledger(spent=ACTUAL)


def test_old_commit_of_an_active_reservation_is_committed(harness: Harness) -> None:
    client, faults = harness.sync_client()
    rid = reserve(client)
    faults.clear_log()
    replay(client, record(harness, rid, mode="commit", age_ms=7 * DAY_MS))
    assert faults.ops() == ["get", "commit"]
    assert records(client) == [] and quarantined(client) == []
    harness.assert_ledger(spent=ACTUAL)


def test_young_event_record_is_resent_as_before(harness: Harness) -> None:
    client, faults = harness.sync_client()
    rid = reserve(client)
    expire(harness)
    faults.clear_log()
    replay(client, record(harness, rid, mode="event", age_ms=5 * DAY_MS))
    assert faults.ops() == ["event"]
    assert records(client) == [] and quarantined(client) == []
    harness.assert_ledger(spent=ACTUAL)


def test_the_window_is_configurable(harness: Harness) -> None:
    client, faults = harness.sync_client(replay_verify_after_ms=60_000)
    rid = reserve(client)
    expire(harness)
    faults.clear_log()
    replay(client, record(harness, rid, mode="event", age_ms=120_000))
    assert faults.ops() == ["get"] and len(quarantined(client)) == 1
    harness.assert_ledger(spent=0)


def test_unverifiable_old_record_is_kept_for_a_later_replay(harness: Harness) -> None:
    client, faults = harness.sync_client(retry_max_attempts=1)
    rid = reserve(client)
    faults.on("get", times=None).connect_error()
    faults.clear_log()
    replay(client, record(harness, rid, mode="event", age_ms=7 * DAY_MS))
    assert faults.ops() == ["get", "get"]  # the first try and one retry
    assert [r.reservation_id for r in records(client)] == [rid] and quarantined(client) == []


@pytest.mark.anyio
async def test_async_old_event_record_is_quarantined(harness: Harness) -> None:
    def transport() -> httpx.AsyncBaseTransport:
        return httpx.AsyncHTTPTransport() if harness.http else harness.server.async_transport()

    background = AsyncFaultyTransport(transport())
    client = AsyncCyclesClient(harness.config(), transport=transport(), background_transport=lambda: background)
    async with client:
        response = await client.create_reservation(
            {
                "idempotency_key": str(uuid.uuid4()),
                "subject": {"tenant": TENANT},
                "action": {"kind": "llm.completion", "name": "test"},
                "estimate": {"unit": USD, "amount": 100},
                "ttl_ms": TTL_MS,
                "grace_period_ms": 0,
            }
        )
        rid = response.body["reservation_id"]
        expire(harness)
        journal = client._journal_owner.journal
        await anyio.to_thread.run_sync(journal.write, record(harness, rid, mode="event", age_ms=7 * DAY_MS))
        assert await client.replay_journal() == 1
        assert await client.flush(10_000) == 0
        assert background.ops() == ["get"]
        assert journal.load().records == []
        assert len(list((journal.directory / "quarantine").iterdir())) == 1
    harness.assert_ledger(spent=0)


def test_rewrites_keep_the_first_journaling_time_and_an_event_switch_restarts_it(harness: Harness) -> None:
    client, _ = harness.sync_client()
    runtime = client._journal_owner
    clock = {"now": 1_000}
    runtime.wall = lambda: clock["now"]
    body: dict[str, Any] = {"idempotency_key": "k", "actual": {"unit": USD, "amount": ACTUAL}}
    pending = JournalRecord(reservation_id="r-age", idempotency_key="k", commit_body=body, event_body=body)
    runtime.journal_write(pending)
    clock["now"] = 5_000
    runtime.journal_write(attrs.evolve(pending, attempts=1, not_before_ms=9_000))
    assert records(client)[0].recorded_at_ms == 1_000  # a 429 rewrite does not make the record look young
    clock["now"] = 8_000
    runtime.journal_write(attrs.evolve(pending, mode="event"))
    assert records(client)[0].recorded_at_ms == 8_000  # the event's idempotency clock starts at the switch
    runtime.release_claim("r-age")
