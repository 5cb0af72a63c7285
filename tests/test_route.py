"""Requests go straight to the transport of the client's base URL (`_http.Route`), built exactly as httpx's
client would build them, and take httpx's own path when that would differ (closed client, cookies)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from runcycles import AsyncCyclesClient, CyclesClient, CyclesConfig
from runcycles._http import Route, http_options, lean
from runcycles._protocol import requests as rq

KEY = "k" * 20


def _config(base_url: str = "http://cycles.test") -> CyclesConfig:
    return CyclesConfig(base_url=base_url, api_key=KEY, tenant="acme", journal_enabled=False)


def _requests() -> list[rq.HttpRequest]:
    create = rq.create_reservation(
        {
            "idempotency_key": "key-1",
            "subject": {"tenant": "acme"},
            "action": {"kind": "llm.completion", "name": "x"},
            "estimate": {"unit": "TOKENS", "amount": 5},
        },
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    commit = rq.commit("r/with space?#and%", {"idempotency_key": "key-2", "actual": {"unit": "TOKENS", "amount": 3}})
    plain = rq.commit("r-1.a_b~c", {"idempotency_key": "key-3", "actual": {"unit": "TOKENS", "amount": 3}})
    listing = rq.list_reservations({"tenant": "a b&c", "limit": 5})
    # A header the client already sets by default: replaced, not sent twice.
    colliding = rq.HttpRequest(
        operation=create.operation, method="POST", path="/v1/events", headers={"user-agent": "mine/1"}, content=b"{}"
    )
    return [create, commit, plain, listing, colliding]


def _same(built: httpx.Request, expected: httpx.Request) -> None:
    assert built.method == expected.method
    assert str(built.url) == str(expected.url)
    assert built.url.raw_path == expected.url.raw_path
    assert built.headers.multi_items() == expected.headers.multi_items()
    assert built.read() == expected.read()
    assert built.extensions == expected.extensions


@pytest.mark.parametrize("base_url", ["http://cycles.test", "http://cycles.test:8080/prefix", "https://h.test/a/b/"])
def test_a_routed_request_is_the_request_httpx_builds(base_url: str) -> None:
    config = _config(base_url)
    http = lean(httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200)), **http_options(config)))
    route = Route.of(http)
    assert route is not None
    timeout = httpx.Timeout(connect=1.5, read=2.0, write=2.0, pool=1.5)
    for request in _requests():
        built = route.build(request, timeout)
        assert built is not None
        expected = http.build_request(
            request.method, request.path, params=request.params or None, content=request.content,
            headers=request.headers or None, timeout=timeout,
        )
        _same(built, expected)
        _same(route.build(request, timeout), expected)  # type: ignore[arg-type]  (the cached URL)


def _no_client_send(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("httpx's client path was taken")

    monkeypatch.setattr(httpx.Client, "send", refuse)
    monkeypatch.setattr(httpx.AsyncClient, "send", refuse)


def _answer(seen: list[httpx.Request]) -> Any:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"balances": []})

    return handle


def test_sync_requests_skip_httpx_client_send(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_client_send(monkeypatch)
    seen: list[httpx.Request] = []
    with CyclesClient(_config(), transport=httpx.MockTransport(_answer(seen))) as client:
        response = client.get_balances(tenant="acme")
    assert response.is_success
    assert str(seen[0].url) == "http://cycles.test/v1/balances?tenant=acme"
    assert seen[0].headers["x-cycles-api-key"] == KEY


@pytest.mark.anyio
async def test_async_requests_skip_httpx_client_send(anyio_backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_client_send(monkeypatch)
    seen: list[httpx.Request] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        return _answer(seen)(request)  # type: ignore[no-any-return]

    async with AsyncCyclesClient(_config(), transport=httpx.MockTransport(handle)) as client:
        response = await client.get_balances(tenant="acme")
    assert response.is_success
    assert str(seen[0].url) == "http://cycles.test/v1/balances?tenant=acme"


def test_a_transport_error_names_the_request_it_failed() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")  # no request attached, as a transport raises it

    with CyclesClient(_config(), transport=httpx.MockTransport(refuse)) as client:
        response = client.get_balances(tenant="acme")
    assert response.status == -1
    assert isinstance(response.transport_error, httpx.ConnectError)
    assert str(response.transport_error.request.url) == "http://cycles.test/v1/balances?tenant=acme"


@pytest.mark.anyio
async def test_an_async_transport_error_names_the_request_it_failed(anyio_backend: str) -> None:
    async def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow")

    async with AsyncCyclesClient(_config(), transport=httpx.MockTransport(refuse)) as client:
        response = await client.get_balances(tenant="acme")
    assert response.status == -1
    assert isinstance(response.transport_error, httpx.ReadTimeout)
    assert str(response.transport_error.request.url) == "http://cycles.test/v1/balances?tenant=acme"


def test_a_proxy_from_the_environment_is_the_route(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.test:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    http = httpx.Client(**http_options(_config()))
    route = Route.of(http)
    assert route is not None
    assert route.transport is not http._transport
    assert route.transport is http._transport_for_url(http.base_url)
    http.close()


def test_a_closed_client_fails_as_httpx_does() -> None:
    client = CyclesClient(_config(), transport=httpx.MockTransport(lambda r: httpx.Response(200, json={})))
    client.close()
    with pytest.raises(RuntimeError, match="closed"):
        client.get_balances(tenant="acme")


def test_clients_with_auth_or_hooks_have_no_route() -> None:
    assert Route.of(httpx.Client(auth=("u", "p"))) is None
    assert Route.of(httpx.Client(event_hooks={"request": [lambda r: None]})) is None
    assert Route.of(httpx.Client()) is not None
