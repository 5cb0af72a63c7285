# ruff: noqa: F811  (pytest fixtures imported from fixtures_local)
"""The fault matrix: create, commit and extend each meet connection errors, timeouts, lost responses, 5xx,
429 (with and without Retry-After), non-conformant 2xx, 410, 409 RESERVATION_FINALIZED and 401. Every case
asserts the exact request choreography (same idempotency key where the protocol requires it) and the ledger
the embedded server ends up with: the spend lands exactly once, or the function never ran.

Recovery catalogue scenarios: CR-CORE-001 (lost commit), CR-CORE-002 (expired commit -> event), CR-CORE-003
(heartbeat transport failure), CR-CORE-004 (non-conformant 2xx)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest
from faults import FaultPlan
from fixtures_local import Harness, harness, mode, uvicorn_switch  # noqa: F401

from runcycles import (
    CyclesProtocolError,
    CyclesTransportError,
    ErrorCode,
    HeartbeatEvent,
    ReservationExpiredError,
    ReservationFinalizedError,
    get_cycles_context,
    with_cycles,
)

pytestmark = pytest.mark.timeout(60)

INPROC = pytest.mark.parametrize("mode", ["inproc"])
ESTIMATE = 1000
ACTUAL = 640

Setup = Callable[[FaultPlan], Any]


def _drop(field: str) -> Callable[[Any], Any]:
    return lambda real: {k: v for k, v in real.items() if k != field}


def _with(field: str, value: Any) -> Callable[[Any], Any]:
    return lambda real: {**real, field: value}


# --------------------------------------------------------------------------- create

# Faults the one immediate same-key retry recovers from.
CREATE_RECOVERED: dict[str, Setup] = {
    "connect_error": lambda f: f.on("create").connect_error(),
    "read_timeout": lambda f: f.on("create").read_timeout(),
    "lost_response": lambda f: f.on("create").lost_response(),
    "reset": lambda f: f.on("create").reset(),
    "status_500": lambda f: f.on("create").status(500),
    "status_500_applied": lambda f: f.on("create").status(500, forward=True),
    "status_502": lambda f: f.on("create").status(502),
    "2xx_missing_decision": lambda f: f.on("create").body(200, _drop("decision")),
    "2xx_wrong_decision": lambda f: f.on("create").body(200, _with("decision", "WRONG")),
    "2xx_202": lambda f: f.on("create").body(202, b""),
    "truncated": lambda f: f.on("create").truncated(),
}


async def _guarded_async(client: Any, calls: list[str], **options: Any) -> Any:
    @with_cycles(estimate=ESTIMATE, actual=ACTUAL, client=client, **options)
    async def work() -> str:
        ctx = get_cycles_context()
        assert ctx is not None
        calls.append(ctx.reservation_id)
        return "done"

    return await work()


@INPROC
@pytest.mark.anyio
@pytest.mark.parametrize("fault", sorted(CREATE_RECOVERED))
async def test_create_recovered_by_same_key_retry(harness: Harness, fault: str) -> None:
    client, faults = harness.async_client()
    CREATE_RECOVERED[fault](faults)
    calls: list[str] = []
    async with client:
        assert await _guarded_async(client, calls) == "done"
        assert await client.flush() == 0
    assert faults.sequence() == ["create", "create_same_key", "commit"]
    first, second = faults.entries("create")
    assert first.body == second.body  # identical body, same key
    assert faults.unused() == []
    assert len(harness.reservations()) == 1  # a create the server applied was replayed, not duplicated
    harness.assert_ledger(spent=ACTUAL)
    assert len(calls) == 1


@pytest.mark.parametrize("fault", ["connect_error", "lost_response", "status_502"])
def test_create_recovered_sync(harness: Harness, fault: str) -> None:
    client, faults = harness.sync_client()
    CREATE_RECOVERED[fault](faults)

    @with_cycles(estimate=ESTIMATE, actual=ACTUAL, client=client)
    def work() -> str:
        return "done"

    assert work() == "done"
    assert client.flush() == 0
    assert faults.sequence() == ["create", "create_same_key", "commit"]
    assert len(harness.reservations()) == 1
    harness.assert_ledger(spent=ACTUAL)


def _retry_after(ms: int | None) -> Callable[[BaseException], None]:
    def check(exc: BaseException) -> None:
        assert isinstance(exc, CyclesProtocolError)
        assert exc.status == 429 and exc.error_code is ErrorCode.LIMIT_EXCEEDED
        assert exc.retry_after_ms == ms

    return check


def _status(code: int, error: ErrorCode | None = None) -> Callable[[BaseException], None]:
    def check(exc: BaseException) -> None:
        assert isinstance(exc, CyclesProtocolError) and exc.status == code
        if error is not None:
            assert exc.error_code is error

    return check


def _typed(cls: type[CyclesProtocolError]) -> Callable[[BaseException], None]:
    def check(exc: BaseException) -> None:
        assert isinstance(exc, cls), repr(exc)

    return check


def _transport(cause: type[Exception]) -> Callable[[BaseException], None]:
    def check(exc: BaseException) -> None:
        assert isinstance(exc, CyclesTransportError) and isinstance(exc.__cause__, cause)

    return check


# Faults that end the call before the function runs: (setup, expected sequence, exception check, held budget).
CREATE_RAISES: dict[str, tuple[Setup, list[str], Callable[[BaseException], None], int]] = {
    "connect_error_twice": (
        lambda f: f.on("create", times=2).connect_error(),
        ["create", "create_same_key"], _transport(httpx.ConnectError), 0,
    ),
    "read_timeout_twice": (
        lambda f: f.on("create", times=2).read_timeout(),
        ["create", "create_same_key"], _transport(httpx.ReadTimeout), 0,
    ),
    "status_500_twice": (
        lambda f: f.on("create", times=2).status(500), ["create", "create_same_key"], _status(500), 0,
    ),
    "status_502_twice": (
        lambda f: f.on("create", times=2).status(502), ["create", "create_same_key"], _status(502), 0,
    ),
    # Applied by the server both times, never readable: the ambiguity is surfaced; the hold stays until expiry.
    "2xx_missing_decision_twice": (
        lambda f: f.on("create", times=2).body(200, _drop("decision")),
        ["create", "create_same_key"], _status(200), ESTIMATE,
    ),
    "rate_limited_retry_after": (
        lambda f: f.on("create").rate_limited(retry_after=2), ["create"], _retry_after(2000), 0,
    ),
    "rate_limited_bare": (lambda f: f.on("create").rate_limited(), ["create"], _retry_after(None), 0),
    "status_401": (lambda f: f.on("create").status(401), ["create"], _status(401, ErrorCode.UNAUTHORIZED), 0),
    "status_410": (
        lambda f: f.on("create").status(410), ["create"], _typed(ReservationExpiredError), 0,
    ),
    "status_409_finalized": (
        lambda f: f.on("create").status(409), ["create"], _typed(ReservationFinalizedError), 0,
    ),
}


@pytest.mark.anyio
@pytest.mark.parametrize("fault", sorted(CREATE_RAISES))
async def test_create_failure_raises_and_never_runs(harness: Harness, fault: str) -> None:
    setup, sequence, check, held = CREATE_RAISES[fault]
    client, faults = harness.async_client()
    setup(faults)
    calls: list[str] = []
    async with client:
        with pytest.raises((CyclesProtocolError, CyclesTransportError)) as caught:
            await _guarded_async(client, calls)
    check(caught.value)
    assert calls == []
    assert faults.sequence() == sequence
    harness.assert_ledger(spent=0, reserved=held)


# --------------------------------------------------------------------------- commit

# Faults on the first commit: settled by background retries with the same key and body. Sequence after create.
COMMIT_RETRIED: dict[str, tuple[Setup, list[str]]] = {
    "connect_error": (lambda f: f.on("commit").connect_error(), ["commit", "commit_same_key"]),
    "read_timeout": (lambda f: f.on("commit").read_timeout(), ["commit", "commit_same_key"]),
    "lost_response": (lambda f: f.on("commit").lost_response(), ["commit", "commit_same_key"]),  # CR-CORE-001
    "reset": (lambda f: f.on("commit").reset(), ["commit", "commit_same_key"]),
    "truncated": (lambda f: f.on("commit").truncated(), ["commit", "commit_same_key"]),
    "status_500": (lambda f: f.on("commit").status(500), ["commit", "commit_same_key"]),
    "status_500_applied": (lambda f: f.on("commit").status(500, forward=True), ["commit", "commit_same_key"]),
    "status_502_three_times": (
        lambda f: f.on("commit", times=3).status(502),
        ["commit", "commit_same_key", "commit_same_key", "commit_same_key"],
    ),
    "rate_limited_bare": (lambda f: f.on("commit").rate_limited(), ["commit", "commit_same_key"]),
    # CR-CORE-004: a non-conformant 2xx is ambiguous, never a success.
    "2xx_missing_charged": (lambda f: f.on("commit").body(200, _drop("charged")), ["commit", "commit_same_key"]),
    "2xx_status_wrong": (lambda f: f.on("commit").body(200, _with("status", "WRONG")), ["commit", "commit_same_key"]),
    "2xx_202": (lambda f: f.on("commit").body(202, b""), ["commit", "commit_same_key"]),
    "2xx_204": (lambda f: f.on("commit").body(204, None), ["commit", "commit_same_key"]),
    # After the action ran, a 401 never drops (or releases) the spend: it is kept and retried.
    "status_401": (lambda f: f.on("commit").status(401), ["commit", "commit_same_key"]),
    # FINALIZED is verified: not committed on the server yet -> still ambiguous -> same-key retry.
    "status_409_finalized": (lambda f: f.on("commit").status(409), ["commit", "get", "commit_same_key"]),
    # FINALIZED after the server applied it: the GET shows COMMITTED -> settled, no retry.
    "status_409_finalized_applied": (lambda f: f.on("commit").status(409, forward=True), ["commit", "get"]),
}


def _assert_commit_settled_once(harness: Harness, faults: FaultPlan, expected: list[str]) -> None:
    assert faults.sequence() == ["create", *expected]
    commits = faults.entries("commit")
    assert len({e.idempotency_key for e in commits}) == 1
    assert all(e.body == commits[0].body for e in commits)
    assert all(e.headers["x-idempotency-key"] == commits[0].body["idempotency_key"] for e in commits)
    assert commits[0].body["actual"]["amount"] == ACTUAL
    assert faults.unused() == []
    harness.assert_ledger(spent=ACTUAL)
    detail = harness.reservation(commits[0].reservation_id or "")
    assert detail["status"] == "COMMITTED" and detail["committed"]["amount"] == ACTUAL


@INPROC
@pytest.mark.anyio
@pytest.mark.parametrize("fault", sorted(COMMIT_RETRIED))
async def test_commit_fault_settles_once_async(harness: Harness, fault: str) -> None:
    setup, expected = COMMIT_RETRIED[fault]
    client, faults = harness.async_client()
    setup(faults)
    async with client:
        assert await _guarded_async(client, []) == "done"  # never raises into the caller
        assert await client.flush() == 0
    _assert_commit_settled_once(harness, faults, expected)


@pytest.mark.parametrize("fault", sorted(COMMIT_RETRIED))
def test_commit_fault_settles_once_sync(harness: Harness, fault: str) -> None:
    setup, expected = COMMIT_RETRIED[fault]
    client, faults = harness.sync_client()
    setup(faults)

    @with_cycles(estimate=ESTIMATE, actual=ACTUAL, client=client)
    def work() -> str:
        return "done"

    assert work() == "done"
    assert client.flush() == 0
    _assert_commit_settled_once(harness, faults, expected)


@pytest.mark.parametrize("mode", ["inproc", "http"])
def test_commit_rate_limited_waits_for_retry_after(harness: Harness) -> None:
    client, faults = harness.sync_client()
    faults.on("commit").rate_limited(retry_after=1)

    @with_cycles(estimate=ESTIMATE, actual=ACTUAL, client=client)
    def work() -> str:
        return "done"

    assert work() == "done"
    assert client.flush() == 0
    _assert_commit_settled_once(harness, faults, ["commit", "commit_same_key"])
    first, second = faults.entries("commit")
    assert second.at - first.at >= 0.95  # not before Retry-After


@pytest.mark.anyio
async def test_expired_commit_becomes_event_same_key(harness: Harness) -> None:
    """CR-CORE-002: the reservation really expires on the server (its clock jumps past expiry + grace)."""
    client, faults = harness.async_client()
    rid: list[str] = []
    async with client:

        @with_cycles(estimate=ESTIMATE, actual=ACTUAL, ttl_ms=10_000, grace_period_ms=0, action_kind="llm.completion",
                     action_name="gpt", agent="writer", client=client)
        async def work() -> str:
            ctx = get_cycles_context()
            assert ctx is not None
            rid.append(ctx.reservation_id)
            harness.clock.advance(20_000)
            return "done"

        assert await work() == "done"
        assert await client.flush() == 0
    assert faults.sequence() == ["create", "commit", "event_same_key"]
    create, commit, event = faults.log
    assert commit.status == 410
    assert event.status == 201
    assert event.body["subject"] == create.body["subject"] == {"tenant": "acme", "agent": "writer"}
    assert event.body["action"] == create.body["action"]
    assert event.body["actual"] == commit.body["actual"] == {"unit": "USD_MICROCENTS", "amount": ACTUAL}
    assert event.body["metadata"]["recovered_reservation_id"] == rid[0]
    harness.assert_ledger(spent=ACTUAL)  # the expired hold was refunded, the event charged once
    assert harness.reservation(rid[0])["error"] == "RESERVATION_EXPIRED"


@INPROC
def test_unresolved_commit_is_kept_and_replayed_by_a_new_client(harness: Harness) -> None:
    client, faults = harness.sync_client(retry_max_attempts=2)
    faults.on("commit", times=None).status(503)

    @with_cycles(estimate=ESTIMATE, actual=ACTUAL, client=client)
    def work() -> str:
        return "done"

    assert work() == "done"
    assert client.flush() == 0  # the settlement gave up for now; its journal record stays
    assert faults.sequence() == ["create", "commit", "commit_same_key", "commit_same_key"]
    harness.assert_ledger(spent=0, reserved=ESTIMATE)
    key = faults.keys("commit")[0]
    client.close()

    fresh, replay = harness.sync_client()  # same journal dir
    assert replay.sequence() == []  # constructing a client resumes nothing
    assert fresh.replay_journal() == 1
    assert fresh.flush() == 0
    assert replay.sequence() == ["commit"]
    assert replay.keys("commit") == [key]
    harness.assert_ledger(spent=ACTUAL)


# --------------------------------------------------------------------------- extend (heartbeat)

# ttl_ms=3000: the first extend is due at once (the lease is shorter than the retry reserve), and a failed
# one is retried with the same key after ~750 ms, well inside the lease.
EXTEND_RETRIED: dict[str, tuple[Setup, int]] = {
    "connect_error": (lambda f: f.on("extend").connect_error(), 3000),
    "read_timeout": (lambda f: f.on("extend").read_timeout(), 3000),
    "lost_response": (lambda f: f.on("extend").lost_response(), 3000),
    "status_500": (lambda f: f.on("extend").status(500), 3000),
    "status_502": (lambda f: f.on("extend").status(502), 3000),
    "2xx_missing_expires_at": (lambda f: f.on("extend").body(200, _drop("expires_at_ms")), 3000),
    "2xx_status_wrong": (lambda f: f.on("extend").body(200, _with("status", "WRONG")), 3000),
    # Retry-After must fit the retry window: a 6 s lease beats at ~2.5 s with ~1.25 s of window left.
    "rate_limited_retry_after": (lambda f: f.on("extend").rate_limited(retry_after=1), 6000),
}

# Faults that stop the heartbeat (reported as "stopped"); the function goes on and is still committed.
EXTEND_STOPPED: dict[str, Setup] = {
    "rate_limited_bare": lambda f: f.on("extend").rate_limited(),
    "status_410": lambda f: f.on("extend").status(410),
    "status_409_finalized": lambda f: f.on("extend").status(409),
    "status_401": lambda f: f.on("extend").status(401),
}


def _extended_once(faults: FaultPlan) -> bool:
    extends = faults.entries("extend")
    return len(extends) >= 2 and extends[-1].status == 200


async def _run_with_heartbeat(
    harness: Harness, faults: FaultPlan, client: Any, ttl_ms: int, until: Callable[[FaultPlan], bool]
) -> str:
    rid: list[str] = []

    @with_cycles(estimate=ESTIMATE, actual=ACTUAL, ttl_ms=ttl_ms, client=client)
    async def work() -> str:
        ctx = get_cycles_context()
        assert ctx is not None
        rid.append(ctx.reservation_id)
        release = anyio.Event()

        async def watch() -> None:
            await faults.wait_for(until, timeout=20)
            release.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            await release.wait()
        return "done"

    assert await work() == "done"
    return rid[0]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("mode", "fault"),
    [("inproc", f) for f in sorted(EXTEND_RETRIED)] + [("http", "connect_error"), ("http", "lost_response")],
)
async def test_extend_fault_retried_same_key(harness: Harness, fault: str) -> None:
    """CR-CORE-003: reported with the reservation id and disposition, same key retried, work continues,
    commit happens."""
    setup, ttl_ms = EXTEND_RETRIED[fault]
    events: list[HeartbeatEvent] = []
    client, faults = harness.async_client(on_heartbeat_failure=events.append)
    setup(faults)
    async with client:
        rid = await _run_with_heartbeat(harness, faults, client, ttl_ms, _extended_once)
        assert await client.flush() == 0
    assert faults.sequence() == ["create", "extend", "extend_same_key", "commit"]
    first, second = faults.entries("extend")
    assert first.body == second.body and first.body["extend_by_ms"] == ttl_ms
    assert first.reservation_id == rid
    assert [(e.reservation_id, e.disposition) for e in events] == [(rid, "retrying")]
    assert events[0].retry_in_ms is not None and events[0].retry_in_ms > 0
    detail = harness.reservation(rid)
    assert detail["status"] == "COMMITTED"
    assert detail["expires_at_ms"] - detail["created_at_ms"] == 2 * ttl_ms  # extended exactly once
    harness.assert_ledger(spent=ACTUAL)


@INPROC
@pytest.mark.anyio
@pytest.mark.parametrize("fault", sorted(EXTEND_STOPPED))
async def test_extend_fault_stops_heartbeat_work_continues(harness: Harness, fault: str) -> None:
    events: list[HeartbeatEvent] = []
    client, faults = harness.async_client(on_heartbeat_failure=events.append)
    EXTEND_STOPPED[fault](faults)
    async with client:
        rid = await _run_with_heartbeat(
            harness, faults, client, 3000, lambda f: any(e.disposition == "stopped" for e in events)
        )
        assert await client.flush() == 0
    assert faults.sequence() == ["create", "extend", "commit"]
    assert [(e.reservation_id, e.disposition) for e in events] == [(rid, "stopped")]
    assert events[0].status == faults.entries("extend")[0].status
    detail = harness.reservation(rid)
    assert detail["status"] == "COMMITTED" and detail["expires_at_ms"] - detail["created_at_ms"] == 3000
    harness.assert_ledger(spent=ACTUAL)


def test_extend_transport_failure_sync_client(harness: Harness) -> None:
    """CR-CORE-003 with the sync client (its heartbeat runs on the background worker)."""
    events: list[HeartbeatEvent] = []
    lock = threading.Lock()

    def report(event: HeartbeatEvent) -> None:
        with lock:
            events.append(event)

    client, faults = harness.sync_client(on_heartbeat_failure=report)
    faults.on("extend").connect_error()
    rid: list[str] = []

    @with_cycles(estimate=ESTIMATE, actual=ACTUAL, ttl_ms=3000, client=client)
    def work() -> str:
        ctx = get_cycles_context()
        assert ctx is not None
        rid.append(ctx.reservation_id)
        faults.wait_for_sync(_extended_once, timeout=20)
        return "done"

    assert work() == "done"
    assert client.flush() == 0
    assert faults.sequence() == ["create", "extend", "extend_same_key", "commit"]
    with lock:
        assert [(e.reservation_id, e.disposition) for e in events] == [(rid[0], "retrying")]
    harness.assert_ledger(spent=ACTUAL)


@INPROC
@pytest.mark.anyio
async def test_server_side_max_extensions_stops_heartbeat(harness: Harness) -> None:
    """A real 409 MAX_EXTENSIONS_EXCEEDED from the server: reported as stopped with the code, never retried."""
    harness.server.update_tenant("acme", max_reservation_extensions=1)
    events: list[HeartbeatEvent] = []
    client, faults = harness.async_client(on_heartbeat_failure=events.append)
    async with client:
        rid = await _run_with_heartbeat(
            harness, faults, client, 2000, lambda f: any(e.disposition == "stopped" for e in events)
        )
        assert await client.flush() == 0
    assert faults.sequence() == ["create", "extend", "extend", "commit"]
    assert [e.status for e in faults.entries("extend")] == [200, 409]
    assert [(e.reservation_id, e.disposition, e.error_code) for e in events] == [
        (rid, "stopped", "MAX_EXTENSIONS_EXCEEDED")
    ]
    harness.assert_ledger(spent=ACTUAL)


# --------------------------------------------------------------------------- release and event faults


@INPROC
@pytest.mark.anyio
async def test_release_fault_still_reraises_the_original(harness: Harness) -> None:
    client, faults = harness.async_client()
    faults.on("release", times=2).connect_error()
    boom = KeyError("boom")
    async with client:

        @with_cycles(estimate=ESTIMATE, client=client)
        async def work() -> None:
            raise boom

        with pytest.raises(KeyError) as caught:
            await work()
    assert caught.value is boom
    assert faults.sequence() == ["create", "release", "release_same_key"]
    harness.assert_ledger(spent=0, reserved=ESTIMATE)  # held until the reservation expires


@INPROC
@pytest.mark.anyio
async def test_release_recovered_by_same_key_retry(harness: Harness) -> None:
    client, faults = harness.async_client()
    faults.on("release").lost_response()
    async with client:

        @with_cycles(estimate=ESTIMATE, client=client)
        async def work() -> None:
            raise KeyError("boom")

        with pytest.raises(KeyError):
            await work()
    assert faults.sequence() == ["create", "release", "release_same_key"]
    assert [e.status for e in faults.entries("release")] == [None, 200]
    harness.assert_ledger(spent=0)


EVENT_FAULTS: dict[str, Setup] = {
    "status_500": lambda f: f.on("event").status(500),
    "lost_response": lambda f: f.on("event").lost_response(),
    # The right body with the wrong status (200, not 201) is not a success: retried with the same key.
    "2xx_200_instead_of_201": lambda f: f.on("event").body(200, lambda real: real),
}


def _assert_event_settled_once(harness: Harness, faults: FaultPlan) -> None:
    assert faults.sequence() == ["create", "commit", "event_same_key", "event_same_key"]
    assert faults.entries("commit")[0].status == 410
    assert faults.entries("event")[-1].status == 201
    assert len(set(faults.keys("event"))) == 1
    harness.assert_ledger(spent=ACTUAL)  # the event charged exactly once


@INPROC
@pytest.mark.anyio
@pytest.mark.parametrize("fault", sorted(EVENT_FAULTS))
async def test_event_fallback_faults_retried_same_key(harness: Harness, fault: str) -> None:
    client, faults = harness.async_client()
    EVENT_FAULTS[fault](faults)
    async with client:

        @with_cycles(estimate=ESTIMATE, actual=ACTUAL, ttl_ms=10_000, grace_period_ms=0, client=client)
        async def work() -> str:
            harness.clock.advance(20_000)
            return "done"

        assert await work() == "done"
        assert await client.flush() == 0
    _assert_event_settled_once(harness, faults)


@pytest.mark.parametrize("fault", sorted(EVENT_FAULTS))
def test_event_fallback_faults_retried_same_key_sync(harness: Harness, fault: str) -> None:
    client, faults = harness.sync_client()
    EVENT_FAULTS[fault](faults)

    @with_cycles(estimate=ESTIMATE, actual=ACTUAL, ttl_ms=10_000, grace_period_ms=0, client=client)
    def work() -> str:
        harness.clock.advance(20_000)
        return "done"

    assert work() == "done"
    assert client.flush() == 0
    _assert_event_settled_once(harness, faults)
