"""Unit tests for the fault-injection transports (tests/faults.py), against a counting stub server."""

from __future__ import annotations

import json
import threading
from typing import Any

import anyio
import httpx
import pytest
from faults import AsyncFaultyTransport, FaultPlan, FaultyTransport, operation_of

pytestmark = pytest.mark.timeout(30)


class Stub:
    """A stand-in server: counts what it applied, answers 200 with a JSON body (works sync and async)."""

    def __init__(self) -> None:
        self.applied: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.applied.append((request.method, request.url.path))
        body = {"status": "COMMITTED", "charged": {"unit": "TOKENS", "amount": 5}, "pad": "x" * 40}
        return httpx.Response(200, json=body, headers={"x-request-id": "real", "x-cycles-tenant": "acme"})


@pytest.fixture
def stub() -> Stub:
    return Stub()


@pytest.fixture
def sync(stub: Stub) -> tuple[FaultyTransport, httpx.Client]:
    transport = FaultyTransport(httpx.MockTransport(stub))
    return transport, httpx.Client(transport=transport, base_url="http://t")


def commit(client: httpx.Client, key: str = "k1", rid: str = "r1") -> httpx.Response:
    return client.post(
        f"/v1/reservations/{rid}/commit",
        json={"idempotency_key": key, "actual": {"unit": "TOKENS", "amount": 5}},
        headers={"X-Idempotency-Key": key},
    )


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/v1/reservations", "create"),
        ("GET", "/v1/reservations", "list"),
        ("GET", "/v1/reservations?tenant=a", "list"),
        ("GET", "/v1/reservations/abc", "get"),
        ("POST", "/v1/reservations/abc/commit", "commit"),
        ("POST", "/v1/reservations/abc/release", "release"),
        ("POST", "/v1/reservations/a%2Fb/extend", "extend"),
        ("POST", "/v1/events", "event"),
        ("GET", "/v1/events", "other"),
        ("POST", "/v1/decide", "decide"),
        ("GET", "/v1/balances", "balances"),
        ("POST", "/v1/admin/budgets", "other"),
        ("POST", "/v1/reservations/abc/other", "other"),
        ("DELETE", "/v1/reservations/abc", "other"),
        ("GET", "/health", "other"),
    ],
)
def test_operation_of(method: str, path: str, expected: str) -> None:
    assert operation_of(method, path) == expected


def test_unknown_operation_and_bad_times_are_refused() -> None:
    plan = FaultPlan()
    with pytest.raises(ValueError, match="unknown operation"):
        plan.on("comit")
    with pytest.raises(ValueError, match="times"):
        plan.on("commit", times=0).status(500)


def test_no_rule_forwards_and_logs_everything(sync: tuple[FaultyTransport, httpx.Client], stub: Stub) -> None:
    faults, client = sync
    response = commit(client)
    assert response.status_code == 200
    assert response.json()["charged"]["amount"] == 5
    assert response.headers["x-request-id"] == "real"
    assert stub.applied == [("POST", "/v1/reservations/r1/commit")]
    (entry,) = faults.log
    assert entry.operation == "commit"
    assert entry.method == "POST"
    assert entry.path == "/v1/reservations/r1/commit"
    assert entry.body == {"idempotency_key": "k1", "actual": {"unit": "TOKENS", "amount": 5}}
    assert entry.headers["x-idempotency-key"] == "k1"
    assert entry.idempotency_key == "k1"
    assert entry.reservation_id == "r1"
    assert entry.fault is None and entry.forwarded and entry.status == 200 and entry.error is None


def test_rules_apply_in_order_and_count(sync: tuple[FaultyTransport, httpx.Client], stub: Stub) -> None:
    faults, client = sync
    faults.on("commit", times=2).status(500)
    faults.on("commit").status(502)
    faults.on("release").status(401)
    statuses = [commit(client).status_code for _ in range(4)]
    assert statuses == [500, 500, 502, 200]
    assert len(stub.applied) == 1  # the injected statuses never reached the server
    assert [e.fault for e in faults.log] == ["status_500", "status_500", "status_502", None]
    assert [r.fault.name for r in faults.unused()] == ["status_401"]


def test_forever_rule(sync: tuple[FaultyTransport, httpx.Client], stub: Stub) -> None:
    faults, client = sync
    faults.on("commit", times=None).status(503)
    assert [commit(client).status_code for _ in range(5)] == [503] * 5
    assert stub.applied == []
    assert faults.unused() == []


def test_rule_for_several_operations(sync: tuple[FaultyTransport, httpx.Client]) -> None:
    faults, client = sync
    faults.on(["commit", "event"], times=2).status(500)
    assert client.post("/v1/events", json={"idempotency_key": "e"}).status_code == 500
    assert commit(client).status_code == 500
    assert commit(client).status_code == 200


def test_default_error_bodies(sync: tuple[FaultyTransport, httpx.Client]) -> None:
    faults, client = sync
    faults.on("commit").status(410)
    faults.on("commit").status(409)
    faults.on("commit").status(401)
    faults.on("commit").status(500)
    faults.on("commit").status(502)
    codes = [commit(client).json()["error"] for _ in range(4)]
    assert codes == ["RESERVATION_EXPIRED", "RESERVATION_FINALIZED", "UNAUTHORIZED", "INTERNAL_ERROR"]
    gateway = commit(client)
    assert gateway.status_code == 502
    with pytest.raises(ValueError):
        gateway.json()


def test_status_with_body_headers_and_rate_limit(sync: tuple[FaultyTransport, httpx.Client]) -> None:
    faults, client = sync
    faults.on("commit").status(409, body={"error": "BUDGET_EXCEEDED", "message": "m", "request_id": "q"},
                                 headers={"X-Extra": "1"})
    faults.on("commit").rate_limited(retry_after=3)
    faults.on("commit").rate_limited()
    first = commit(client)
    assert first.json()["error"] == "BUDGET_EXCEEDED" and first.headers["x-extra"] == "1"
    limited = commit(client)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "3"
    assert limited.json()["error"] == "LIMIT_EXCEEDED"
    bare = commit(client)
    assert bare.status_code == 429 and "retry-after" not in bare.headers


def test_status_forwarded_is_applied(sync: tuple[FaultyTransport, httpx.Client], stub: Stub) -> None:
    faults, client = sync
    faults.on("commit").status(500, forward=True)
    assert commit(client).status_code == 500
    assert len(stub.applied) == 1


@pytest.mark.parametrize(
    ("name", "exc", "applied"),
    [
        ("connect_error", httpx.ConnectError, 0),
        ("read_timeout", httpx.ReadTimeout, 0),
        ("lost_response", httpx.ReadTimeout, 1),
        ("reset", httpx.RemoteProtocolError, 1),
    ],
)
def test_transport_faults(
    sync: tuple[FaultyTransport, httpx.Client], stub: Stub, name: str, exc: type[Exception], applied: int
) -> None:
    faults, client = sync
    getattr(faults.on("commit"), name)()
    with pytest.raises(exc):
        commit(client)
    assert len(stub.applied) == applied
    entry = faults.log[0]
    assert entry.status is None and entry.error == exc.__name__ and entry.forwarded is bool(applied)
    assert commit(client).status_code == 200  # the rule is used up


def test_reset_as_connect_error(sync: tuple[FaultyTransport, httpx.Client], stub: Stub) -> None:
    faults, client = sync
    faults.on("commit").reset("connect")
    with pytest.raises(httpx.ConnectError):
        commit(client)
    assert len(stub.applied) == 1
    with pytest.raises(ValueError):
        faults.on("commit").reset("nope")


def test_truncated_keeps_status_cuts_body(sync: tuple[FaultyTransport, httpx.Client], stub: Stub) -> None:
    faults, client = sync
    faults.on("commit").truncated()
    response = commit(client)
    assert response.status_code == 200
    assert len(stub.applied) == 1
    full = json.dumps(stub(httpx.Request("GET", "http://t/")).json()).encode()
    assert 0 < len(response.content) < len(full)
    with pytest.raises(ValueError):
        json.loads(response.content)


def test_body_replaces_or_transforms(sync: tuple[FaultyTransport, httpx.Client], stub: Stub) -> None:
    faults, client = sync
    faults.on("commit").body(200, lambda real: {k: v for k, v in real.items() if k != "charged"})
    faults.on("commit").body(200, {"status": "WRONG"})
    faults.on("commit").body(202, b"")
    faults.on("commit").body(204, None, forward=False)
    dropped = commit(client)
    assert dropped.status_code == 200 and "charged" not in dropped.json() and dropped.json()["status"] == "COMMITTED"
    assert commit(client).json() == {"status": "WRONG"}
    accepted = commit(client)
    assert accepted.status_code == 202 and accepted.content == b""
    assert commit(client).status_code == 204
    assert len(stub.applied) == 3  # the last one was not forwarded


def test_passthrough_takes_a_place_in_the_order(sync: tuple[FaultyTransport, httpx.Client]) -> None:
    faults, client = sync
    faults.on("extend").passthrough()
    faults.on("extend").connect_error()

    def extend() -> httpx.Response:
        return client.post("/v1/reservations/r/extend", json={"idempotency_key": "x", "extend_by_ms": 1000})

    assert extend().status_code == 200
    with pytest.raises(httpx.ConnectError):
        extend()
    assert extend().status_code == 200


def test_sequence_names_same_key_retries(sync: tuple[FaultyTransport, httpx.Client]) -> None:
    faults, client = sync
    client.post("/v1/reservations", json={"idempotency_key": "c1"}, headers={"X-Idempotency-Key": "c1"})
    client.post("/v1/reservations", json={"idempotency_key": "c1"}, headers={"X-Idempotency-Key": "c1"})
    commit(client, key="k")
    commit(client, key="k")
    client.post("/v1/events", json={"idempotency_key": "k"})
    client.get("/v1/reservations/r1")
    client.post("/v1/admin/tenants", json={})
    assert faults.sequence() == ["create", "create_same_key", "commit", "commit_same_key", "event_same_key", "get"]
    assert faults.sequence(only=["commit", "event"]) == ["commit", "commit_same_key", "event_same_key"]
    assert faults.ops() == ["create", "create", "commit", "commit", "event", "get"]
    assert faults.ops(include_other=True)[-1] == "other"
    assert faults.keys("commit") == ["k", "k"]
    assert faults.count("create") == 2
    faults.clear_log()
    assert faults.log == []


def test_clear_rules(sync: tuple[FaultyTransport, httpx.Client]) -> None:
    faults, client = sync
    faults.on("commit", times=None).status(500)
    faults.clear_rules()
    assert commit(client).status_code == 200


def test_thread_safe_counting(stub: Stub) -> None:
    faults = FaultyTransport(httpx.MockTransport(stub))
    faults.on("commit", times=25).status(500)
    client = httpx.Client(transport=faults, base_url="http://t")
    results: list[int] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        for i in range(10):
            code = commit(client, key=f"{n}-{i}").status_code
            with lock:
                results.append(code)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results).count(500) == 25
    assert results.count(200) == 75
    assert len(stub.applied) == 75
    assert len(faults.log) == 100
    assert len({e.idempotency_key for e in faults.log}) == 100


def test_wait_for_sync_wakes_on_request(stub: Stub) -> None:
    faults = FaultyTransport(httpx.MockTransport(stub))
    client = httpx.Client(transport=faults, base_url="http://t")
    worker = threading.Thread(target=lambda: [commit(client, key=f"k{i}") for i in range(3)])
    worker.start()
    faults.wait_for_sync(lambda f: f.count("commit") == 3 and f.log[-1].status is not None, timeout=10)
    worker.join()
    with pytest.raises(TimeoutError):
        faults.wait_for_sync(lambda f: f.count("commit") > 3, timeout=0.05)


@pytest.mark.anyio
async def test_async_transport_shares_the_engine(stub: Stub) -> None:
    faults = AsyncFaultyTransport(httpx.MockTransport(stub))
    faults.on("commit").lost_response()
    faults.on("commit").body(200, {"status": "WRONG"})
    faults.on("create").connect_error()
    async with httpx.AsyncClient(transport=faults, base_url="http://t") as client:
        body: dict[str, Any] = {"idempotency_key": "k", "actual": {"unit": "TOKENS", "amount": 5}}
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/v1/reservations/r/commit", json=body, headers={"X-Idempotency-Key": "k"})
        assert (await client.post("/v1/reservations/r/commit", json=body)).json() == {"status": "WRONG"}
        with pytest.raises(httpx.ConnectError):
            await client.post("/v1/reservations", json={"idempotency_key": "c"})
        assert (await client.post("/v1/reservations/r/commit", json=body)).status_code == 200
    assert faults.sequence() == ["commit", "commit_same_key", "create", "commit_same_key"]
    assert len(stub.applied) == 3
    assert faults.log[0].body == body


@pytest.mark.anyio
async def test_async_wait_for(stub: Stub) -> None:
    faults = AsyncFaultyTransport(httpx.MockTransport(stub))
    async with httpx.AsyncClient(transport=faults, base_url="http://t") as client, anyio.create_task_group() as tg:

        async def later() -> None:
            await anyio.sleep(0.01)
            await client.post("/v1/events", json={"idempotency_key": "e"})

        tg.start_soon(later)
        await faults.wait_for(lambda f: f.count("event") == 1)
    with pytest.raises(TimeoutError):
        await faults.wait_for(lambda f: f.count("event") == 2, timeout=0.02)
