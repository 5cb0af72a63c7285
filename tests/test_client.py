"""CyclesClient and AsyncCyclesClient against httpx.MockTransport: one exchange table, both clients.

Every behaviour here is checked on the sync client and on the async client (asyncio and trio).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import anyio
import attrs
import httpx
import pytest

from runcycles._protocol import requests as rq
from runcycles._version import __version__
from runcycles.client import AsyncCyclesClient, CyclesClient
from runcycles.config import CyclesConfig
from runcycles.errors import CyclesProtocolError, CyclesTransportError, ReservationExpiredError
from runcycles.mappers import to_wire
from runcycles.models import (
    Action,
    Amount,
    Balance,
    CommitRequest,
    CyclesMetrics,
    DecisionRequest,
    EventCreateRequest,
    ReleaseRequest,
    ReservationCreateRequest,
    ReservationExtendRequest,
    ReservationStatus,
    ReservationSummary,
    Subject,
    Unit,
)
from runcycles.response import CyclesResponse

API_KEY = "cyc_test_key_never_logged"
BASE_URL = "http://cycles.test"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
UTC = dt.timezone.utc

Reply = Callable[[httpx.Request], "httpx.Response | BaseException"]


class Server:
    """A MockTransport handler that records every request and answers with ``reply``."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        result = self.reply(request)
        if isinstance(result, BaseException):
            raise result
        return result

    @property
    def last(self) -> httpx.Request:
        assert self.requests, "nothing was sent"
        return self.requests[-1]


def config(**overrides: Any) -> CyclesConfig:
    kwargs: dict[str, Any] = {"base_url": BASE_URL, "api_key": API_KEY, "journal_enabled": False}
    kwargs.update(overrides)
    return CyclesConfig(**kwargs)


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={})


def run_sync(server: Server, name: str, *args: Any, cfg: CyclesConfig | None = None, **kwargs: Any) -> Any:
    with CyclesClient(cfg or config(), transport=httpx.MockTransport(server)) as client:
        return getattr(client, name)(*args, **kwargs)


async def run_async(server: Server, name: str, *args: Any, cfg: CyclesConfig | None = None, **kwargs: Any) -> Any:
    async with AsyncCyclesClient(cfg or config(), transport=httpx.MockTransport(server)) as client:
        return await getattr(client, name)(*args, **kwargs)


def raw_path(request: httpx.Request) -> str:
    return request.url.raw_path.split(b"?", 1)[0].decode("ascii")


# --------------------------------------------------------------------------- request models

SUBJECT = Subject(tenant="acme", workspace="prod")
ACTION = Action(kind="llm.completion", name="gpt-4o", tags=("chat",))
EST = Amount(unit=Unit.USD_MICROCENTS, amount=5000)

CREATE = ReservationCreateRequest(
    idempotency_key="key-create", subject=SUBJECT, action=ACTION, estimate=EST, ttl_ms=60000, metadata={"run": 1}
)
COMMIT = CommitRequest(
    idempotency_key="key-commit",
    actual=Amount(unit=Unit.USD_MICROCENTS, amount=4200),
    metrics=CyclesMetrics(tokens_input=10, tokens_output=20, latency_ms=300),
)
RELEASE = ReleaseRequest(idempotency_key="key-release", reason="guarded_method_failed")
EXTEND = ReservationExtendRequest(idempotency_key="key-extend", extend_by_ms=30000)
DECIDE = DecisionRequest(idempotency_key="key-decide", subject=SUBJECT, action=ACTION, estimate=EST)
EVENT = EventCreateRequest(
    idempotency_key="key-event", subject=SUBJECT, action=ACTION, actual=EST, client_time_ms=1_700_000_000_000
)
COMMIT_DICT = {"idempotency_key": "key-dict", "actual": {"unit": "TOKENS", "amount": 7}, "future": True}


@attrs.frozen
class Call:
    """One client method call and the request it must produce."""

    id: str
    name: str
    args: tuple[Any, ...]
    method: str
    path: str
    body: dict[str, Any] | None = None
    kwargs: dict[str, Any] = attrs.field(factory=dict)
    params: tuple[tuple[str, str], ...] = ()


CALLS = [
    Call("create", "create_reservation", (CREATE,), "POST", "/v1/reservations", to_wire(CREATE)),
    Call("commit", "commit_reservation", ("r-1", COMMIT), "POST", "/v1/reservations/r-1/commit", to_wire(COMMIT)),
    Call("commit-dict", "commit_reservation", ("a/b?c", COMMIT_DICT), "POST",
         "/v1/reservations/a%2Fb%3Fc/commit", COMMIT_DICT),
    Call("release", "release_reservation", ("r 1", RELEASE), "POST", "/v1/reservations/r%201/release",
         to_wire(RELEASE)),
    Call("extend", "extend_reservation", ("r#1", EXTEND), "POST", "/v1/reservations/r%231/extend", to_wire(EXTEND)),
    Call("decide", "decide", (DECIDE,), "POST", "/v1/decide", to_wire(DECIDE)),
    Call("event", "create_event", (EVENT,), "POST", "/v1/events", to_wire(EVENT)),
    Call("get", "get_reservation", ("../x",), "GET", "/v1/reservations/..%2Fx"),
    Call("list", "list_reservations", (), "GET", "/v1/reservations",
         kwargs={"tenant": "acme", "status": ReservationStatus.ACTIVE, "limit": 50},
         params=(("tenant", "acme"), ("status", "ACTIVE"), ("limit", "50"))),
    Call("balances", "get_balances", (), "GET", "/v1/balances",
         kwargs={"tenant": "acme", "include_children": True},
         params=(("tenant", "acme"), ("include_children", "true"))),
]
CALL_IDS = [c.id for c in CALLS]


def check_request(request: httpx.Request, call: Call) -> None:
    assert request.method == call.method
    assert raw_path(request) == call.path
    assert tuple(request.url.params.multi_items()) == call.params
    assert request.headers["X-Cycles-API-Key"] == API_KEY
    assert request.headers["User-Agent"] == f"runcycles-python/{__version__}"
    assert "traceparent" not in request.headers
    if call.body is None:
        assert request.content == b""
        assert "X-Idempotency-Key" not in request.headers
        assert "Content-Type" not in request.headers
    else:
        assert request.headers["Content-Type"] == "application/json"
        assert json.loads(request.content) == call.body
        assert request.headers["X-Idempotency-Key"] == call.body["idempotency_key"]


@pytest.mark.parametrize("call", CALLS, ids=CALL_IDS)
def test_sync_request_shape(call: Call) -> None:
    server = Server(ok)
    response = run_sync(server, call.name, *call.args, **call.kwargs)
    assert isinstance(response, CyclesResponse)
    assert len(server.requests) == 1
    check_request(server.last, call)


@pytest.mark.anyio
@pytest.mark.parametrize("call", CALLS, ids=CALL_IDS)
async def test_async_request_shape(call: Call) -> None:
    server = Server(ok)
    response = await run_async(server, call.name, *call.args, **call.kwargs)
    assert isinstance(response, CyclesResponse)
    assert len(server.requests) == 1
    check_request(server.last, call)


# --------------------------------------------------------------------------- the exchange table


@attrs.frozen
class Exchange:
    """What the server does, and what the client must report."""

    id: str
    reply: Callable[[], httpx.Response | BaseException]
    status: int
    body: Any = None
    error_message: str | None = None
    request_id: str | None = None
    trace_id: str | None = None
    retry_after_ms: int | None = None
    rate_limit_remaining: int | None = None
    cycles_tenant: str | None = None
    transport_error: type[BaseException] | None = None


ERR = {"error": "BUDGET_EXCEEDED", "message": "Insufficient budget", "request_id": "body-req", "trace_id": "f" * 32}
SUCCESS_BODY = {"status": "COMMITTED", "charged": {"unit": "USD_MICROCENTS", "amount": 4200}, "extra_v2": 1}


def reply(status: int, content: bytes = b"", **headers: str) -> Callable[[], httpx.Response]:
    return lambda: httpx.Response(status, content=content, headers=headers)


EXCHANGES = [
    Exchange("200-json", reply(200, json.dumps(SUCCESS_BODY).encode(), **{"X-Cycles-Tenant": "acme",
             "X-Request-Id": "hdr-req", "X-RateLimit-Remaining": "-1"}),
             200, SUCCESS_BODY, request_id="hdr-req", cycles_tenant="acme", rate_limit_remaining=-1),
    Exchange("201-json", reply(201, b'{"status":"APPLIED","event_id":"e-1"}'), 201,
             {"status": "APPLIED", "event_id": "e-1"}),
    Exchange("200-empty", reply(200), 200, None),
    Exchange("204-empty", reply(204), 204, None),
    Exchange("200-truncated", reply(200, b'{"status": "COMMI'), 200, None),
    Exchange("200-not-json", reply(200, b"<html>hello</html>"), 200, None),
    Exchange("200-bad-utf8", reply(200, b'{"a": "\xff\xfe"}'), 200, None),
    Exchange("200-list", reply(200, b"[1, 2, 3]"), 200, [1, 2, 3]),
    Exchange("409-error", reply(409, json.dumps(ERR).encode(), **{"X-Cycles-Trace-Id": "a" * 32}), 409, ERR,
             error_message="Insufficient budget", request_id="body-req", trace_id="a" * 32),
    Exchange("400-code-only", reply(400, b'{"error": "INVALID_REQUEST"}'), 400, {"error": "INVALID_REQUEST"},
             error_message="INVALID_REQUEST"),
    Exchange("404-empty", reply(404), 404, None, error_message="Not Found"),
    Exchange("410-truncated", reply(410, b'{"error": "RESERV'), 410, None, error_message="Gone"),
    Exchange("429-retry-after", reply(429, b'{"error":"LIMIT_EXCEEDED","message":"slow down","request_id":"q"}',
             **{"Retry-After": "2", "X-RateLimit-Remaining": "0"}), 429,
             {"error": "LIMIT_EXCEEDED", "message": "slow down", "request_id": "q"},
             error_message="slow down", request_id="q", retry_after_ms=2000, rate_limit_remaining=0),
    Exchange("429-http-date", reply(429, b"", **{"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}), 429, None,
             error_message="Too Many Requests", retry_after_ms=None),
    Exchange("500-html", reply(500, b"<h1>oops</h1>", **{"Content-Type": "text/html"}), 500, None,
             error_message="Internal Server Error"),
    Exchange("502-string", reply(502, b'"upstream down"'), 502, "upstream down", error_message="Bad Gateway"),
    Exchange("307-not-followed", reply(307, b"", Location="http://elsewhere.test/v1/x"), 307, None,
             error_message="Temporary Redirect"),
    Exchange("connect-error", lambda: httpx.ConnectError("connection refused"), -1, None,
             error_message="ConnectError: connection refused", transport_error=httpx.ConnectError),
    Exchange("read-timeout", lambda: httpx.ReadTimeout("timed out"), -1, None,
             error_message="ReadTimeout: timed out", transport_error=httpx.ReadTimeout),
    Exchange("connect-timeout", lambda: httpx.ConnectTimeout(""), -1, None,
             error_message="ConnectTimeout: ConnectTimeout", transport_error=httpx.ConnectTimeout),
    Exchange("remote-protocol", lambda: httpx.RemoteProtocolError("peer closed"), -1, None,
             error_message="RemoteProtocolError: peer closed", transport_error=httpx.RemoteProtocolError),
]
EXCHANGE_IDS = [e.id for e in EXCHANGES]
# A representative subset of calls for the table (POST with a key, POST with a dict, GET, GET with a query).
TABLE_CALLS = [c for c in CALLS if c.id in ("create", "commit-dict", "event", "get", "balances")]


def check_response(response: CyclesResponse, exchange: Exchange) -> None:
    assert isinstance(response, CyclesResponse)
    assert response.status == exchange.status
    assert response.body == exchange.body
    assert response.error_message == exchange.error_message
    assert response.is_success is (200 <= exchange.status < 300)
    assert response.is_transport_error is (exchange.status == -1)
    assert response.request_id == exchange.request_id
    assert response.trace_id == exchange.trace_id
    assert response.retry_after_ms == exchange.retry_after_ms
    assert response.rate_limit_remaining == exchange.rate_limit_remaining
    assert response.cycles_tenant == exchange.cycles_tenant
    if exchange.transport_error is None:
        assert response.transport_error is None
    else:
        assert type(response.transport_error) is exchange.transport_error
    # Accessors never raise, whatever came back.
    response.get_error_response()
    response.get_body_attribute("error")


def _server_for(exchange: Exchange) -> Server:
    return Server(lambda request: exchange.reply())


@pytest.mark.parametrize("call", TABLE_CALLS, ids=[c.id for c in TABLE_CALLS])
@pytest.mark.parametrize("exchange", EXCHANGES, ids=EXCHANGE_IDS)
def test_sync_exchange(exchange: Exchange, call: Call) -> None:
    server = _server_for(exchange)
    response = run_sync(server, call.name, *call.args, **call.kwargs)
    check_response(response, exchange)
    assert len(server.requests) == 1  # one attempt per call: the wire client never retries


@pytest.mark.anyio
@pytest.mark.parametrize("call", TABLE_CALLS, ids=[c.id for c in TABLE_CALLS])
@pytest.mark.parametrize("exchange", EXCHANGES, ids=EXCHANGE_IDS)
async def test_async_exchange(exchange: Exchange, call: Call) -> None:
    server = _server_for(exchange)
    response = await run_async(server, call.name, *call.args, **call.kwargs)
    check_response(response, exchange)
    assert len(server.requests) == 1


def test_transport_error_is_the_raised_exception() -> None:
    exc = httpx.ConnectError("refused")
    response = run_sync(Server(lambda r: exc), "get_reservation", "r-1")
    assert response.transport_error is exc


@pytest.mark.anyio
async def test_async_transport_error_is_the_raised_exception() -> None:
    exc = httpx.ReadTimeout("slow")
    response = await run_async(Server(lambda r: exc), "commit_reservation", "r-1", COMMIT)
    assert response.transport_error is exc
    assert response.status == -1


# --------------------------------------------------------------------------- traceparent


TRACED = [c for c in CALLS if c.id in ("create", "commit", "decide", "get")]


@pytest.mark.parametrize("call", TRACED, ids=[c.id for c in TRACED])
def test_sync_traceparent_is_passed_through(call: Call) -> None:
    server = Server(ok)
    run_sync(server, call.name, *call.args, traceparent=TRACEPARENT, **call.kwargs)
    assert server.last.headers["traceparent"] == TRACEPARENT


@pytest.mark.anyio
async def test_async_traceparent_is_passed_through() -> None:
    server = Server(ok)
    await run_async(server, "extend_reservation", "r-1", EXTEND, traceparent=TRACEPARENT)
    await run_async(server, "get_reservation", "r-1", traceparent=TRACEPARENT)
    assert [r.headers["traceparent"] for r in server.requests] == [TRACEPARENT, TRACEPARENT]


BAD_TRACEPARENTS = [
    "",
    "garbage",
    "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",  # upper case
    "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # zero trace id
    "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # zero parent id
    "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # unknown version
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\n",
]


@pytest.mark.parametrize("bad", BAD_TRACEPARENTS)
def test_sync_invalid_traceparent_raises_before_sending(bad: str) -> None:
    server = Server(ok)
    with pytest.raises(ValueError, match="traceparent"):
        run_sync(server, "create_reservation", CREATE, traceparent=bad)
    with pytest.raises(ValueError, match="traceparent"):
        run_sync(server, "get_reservation", "r-1", traceparent=bad)
    assert server.requests == []


@pytest.mark.anyio
@pytest.mark.parametrize("bad", BAD_TRACEPARENTS[:4])
async def test_async_invalid_traceparent_raises_before_sending(bad: str) -> None:
    server = Server(ok)
    with pytest.raises(ValueError, match="traceparent"):
        await run_async(server, "commit_reservation", "r-1", COMMIT, traceparent=bad)
    assert server.requests == []


# --------------------------------------------------------------------------- local validation before sending


LOCAL_ERRORS: list[tuple[str, tuple[Any, ...], dict[str, Any], type[Exception], str]] = [
    ("commit_reservation", ("", COMMIT), {}, ValueError, "reservation_id"),
    ("commit_reservation", ("x" * 129, COMMIT), {}, ValueError, "reservation_id"),
    ("get_reservation", (123,), {}, ValueError, "reservation_id"),
    ("commit_reservation", ("r-1", {"idempotency_key": "k", "x": float("nan")}), {}, ValueError, "JSON"),
    ("create_reservation", ("not a request",), {}, TypeError, "str"),
    ("list_reservations", (), {"bogus": 1}, ValueError, "bogus"),
    ("list_reservations", (), {"limit": 0}, ValueError, "limit must be between 1 and 200"),
    ("list_reservations", (), {"limit": 201}, ValueError, "limit must be between 1 and 200"),
    ("list_reservations", (), {"limit": "many"}, ValueError, "limit must be between 1 and 200"),
    ("list_reservations", (), {"limit": True}, ValueError, "limit must be between 1 and 200"),
    ("list_reservations", (), {"limit": -5}, ValueError, "limit must be between 1 and 200"),
    ("list_reservations", (), {"from_": dt.datetime(2024, 1, 1)}, ValueError, "timezone-aware"),
    ("list_reservations", (), {"tenant": 1.5}, ValueError, "tenant"),
    (
        "list_reservations",
        (),
        {"from_": dt.datetime(2024, 2, 1, tzinfo=UTC), "to": dt.datetime(2024, 1, 1, tzinfo=UTC)},
        ValueError,
        "from must not be later than to",
    ),
    ("list_reservations", (), {"from_": "yesterday", "to": "today"}, ValueError, "from must be an ISO 8601"),
    ("list_reservations", (), {"traceparent": TRACEPARENT}, ValueError, "unknown filter"),
    ("get_balances", (), {"tenant": "acme", "status": "ACTIVE"}, ValueError, "status"),
    ("get_balances", (), {"tenant": "acme", "limit": 500}, ValueError, "limit"),
]


@pytest.mark.parametrize(("name", "args", "kwargs", "exc", "match"), LOCAL_ERRORS)
def test_sync_local_validation_raises_before_sending(
    name: str, args: tuple[Any, ...], kwargs: dict[str, Any], exc: type[Exception], match: str
) -> None:
    server = Server(ok)
    with pytest.raises(exc, match=match):
        run_sync(server, name, *args, **kwargs)
    assert server.requests == []


@pytest.mark.anyio
@pytest.mark.parametrize(("name", "args", "kwargs", "exc", "match"), LOCAL_ERRORS)
async def test_async_local_validation_raises_before_sending(
    name: str, args: tuple[Any, ...], kwargs: dict[str, Any], exc: type[Exception], match: str
) -> None:
    server = Server(ok)
    with pytest.raises(exc, match=match):
        await run_async(server, name, *args, **kwargs)
    assert server.requests == []


BALANCES_MESSAGE = (
    "get_balances requires at least one subject filter (tenant, workspace, app, workflow, agent, or toolset)"
)


@pytest.mark.parametrize("filters", [{}, {"include_children": True, "limit": 10}, {"tenant": None}, {"tenant": "  "}])
def test_sync_get_balances_without_subject_filter(filters: dict[str, Any]) -> None:
    server = Server(ok)
    with pytest.raises(ValueError) as info:
        run_sync(server, "get_balances", **filters)
    assert str(info.value) == BALANCES_MESSAGE
    assert server.requests == []


@pytest.mark.anyio
async def test_async_get_balances_without_subject_filter() -> None:
    server = Server(ok)
    with pytest.raises(ValueError) as info:
        await run_async(server, "get_balances")
    assert str(info.value) == BALANCES_MESSAGE
    assert server.requests == []


# --------------------------------------------------------------------------- query parameters

QUERY_CASES: list[tuple[str, dict[str, Any], list[tuple[str, str]]]] = [
    (
        "list_reservations",
        {
            "tenant": "acme",
            "from_": dt.datetime(2024, 1, 1, 12, 0, tzinfo=UTC),
            "to": dt.datetime(2024, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            "include": ["metadata", "evidence"],
            "sort_dir": "desc",
            "cursor": "c-0",
            "workspace": None,  # omitted
            "app": "",  # blank: omitted
        },
        [
            ("tenant", "acme"),
            ("from", "2024-01-01T12:00:00+00:00"),
            ("to", "2024-01-02T00:00:00+02:00"),
            ("include", "metadata,evidence"),
            ("sort_dir", "desc"),
            ("cursor", "c-0"),
        ],
    ),
    (
        "list_reservations",
        {"from": "2024-01-01T00:00:00Z", "to": "2024-01-01T00:00:01Z", "idempotency_key": "k/1&x=y"},
        [("from", "2024-01-01T00:00:00Z"), ("to", "2024-01-01T00:00:01Z"), ("idempotency_key", "k/1&x=y")],
    ),
    ("list_reservations", {"limit": 1}, [("limit", "1")]),
    ("list_reservations", {"limit": "200"}, [("limit", "200")]),
    ("get_balances", {"agent": "bot", "include_children": False, "limit": 200}, [
        ("agent", "bot"), ("include_children", "false"), ("limit", "200")]),
    ("get_balances", {"toolset": "search", "cursor": "abc"}, [("toolset", "search"), ("cursor", "abc")]),
]


@pytest.mark.parametrize(("name", "filters", "expected"), QUERY_CASES)
def test_sync_query_params(name: str, filters: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    server = Server(ok)
    run_sync(server, name, **filters)
    assert server.last.url.params.multi_items() == expected
    assert server.last.method == "GET"


@pytest.mark.anyio
@pytest.mark.parametrize(("name", "filters", "expected"), QUERY_CASES)
async def test_async_query_params(name: str, filters: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    server = Server(ok)
    await run_async(server, name, **filters)
    assert server.last.url.params.multi_items() == expected


# --------------------------------------------------------------------------- pagination


def summary(rid: str) -> dict[str, Any]:
    return {
        "reservation_id": rid,
        "status": "ACTIVE",
        "subject": {"tenant": "acme"},
        "action": {"kind": "llm", "name": "x"},
        "reserved": {"unit": "TOKENS", "amount": 1},
        "created_at_ms": 1,
        "expires_at_ms": 2,
        "scope_path": "tenant:acme",
        "affected_scopes": ["tenant:acme"],
    }


def balance(scope: str) -> dict[str, Any]:
    return {"scope": scope, "scope_path": scope, "remaining": {"unit": "TOKENS", "amount": -3}}


class Pages:
    """Serves pages keyed by the request's cursor (None for the first page)."""

    def __init__(self, key: str, make_row: Callable[[str], dict[str, Any]], pages: dict[str | None, Any]) -> None:
        self.key = key
        self.make_row = make_row
        self.pages = pages
        self.server = Server(self.reply)

    def reply(self, request: httpx.Request) -> httpx.Response:
        rows, next_cursor, has_more = self.pages[request.url.params.get("cursor")]
        body: dict[str, Any] = {self.key: [self.make_row(r) for r in rows]}
        if next_cursor is not None:
            body["next_cursor"] = next_cursor
        if has_more is not None:
            body["has_more"] = has_more
        return httpx.Response(200, json=body)

    @property
    def cursors(self) -> list[str | None]:
        return [r.url.params.get("cursor") for r in self.server.requests]


THREE_PAGES = {None: (["a", "b"], "c1", True), "c1": (["c"], "c2", True), "c2": (["d"], None, False)}
REPEATING = {None: (["a"], "c1", True), "c1": (["b"], "c1", True)}
HAS_MORE_FALSE = {None: (["a"], "c1", False)}
NO_HAS_MORE = {None: (["a"], "c1", None), "c1": (["b"], None, None)}

PAGINATION = [
    ("three-pages", THREE_PAGES, ["a", "b", "c", "d"], [None, "c1", "c2"]),
    ("repeated-cursor", REPEATING, ["a", "b"], [None, "c1"]),
    ("has-more-false", HAS_MORE_FALSE, ["a"], [None]),
    ("no-has-more", NO_HAS_MORE, ["a", "b"], [None, "c1"]),
]


@pytest.mark.parametrize(("case", "pages", "rows", "cursors"), PAGINATION, ids=[p[0] for p in PAGINATION])
def test_sync_iter_reservations(case: str, pages: Any, rows: list[str], cursors: list[str | None]) -> None:
    served = Pages("reservations", summary, pages)
    with CyclesClient(config(), transport=httpx.MockTransport(served.server)) as client:
        got = list(client.iter_reservations(tenant="acme", limit=2))
    assert all(isinstance(r, ReservationSummary) for r in got)
    assert [r.reservation_id for r in got] == rows
    assert served.cursors == cursors
    for request in served.server.requests:
        assert request.url.params["tenant"] == "acme"
        assert request.url.params["limit"] == "2"
        assert len(request.url.params.get_list("cursor")) <= 1


@pytest.mark.anyio
@pytest.mark.parametrize(("case", "pages", "rows", "cursors"), PAGINATION, ids=[p[0] for p in PAGINATION])
async def test_async_iter_reservations(case: str, pages: Any, rows: list[str], cursors: list[str | None]) -> None:
    served = Pages("reservations", summary, pages)
    async with AsyncCyclesClient(config(), transport=httpx.MockTransport(served.server)) as client:
        got = [r async for r in client.iter_reservations(tenant="acme", limit=2)]
    assert [r.reservation_id for r in got] == rows
    assert served.cursors == cursors


@pytest.mark.parametrize(("case", "pages", "rows", "cursors"), PAGINATION, ids=[p[0] for p in PAGINATION])
def test_sync_iter_balances(case: str, pages: Any, rows: list[str], cursors: list[str | None]) -> None:
    served = Pages("balances", balance, pages)
    with CyclesClient(config(), transport=httpx.MockTransport(served.server)) as client:
        got = list(client.iter_balances(tenant="acme", include_children=True))
    assert all(isinstance(b, Balance) for b in got)
    assert [b.scope for b in got] == rows
    assert got[0].remaining.amount == -3
    assert served.cursors == cursors
    assert all(r.url.params["include_children"] == "true" for r in served.server.requests)


@pytest.mark.anyio
@pytest.mark.parametrize(("case", "pages", "rows", "cursors"), PAGINATION, ids=[p[0] for p in PAGINATION])
async def test_async_iter_balances(case: str, pages: Any, rows: list[str], cursors: list[str | None]) -> None:
    served = Pages("balances", balance, pages)
    async with AsyncCyclesClient(config(), transport=httpx.MockTransport(served.server)) as client:
        got = [b async for b in client.iter_balances(workspace="prod")]
    assert [b.scope for b in got] == rows
    assert served.cursors == cursors


def test_sync_iter_balances_validates_before_sending() -> None:
    server = Server(ok)
    with CyclesClient(config(), transport=httpx.MockTransport(server)) as client, pytest.raises(ValueError) as info:
        list(client.iter_balances())
    assert str(info.value) == BALANCES_MESSAGE
    assert server.requests == []


def _failing_second_page(failure: httpx.Response | BaseException) -> Server:
    def reply(request: httpx.Request) -> httpx.Response | BaseException:
        if request.url.params.get("cursor") is None:
            return httpx.Response(200, json={"reservations": [summary("a")], "next_cursor": "c1", "has_more": True})
        return failure

    return Server(reply)


def test_sync_iteration_error_pages_raise_typed() -> None:
    server = _failing_second_page(
        httpx.Response(410, json={"error": "RESERVATION_EXPIRED", "message": "gone", "request_id": "r"})
    )
    got: list[str] = []
    client = CyclesClient(config(), transport=httpx.MockTransport(server))
    with client, pytest.raises(ReservationExpiredError) as info:
        for row in client.iter_reservations(tenant="acme"):
            got.append(row.reservation_id)
    assert got == ["a"]
    assert info.value.status == 410
    assert info.value.request_id == "r"


def test_sync_iteration_transport_failure_raises_transport_error() -> None:
    cause = httpx.ConnectError("refused")
    server = _failing_second_page(cause)
    client = CyclesClient(config(), transport=httpx.MockTransport(server))
    with client, pytest.raises(CyclesTransportError) as info:
        list(client.iter_reservations(tenant="acme"))
    assert info.value.__cause__ is cause


@pytest.mark.anyio
async def test_async_iteration_failures_raise() -> None:
    server = _failing_second_page(httpx.Response(500, content=b"oops"))
    async with AsyncCyclesClient(config(), transport=httpx.MockTransport(server)) as client:
        with pytest.raises(CyclesProtocolError) as info:
            _ = [r async for r in client.iter_reservations(tenant="acme")]
    assert info.value.status == 500
    cause = httpx.ReadTimeout("slow")
    server = _failing_second_page(cause)
    async with AsyncCyclesClient(config(), transport=httpx.MockTransport(server)) as client:
        with pytest.raises(CyclesTransportError) as tinfo:
            _ = [r async for r in client.iter_reservations(tenant="acme")]
    assert tinfo.value.__cause__ is cause


# --------------------------------------------------------------------------- base_url prefix


@pytest.mark.parametrize("base", ["http://h/prefix", "http://h/prefix/"])
def test_sync_base_url_path_prefix_is_respected(base: str) -> None:
    server = Server(ok)
    cfg = config(base_url=base)
    run_sync(server, "commit_reservation", "a/b?c", COMMIT, cfg=cfg)
    run_sync(server, "list_reservations", tenant="acme", cfg=cfg)
    assert [raw_path(r) for r in server.requests] == [
        "/prefix/v1/reservations/a%2Fb%3Fc/commit",
        "/prefix/v1/reservations",
    ]
    assert all(r.url.host == "h" for r in server.requests)


@pytest.mark.anyio
async def test_async_base_url_path_prefix_is_respected() -> None:
    server = Server(ok)
    await run_async(server, "get_reservation", "r-1", cfg=config(base_url="https://h:8443/api/cycles"))
    assert raw_path(server.last) == "/api/cycles/v1/reservations/r-1"
    assert server.last.url.port == 8443
    assert server.last.url.scheme == "https"


@pytest.mark.parametrize("rid", [".", "..", "a/../b"])
def test_dot_segment_ids_do_not_change_the_route(rid: str) -> None:
    server = Server(ok)
    run_sync(server, "commit_reservation", rid, COMMIT, cfg=config(base_url="http://h/prefix"))
    path = raw_path(server.last)
    assert path.startswith("/prefix/v1/reservations/")
    assert path.endswith("/commit")
    assert path.count("/") == 5  # /prefix/v1/reservations/<one segment>/commit


# --------------------------------------------------------------------------- timeouts


def _timeouts(server: Server) -> list[dict[str, float]]:
    return [r.extensions["timeout"] for r in server.requests]


EXPECTED_TIMEOUT = {"connect": 1.5, "read": 7.0, "write": 7.0, "pool": 1.5}


def test_sync_connect_and_read_timeouts_reach_httpx() -> None:
    server = Server(ok)
    cfg = config(connect_timeout_ms=1500, read_timeout_ms=7000)
    run_sync(server, "create_reservation", CREATE, cfg=cfg)
    run_sync(server, "get_balances", tenant="acme", cfg=cfg)
    assert _timeouts(server) == [EXPECTED_TIMEOUT, EXPECTED_TIMEOUT]


@pytest.mark.anyio
async def test_async_connect_and_read_timeouts_reach_httpx() -> None:
    server = Server(ok)
    cfg = config(connect_timeout_ms=1500, read_timeout_ms=7000)
    await run_async(server, "extend_reservation", "r-1", EXTEND, cfg=cfg)
    await run_async(server, "list_reservations", cfg=cfg)
    assert _timeouts(server) == [EXPECTED_TIMEOUT, EXPECTED_TIMEOUT]


def test_default_timeouts_are_not_summed() -> None:
    server = Server(ok)
    run_sync(server, "get_reservation", "r-1")
    assert _timeouts(server) == [{"connect": 2.0, "read": 5.0, "write": 5.0, "pool": 2.0}]


def test_sync_deadline_tightens_the_attempt() -> None:
    server = Server(ok)
    with CyclesClient(config(), transport=httpx.MockTransport(server)) as client:
        client.send(rq.extend("r-1", EXTEND), deadline_ms=900)
        client.send(rq.extend("r-1", EXTEND), deadline_ms=60_000)
    tight, loose = _timeouts(server)
    assert tight["connect"] == pytest.approx(0.3)
    assert tight["read"] == pytest.approx(0.6)
    assert tight["connect"] + tight["read"] <= 0.9 + 1e-9
    assert loose == {"connect": 2.0, "read": 5.0, "write": 5.0, "pool": 2.0}


@pytest.mark.anyio
async def test_async_deadline_tightens_the_attempt() -> None:
    server = Server(ok)
    async with AsyncCyclesClient(config(), transport=httpx.MockTransport(server)) as client:
        response = await client.send(rq.extend("r-1", EXTEND), deadline_ms=900)
    assert response.status == 200
    (timeout,) = _timeouts(server)
    assert timeout["connect"] + timeout["read"] <= 0.9 + 1e-9


# --------------------------------------------------------------------------- lifecycle of the client objects


def test_client_requires_a_config() -> None:
    with pytest.raises(TypeError):
        CyclesClient({"base_url": BASE_URL})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        AsyncCyclesClient("http://x")  # type: ignore[arg-type]


def test_sync_client_close_and_reuse_of_config() -> None:
    server = Server(ok)
    cfg = config()
    client = CyclesClient(cfg, transport=httpx.MockTransport(server))
    assert client.config is cfg
    assert client.get_reservation("r-1").status == 200
    client.close()
    with pytest.raises(RuntimeError):
        client.get_reservation("r-1")
    assert len(server.requests) == 1


@pytest.mark.anyio
async def test_async_client_aclose() -> None:
    server = Server(ok)
    client = AsyncCyclesClient(config(), transport=httpx.MockTransport(server))
    assert (await client.get_reservation("r-1")).status == 200
    assert await client.flush() == 0
    await client.aclose()
    with pytest.raises(RuntimeError):
        await client.get_reservation("r-1")


def test_sync_flush_with_nothing_pending() -> None:
    with CyclesClient(config(), transport=httpx.MockTransport(Server(ok))) as client:
        assert client.flush() == 0
        assert client.flush(timeout_ms=0) == 0
        assert client.pending_settlements == 0


def test_api_key_never_in_repr_of_client_objects() -> None:
    server = Server(ok)
    response = run_sync(server, "get_reservation", "r-1")
    assert API_KEY not in repr(response)
    assert API_KEY not in repr(config())


@pytest.mark.anyio
async def test_async_deadline_bounds_a_hung_server() -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async with AsyncCyclesClient(config(), transport=httpx.MockTransport(hang)) as client:
        with anyio.fail_after(5):  # the test's own safety net, far above the 50 ms deadline
            response = await client.send(rq.extend("r-1", EXTEND), deadline_ms=50)
    assert response.status == -1
    assert isinstance(response.transport_error, httpx.TimeoutException)
    assert response.error_message is not None and "50 ms" in response.error_message
