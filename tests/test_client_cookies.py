"""The clients keep httpx's cookie behaviour but skip the cookie-jar work for responses that set none."""

from __future__ import annotations

import http.cookiejar

import httpx
import pytest

from runcycles import AsyncCyclesClient, CyclesClient, CyclesConfig

CONFIG = CyclesConfig(base_url="http://cycles.test", api_key="k" * 20, tenant="acme", journal_enabled=False)


def _handler(seen: list[str | None]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("cookie"))
        headers = {"set-cookie": "lb=node-7; Path=/"} if len(seen) == 1 else {}
        return httpx.Response(200, json={"balances": []}, headers=headers)

    return httpx.MockTransport(handle)


def _count_jar_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    original = http.cookiejar.CookieJar.extract_cookies

    def counting(self: http.cookiejar.CookieJar, response: object, request: object) -> None:
        calls[0] += 1
        original(self, response, request)  # type: ignore[arg-type]

    monkeypatch.setattr(http.cookiejar.CookieJar, "extract_cookies", counting)
    return calls


def test_sync_cookie_set_is_sent_back_and_cookieless_responses_skip_the_jar(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_jar_calls(monkeypatch)
    seen: list[str | None] = []
    with CyclesClient(CONFIG, transport=_handler(seen)) as client:
        for _ in range(3):
            assert client.get_balances(tenant="acme").is_success
    assert seen == [None, "lb=node-7", "lb=node-7"]
    assert calls[0] == 1


@pytest.mark.anyio
async def test_async_cookie_set_is_sent_back_and_cookieless_responses_skip_the_jar(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_jar_calls(monkeypatch)
    seen: list[str | None] = []
    async with AsyncCyclesClient(CONFIG, transport=_handler(seen)) as client:
        for _ in range(3):
            assert (await client.get_balances(tenant="acme")).is_success
    assert seen == [None, "lb=node-7", "lb=node-7"]
    assert calls[0] == 1
