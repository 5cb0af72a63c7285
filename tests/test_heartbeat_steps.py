"""The heartbeat generator on the production driver against a simulated server on a fake clock (no sleeps,
milliseconds to run)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from runcycles._drivers import SyncEnv, run_sync
from runcycles._heartbeat import heartbeat_steps
from runcycles._lifecycle import Reserved
from runcycles._protocol import requests as rq
from runcycles.config import CyclesConfig
from runcycles.context import CyclesContext
from runcycles.heartbeat import HeartbeatDisposition, HeartbeatEvent
from runcycles.mappers import reservation_create_response_from_wire
from runcycles.models import Action, Amount, ReservationCreateRequest, Subject
from runcycles.response import CyclesResponse

CONFIG = CyclesConfig(base_url="http://x", api_key="k", journal_enabled=False)
RTT = 40.0


class SimServer:
    """Extends relative to the current expiry by ``extend_by_ms``; counts extensions; time in ms."""

    def __init__(self, ttl_ms: int, max_extensions: int = 10) -> None:
        self.now = 0.0
        self.expires = float(ttl_ms)
        self.extensions = 0
        self.max_extensions = max_extensions
        self.keys: list[str] = []
        self.min_margin = float("inf")

    def extend(self, body: dict[str, Any]) -> CyclesResponse:
        self.keys.append(body["idempotency_key"])
        if self.now > self.expires:
            return _reply(410, {"error": "RESERVATION_EXPIRED", "message": "x", "request_id": "r"})
        if self.extensions >= self.max_extensions:
            return _reply(409, {"error": "MAX_EXTENSIONS_EXCEEDED", "message": "x", "request_id": "r"})
        self.extensions += 1
        self.min_margin = min(self.min_margin, self.expires - self.now)
        self.expires += body["extend_by_ms"]
        return _reply(
            200,
            {"status": "ACTIVE", "expires_at_ms": int(self.expires), "remaining_ttl_ms": int(self.expires - self.now)},
        )


def _reply(status: int, body: Any, headers: dict[str, str] | None = None) -> CyclesResponse:
    return rq.parse_response(status, httpx.Headers(headers or {}), json.dumps(body).encode())


def reserved_for(ttl_ms: int, remaining: int | None = None) -> Reserved:
    body: dict[str, Any] = {
        "decision": "ALLOW",
        "reservation_id": "r-1",
        "affected_scopes": ["tenant:a"],
        "reserved": {"unit": "USD_MICROCENTS", "amount": 1},
        "expires_at_ms": ttl_ms,
    }
    if remaining is not None:
        body["remaining_ttl_ms"] = remaining
    return Reserved(
        request=ReservationCreateRequest(
            idempotency_key="c",
            subject=Subject(tenant="a"),
            action=Action(kind="k", name="n"),
            estimate=Amount(unit="USD_MICROCENTS", amount=1),
            ttl_ms=ttl_ms,
        ),
        response=reservation_create_response_from_wire(body),
        sent_at_ms=0.0,
        received_at_ms=RTT,
    )


class _CallEnded(Exception):
    """The guarded call ended: the heartbeat's driver is cancelled."""


def drive(
    steps: Any, server: SimServer, until_ms: float, respond: Callable[[SimServer, rq.HttpRequest], CyclesResponse]
) -> list[float]:
    """Run the generator on the production driver until simulated time passes ``until_ms`` (the guarded call
    ends) or it stops."""
    sends: list[float] = []
    server.now = RTT

    def send(request: rq.HttpRequest, deadline_ms: int | None) -> CyclesResponse:
        sends.append(server.now)
        server.now += RTT / 2
        response = respond(server, request)
        server.now += RTT / 2
        return response

    def sleep(seconds: float) -> None:
        if server.now + seconds * 1000 >= until_ms:
            raise _CallEnded
        server.now += seconds * 1000

    env = SyncEnv(send=send, monotonic=lambda: server.now, wall=lambda: int(server.now), sleep=sleep)
    try:
        run_sync(steps, env)
    except _CallEnded:
        steps.close()
    return sends


def ok(server: SimServer, request: rq.HttpRequest) -> CyclesResponse:
    return server.extend(json.loads(request.content or b""))


def test_short_lease_survives_a_60_second_call_with_the_default_config() -> None:
    ttl = 10_000
    server = SimServer(ttl)
    events: list[HeartbeatEvent] = []
    reserved = reserved_for(ttl, remaining=ttl)
    context = CyclesContext(reservation_id="r-1", estimate=1, decision="ALLOW")
    sends = drive(heartbeat_steps(reserved, context, config=CONFIG, report=events.append), server, 60_000, ok)
    assert events == []
    assert server.expires > 60_000  # still alive when the call ends
    assert server.min_margin > 0  # never extended a lapsed lease
    assert server.extensions <= 10
    assert len(set(server.keys)) == len(server.keys)  # a fresh key per successful beat
    assert context.expires_at_ms == int(server.expires)
    assert sends[0] > 1000  # no immediate priming extend


def test_transport_failure_retries_with_the_same_key_and_reports_it() -> None:
    ttl = 30_000
    server = SimServer(ttl)
    failures = {"n": 0}

    def flaky(server: SimServer, request: rq.HttpRequest) -> CyclesResponse:
        body = json.loads(request.content or b"")
        if failures["n"] < 2:
            failures["n"] += 1
            server.keys.append(body["idempotency_key"])
            return rq.transport_failure(httpx.ConnectError("down"))
        return server.extend(body)

    events: list[HeartbeatEvent] = []
    context = CyclesContext(reservation_id="r-1", estimate=1, decision="ALLOW")
    drive(heartbeat_steps(reserved_for(ttl, ttl), context, config=CONFIG, report=events.append), server, 40_000, flaky)
    assert [e.disposition for e in events] == ["retrying", "retrying"]
    assert all(e.reservation_id == "r-1" for e in events)
    assert server.keys[0] == server.keys[1] == server.keys[2]  # same key until a success
    assert server.extensions >= 1


def test_permanent_code_stops_and_reports() -> None:
    ttl = 30_000
    server = SimServer(ttl, max_extensions=0)
    events: list[HeartbeatEvent] = []
    context = CyclesContext(reservation_id="r-1", estimate=1, decision="ALLOW")
    steps = heartbeat_steps(reserved_for(ttl, ttl), context, config=CONFIG, report=events.append)
    sends = drive(steps, server, 10**9, ok)
    assert len(sends) == 1
    assert [e.disposition for e in events] == ["stopped"]
    assert events[0].error_code == "MAX_EXTENSIONS_EXCEEDED"


def test_429_beyond_the_window_stops_instead_of_lapsing() -> None:
    ttl = 30_000
    server = SimServer(ttl)

    def limited(server: SimServer, request: rq.HttpRequest) -> CyclesResponse:
        return _reply(429, {"error": "LIMIT_EXCEEDED", "message": "x", "request_id": "r"}, {"Retry-After": "3600"})

    events: list[HeartbeatEvent] = []
    context = CyclesContext(reservation_id="r-1", estimate=1, decision="ALLOW")
    drive(heartbeat_steps(reserved_for(ttl, ttl), context, config=CONFIG, report=events.append), server, 10**9, limited)
    assert events and events[-1].disposition == "stopped"


def test_injected_key_factory_gives_each_beat_its_key() -> None:
    ttl = 10_000
    server = SimServer(ttl)
    count = iter(range(1, 100))
    context = CyclesContext(reservation_id="r-1", estimate=1, decision="ALLOW")
    steps = heartbeat_steps(
        reserved_for(ttl, ttl), context, config=CONFIG, report=lambda e: None, key_factory=lambda: f"hb-{next(count)}"
    )
    drive(steps, server, 30_000, ok)
    # every key comes from the factory, in order (each successful beat takes a fresh one)
    assert len(server.keys) >= 3
    first = int(server.keys[0].removeprefix("hb-"))
    assert server.keys == [f"hb-{n}" for n in range(first, first + len(server.keys))]


def test_disposition_is_a_str_enum_that_still_compares_as_its_string() -> None:
    event = HeartbeatEvent(reservation_id="r-1", disposition="retrying", reason="x")
    assert event.disposition is HeartbeatDisposition.RETRYING
    assert event.disposition == "retrying" and f"{event.disposition}" == "retrying"
    with pytest.raises(ValueError):
        HeartbeatEvent(reservation_id="r-1", disposition="maybe", reason="x")


# --------------------------------------------------------------------------- a long lease's deferred start

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from runcycles._heartbeat import deferred_start_ms, started_at  # noqa: E402
from runcycles._protocol.effects import SleepUntil  # noqa: E402


def _first_effect(steps: Any) -> Any:
    effect = steps.send(None)
    steps.close()
    return effect


@settings(max_examples=1500, deadline=None)
@given(
    ttl=st.one_of(st.integers(min_value=1000, max_value=86_400_000), st.integers(min_value=10_000, max_value=40_000)),
    remaining=st.one_of(
        st.none(), st.integers(min_value=0, max_value=10**8), st.integers(min_value=10_000, max_value=40_000)
    ),
    sent=st.floats(min_value=0, max_value=1e9),
    rtt=st.floats(min_value=-5, max_value=5000),
    extend_timeout=st.one_of(st.none(), st.integers(min_value=1, max_value=600_000)),
    read_timeout=st.integers(min_value=1, max_value=600_000),
)
def test_a_deferred_start_never_comes_after_the_first_beat(
    ttl: int, remaining: int | None, sent: float, rtt: float, extend_timeout: int | None, read_timeout: int
) -> None:
    base = reserved_for(ttl, remaining)
    reserved = Reserved(request=base.request, response=base.response, sent_at_ms=sent, received_at_ms=sent + rtt)
    config = CyclesConfig(
        base_url="http://x", api_key="k", journal_enabled=False, extend_timeout_ms=extend_timeout,
        read_timeout_ms=read_timeout,
    )
    at = deferred_start_ms(reserved, config)
    if at is None:
        return
    first = _first_effect(heartbeat_steps(reserved, _ctx(), config=config, report=lambda event: None))
    assert isinstance(first, SleepUntil)
    assert first.at_ms >= at


def test_deferred_start_only_for_long_leases_measured_quickly() -> None:
    long = reserved_for(60_000, 60_000)
    assert deferred_start_ms(long, CONFIG) == RTT + 1000
    assert deferred_start_ms(reserved_for(10_000, 10_000), CONFIG) is None  # short: worked out at once
    assert deferred_start_ms(reserved_for(60_000, 5_000), CONFIG) is None  # the server granted little
    slow = Reserved(request=long.request, response=long.response, sent_at_ms=0.0, received_at_ms=2_000.0)
    assert deferred_start_ms(slow, CONFIG) is None
    patient = CyclesConfig(base_url="http://x", api_key="k", journal_enabled=False, extend_timeout_ms=30_000)
    assert deferred_start_ms(long, patient) is None  # its retry reserve takes most of the lead


def test_a_deferred_heartbeat_runs_the_same_beats_after_its_start() -> None:
    reserved = reserved_for(60_000, 60_000)
    plain = heartbeat_steps(reserved, _ctx(), config=CONFIG, report=lambda event: None)
    deferred = started_at(500.0, heartbeat_steps(reserved, _ctx(), config=CONFIG, report=lambda event: None))
    assert deferred.send(None) == SleepUntil(500.0)
    assert deferred.send(None) == plain.send(None)
    deferred.close()
    plain.close()


def test_closing_a_deferred_heartbeat_before_its_start_closes_the_steps_unstarted() -> None:
    closed: list[bool] = []

    def steps() -> Any:
        try:
            yield SleepUntil(1.0)
        finally:
            closed.append(True)

    inner = steps()
    deferred = started_at(500.0, inner)
    assert deferred.send(None) == SleepUntil(500.0)
    deferred.close()
    assert inner.gi_frame is None  # closed


def _ctx() -> CyclesContext:
    return CyclesContext(reservation_id="r-1", estimate=1, decision="ALLOW")
