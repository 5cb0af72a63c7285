"""What a server sends is bounded and the API key never comes back out: body-size cap (over real loopback HTTP,
plain and gzip), server text capped in logs and exceptions, the configured key redacted everywhere."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
from raw_http import Reply, raw_server

from runcycles import AsyncCyclesClient, CyclesClient, CyclesConfig, with_cycles
from runcycles._protocol import requests as rq
from runcycles._protocol.outcomes import OutcomeKind, classify
from runcycles._text import MAX_TEXT_CHARS, REDACTED, BodyReader, Scrubber, cap
from runcycles.errors import CyclesProtocolError

API_KEY = "cyc_live_SECRET_0123456789"
LIMIT = 64 * 1024
CREATED = {
    "decision": "ALLOW",
    "reservation_id": "r-1",
    "affected_scopes": ["tenant:acme"],
    "reserved": {"unit": "USD_MICROCENTS", "amount": 100},
    "expires_at_ms": 4_000_000_000_000,
}
# A log line or exception message may add its own words around the capped server text.
BOUND = MAX_TEXT_CHARS + 600


def config(url: str = "http://cycles.test", tmp_path: Path | None = None, **overrides: Any) -> CyclesConfig:
    options: dict[str, Any] = {
        "base_url": url,
        "api_key": API_KEY,
        "tenant": "acme",
        "retry_enabled": False,
        "journal_enabled": tmp_path is not None,
        "journal_dir": str(tmp_path / "journal") if tmp_path is not None else None,
    }
    options.update(overrides)
    return CyclesConfig(**options)


# --------------------------------------------------------------------------- body-size cap, real HTTP


def big_json(size: int) -> bytes:
    return json.dumps({"reservation_id": "r-1", "status": "COMMITTED", "pad": "x" * size}).encode()


def fetch(reply: Reply, **overrides: Any) -> Any:
    """One GET over loopback HTTP from a sync client to a server that always answers ``reply``."""
    with raw_server(lambda method, path: reply) as server, CyclesClient(config(server.url, **overrides)) as client:
        return client.get_reservation("r-1")


def test_sync_body_over_the_cap_is_cut_and_ambiguous() -> None:
    response = fetch(Reply(body=big_json(4 * LIMIT)), max_response_bytes=LIMIT)
    assert response.status == 200 and response.body_truncated and response.body is None
    assert len(response.content) == LIMIT
    assert response.error_message == f"response body larger than {LIMIT} bytes (not read past the limit)"
    outcome = classify(rq.Operation.GET, response)
    assert outcome.kind is OutcomeKind.AMBIGUOUS and outcome.problem == response.error_message


@pytest.mark.anyio
async def test_async_body_over_the_cap_is_cut_and_ambiguous() -> None:
    with raw_server(lambda method, path: Reply(body=big_json(4 * LIMIT))) as server:
        async with AsyncCyclesClient(config(server.url, max_response_bytes=LIMIT)) as client:
            response = await client.get_reservation("r-1")
    assert response.status == 200 and response.body_truncated and response.body is None
    assert len(response.content) == LIMIT


def test_body_at_the_cap_is_read_whole() -> None:
    body = big_json(LIMIT)
    response = fetch(Reply(body=body), max_response_bytes=len(body))
    assert not response.body_truncated and response.body["status"] == "COMMITTED"


def test_error_body_over_the_cap_is_never_terminal() -> None:
    payload = json.dumps({"error": "INVALID_REQUEST", "message": "x" * (2 * LIMIT)}).encode()
    response = fetch(Reply(status=400, body=payload), max_response_bytes=LIMIT)
    assert response.status == 400 and response.body_truncated
    # Without its body the 400 is not an understood rejection: the spend is kept, not dropped.
    assert classify(rq.Operation.COMMIT, response).kind is OutcomeKind.RETAIN


def test_gzip_bomb_is_cut_at_the_cap() -> None:
    bomb = gzip.compress(b"0" * (50 * 1024 * 1024))
    reply = Reply(body=bomb, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    response = fetch(reply, max_response_bytes=LIMIT)
    assert response.body_truncated and len(response.content) == LIMIT


def test_small_gzip_body_is_decoded_and_identity_is_asked_for() -> None:
    reply = Reply(
        body=gzip.compress(json.dumps({"status": "ACTIVE"}).encode()),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert fetch(reply).body == {"status": "ACTIVE"}
    with CyclesClient(config()) as client:
        assert client._http.headers["accept-encoding"] == "identity"


def test_sync_commit_with_a_cut_body_stays_journaled(tmp_path: Path) -> None:
    def route(method: str, path: str) -> Reply:
        if path == "/v1/reservations":
            return Reply(body=json.dumps(CREATED).encode())
        return Reply(body=big_json(2 * LIMIT))

    cfg = config("http://placeholder", tmp_path, max_response_bytes=LIMIT)
    with raw_server(route) as server, CyclesClient(attrs.evolve(cfg, base_url=server.url)) as client:

        @with_cycles(estimate=100, actual=40, client=client)
        def work() -> int:
            return 1

        assert work() == 1
        assert [r.reservation_id for r in client._journal_owner.journal.load().records] == ["r-1"]


def test_create_with_a_cut_body_raises_a_protocol_error() -> None:
    body = json.dumps({**CREATED, "pad": "x" * (2 * LIMIT)}).encode()
    with raw_server(lambda method, path: Reply(body=body)) as server:
        with CyclesClient(config(server.url, max_response_bytes=LIMIT)) as client:

            @with_cycles(estimate=100, client=client)
            def work() -> int:
                return 1

            with pytest.raises(CyclesProtocolError, match="not read past the limit"):
                work()
        assert len(server.requests) == 2  # one same-key retry, then a clear error, never a success


# --------------------------------------------------------------------------- text cap and key redaction


HUGE = "boom " + "y" * 200_000
ECHO = f"{HUGE} request headers: X-Cycles-API-Key: {API_KEY}"


def echoing_server(request: httpx.Request) -> httpx.Response:
    """A server that answers every request with a huge error echoing the request's headers."""
    body = {"error": "INTERNAL_ERROR", "message": ECHO, "details": {"headers": dict(request.headers)}}
    return httpx.Response(500, json=body, headers={"X-Echo-Key": request.headers["x-cycles-api-key"]})


def _assert_clean(text: str) -> None:
    assert API_KEY not in text
    assert len(text) <= BOUND


def test_response_text_is_capped_and_redacted_everywhere() -> None:
    with CyclesClient(config(), transport=httpx.MockTransport(echoing_server)) as client:
        response = client.get_reservation("r-1")
    assert response.error_message is not None
    _assert_clean(response.error_message)
    assert response.error_message.endswith("more characters]") and "[cut: " in response.error_message
    assert API_KEY not in repr(response)
    assert response.headers["x-echo-key"] == REDACTED
    assert API_KEY not in response.content.decode()
    assert response.body["details"]["headers"]["x-cycles-api-key"] == REDACTED
    assert REDACTED in response.body["message"]


def test_logs_of_a_guarded_call_are_capped_and_redacted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/reservations":
            return httpx.Response(200, json=CREATED)
        return echoing_server(request)

    caplog.set_level(logging.DEBUG, logger="runcycles")
    with CyclesClient(config(tmp_path=tmp_path), transport=httpx.MockTransport(server)) as client:

        @with_cycles(estimate=100, actual=40, client=client)
        def work() -> int:
            return 1

        assert work() == 1
        assert client.replay_journal() == 1  # and again at replay
        assert client.flush() == 0
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("runcycles")]
    assert sum("boom" in m for m in messages) >= 2
    for message in messages:
        _assert_clean(message)


def _denied_with_echo(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        400,
        json={"error": "INVALID_REQUEST", "message": ECHO, "request_id": "req-1",
              "details": {"echo": request.headers["x-cycles-api-key"]}},
    )


def _assert_clean_error(exc: CyclesProtocolError) -> None:
    _assert_clean(str(exc))
    assert API_KEY not in repr(exc)
    assert API_KEY not in json.dumps(dict(exc.details))
    assert "[cut: " in str(exc)


def test_raised_error_text_is_capped_and_redacted() -> None:
    with CyclesClient(config(), transport=httpx.MockTransport(_denied_with_echo)) as client:

        @with_cycles(estimate=100, client=client)
        def work() -> int:
            return 1

        with pytest.raises(CyclesProtocolError) as caught:
            work()
    _assert_clean_error(caught.value)


@pytest.mark.anyio
async def test_async_raised_error_text_is_capped_and_redacted() -> None:
    async with AsyncCyclesClient(config(), transport=httpx.MockTransport(_denied_with_echo)) as client:

        @with_cycles(estimate=100, client=client)
        async def work() -> int:
            return 1

        with pytest.raises(CyclesProtocolError) as caught:
            await work()
    _assert_clean_error(caught.value)


def test_denial_reason_code_is_redacted() -> None:
    def deny(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"decision": "DENY", "affected_scopes": [], "reason_code": API_KEY})

    with CyclesClient(config(), transport=httpx.MockTransport(deny)) as client:

        @with_cycles(estimate=100, client=client)
        def work() -> int:
            return 1

        with pytest.raises(CyclesProtocolError) as caught:
            work()
    assert API_KEY not in str(caught.value) and REDACTED in str(caught.value)


def test_transport_error_text_is_capped_and_redacted() -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("z" * 10_000 + request.headers["x-cycles-api-key"])

    with CyclesClient(config(), transport=httpx.MockTransport(fail)) as client:
        response = client.get_reservation("r-1")
    assert response.status == -1 and response.error_message is not None
    _assert_clean(response.error_message)


# --------------------------------------------------------------------------- the helpers themselves


def test_cap_marks_what_it_cut() -> None:
    assert cap("abc", 3) == "abc"
    assert cap("abcdef", 3) == "abc... [cut: 3 more characters]"


def test_scrubber_redacts_before_capping_and_walks_deep_bodies() -> None:
    scrub = Scrubber(API_KEY)
    straddling = "a" * (MAX_TEXT_CHARS - 5) + API_KEY
    assert API_KEY[:5] not in scrub.text(straddling)[MAX_TEXT_CHARS - 10 :]
    deep: Any = API_KEY
    for _ in range(50_000):
        deep = [deep]
    cleaned = scrub.data({API_KEY: deep})
    node = cleaned[REDACTED]
    while isinstance(node, list):
        node = node[0]
    assert node == REDACTED


def test_short_keys_are_redacted_from_text_but_leave_data_alone() -> None:
    scrub = Scrubber("MM")
    assert scrub.text("COMMITTED") == "CO[REDACTED]ITTED"
    assert scrub.data({"status": "COMMITTED"}) == {"status": "COMMITTED"}


def test_body_reader_stops_past_its_limit() -> None:
    reader = BodyReader(10, None)
    assert reader.feed(b"12345")
    assert not reader.feed(b"678901")
    assert reader.cut and reader.content() == b"1234567890"
    assert not reader.feed(b"more")
