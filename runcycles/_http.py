"""The request/response plumbing both clients share: httpx options, per-attempt timeouts, one bounded send
(sync and async), and the senders of the background worker.

A send never raises for an HTTP error status or a transport failure: it returns a `CyclesResponse` (status -1
when nothing came back).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import httpx

from ._protocol import requests as rq
from ._slots import POOL_CONNECTIONS
from ._text import BodyReader, Scrubber
from ._version import __version__
from .config import CyclesConfig
from .response import CyclesResponse

__all__ = [
    "USER_AGENT",
    "attempt_timeouts",
    "http_options",
    "lean",
    "send_async",
    "send_sync",
    "worker_sender_for_async",
    "worker_sender_for_sync",
]

USER_AGENT = f"runcycles-python/{__version__}"

HttpT = TypeVar("HttpT", httpx.Client, httpx.AsyncClient)


def _timeout(config: CyclesConfig, deadline_ms: int | None = None) -> httpx.Timeout:
    connect = config.connect_timeout_ms
    read = config.read_timeout_ms
    if deadline_ms is not None:
        # A tighter whole-attempt budget: split it so that connect + read stays within it.
        connect = max(1, min(connect, deadline_ms // 3))
        read = max(1, min(read, deadline_ms - connect))
    return httpx.Timeout(connect=connect / 1000, read=read / 1000, write=read / 1000, pool=connect / 1000)


def _attempt(
    config: CyclesConfig, deadline_ms: int | None, default: tuple[int, httpx.Timeout] | None = None
) -> tuple[int, httpx.Timeout]:
    """The whole-attempt budget (the tighter of ``deadline_ms`` and connect + read) and httpx's timeouts
    (``default``: the client's precomputed answer for "no tighter deadline")."""
    budget = config.request_timeout_budget_ms
    if deadline_ms is None or deadline_ms >= budget:
        return default if default is not None else (budget, _timeout(config))
    deadline_ms = max(1, deadline_ms)
    return deadline_ms, _timeout(config, deadline_ms)


class _LeanCookies(httpx.Cookies):
    """The client's cookie jar, minus httpx's per-response jar work when a response sets no cookie (the
    standard library's cookie machinery costs about 0.1 ms per response even then)."""

    def extract_cookies(self, response: httpx.Response) -> None:
        """Load the cookies a response sets, if it sets any."""
        headers = response.headers
        if "set-cookie" in headers or "set-cookie2" in headers:
            super().extract_cookies(response)


def lean(http: HttpT) -> HttpT:
    # httpx keeps the jar in ``_cookies``; should that change, this only loses the shortcut.
    http._cookies = _LeanCookies(http.cookies)
    return http


def _deadline_exceeded(
    budget_ms: int, http: httpx.Client | httpx.AsyncClient | None = None, request: rq.HttpRequest | None = None
) -> httpx.TimeoutException:
    """The transport failure of a blown attempt deadline; it carries the request, so errors can name the URL."""
    message = f"attempt deadline of {budget_ms} ms exceeded"
    if http is None or request is None:
        return httpx.TimeoutException(message)
    sent = http.build_request(request.method, request.path, params=request.params or None)
    return httpx.TimeoutException(message, request=sent)


def _answer(reply: httpx.Response, reader: BodyReader, scrub: Scrubber) -> CyclesResponse:
    cut_at = reader.limit if reader.cut else None
    return rq.parse_response(
        reply.status_code, reply.headers, reader.content(), reply.reason_phrase, scrub=scrub, cut_at=cut_at
    )


async def send_async(
    http: httpx.AsyncClient,
    config: CyclesConfig,
    request: rq.HttpRequest,
    deadline_ms: int | None,
    *,
    scrub: Scrubber | None = None,
    default: tuple[int, httpx.Timeout] | None = None,
) -> CyclesResponse:
    budget_ms, timeout = _attempt(config, deadline_ms, default)
    if scrub is None:
        scrub = Scrubber(config.api_key)
    try:
        with anyio.fail_after(budget_ms / 1000):
            async with http.stream(
                request.method,
                request.path,
                params=request.params or None,
                content=request.content,
                headers=request.headers or None,
                timeout=timeout,
            ) as reply:
                reader = BodyReader(config.max_response_bytes, reply.headers.get("content-encoding"))
                if reply.is_stream_consumed:  # a transport that answered with a body already in memory
                    reader.feed(reply.content)
                else:
                    async for chunk in reply.aiter_raw():
                        if not reader.feed(chunk):
                            break
    except httpx.HTTPError as exc:
        return rq.transport_failure(exc, scrub=scrub)
    except TimeoutError:
        return rq.transport_failure(_deadline_exceeded(budget_ms, http, request), scrub=scrub)
    except OSError as exc:  # a transport that leaks a socket error: still "no answer", never a crash
        return rq.transport_failure(exc, scrub=scrub)
    return _answer(reply, reader, scrub)


def http_options(config: CyclesConfig) -> dict[str, Any]:
    """The keyword arguments of both clients' ``httpx`` client (and of the async worker's own)."""
    return {
        "base_url": config.base_url,
        "timeout": _timeout(config),
        "headers": {
            "X-Cycles-API-Key": config.api_key,
            "User-Agent": USER_AGENT,
            # Bodies are read against a byte cap; a compressed one could inflate past it in one chunk.
            "Accept-Encoding": "identity",
        },
        "follow_redirects": False,
        # Every connection of the pool may stay open between requests (httpx keeps 20 of its 100): a burst of
        # concurrent calls to the one server otherwise opens and closes a connection for most requests.
        "limits": httpx.Limits(
            max_connections=POOL_CONNECTIONS, max_keepalive_connections=POOL_CONNECTIONS, keepalive_expiry=5.0
        ),
    }


def attempt_timeouts(config: CyclesConfig) -> tuple[int, httpx.Timeout]:
    """What every request without a tighter deadline uses (a client builds it once)."""
    return config.request_timeout_budget_ms, _timeout(config)


def send_sync(
    http: httpx.Client,
    config: CyclesConfig,
    request: rq.HttpRequest,
    deadline_ms: int | None,
    *,
    scrub: Scrubber,
    default: tuple[int, httpx.Timeout] | None = None,
) -> CyclesResponse:
    """One blocking attempt, bounded as a whole by the attempt budget (see `CyclesClient.send`)."""
    from ._deadline import end_attempt, start_attempt  # imports httpcore: not at `import runcycles.client`

    budget_ms, timeout = _attempt(config, deadline_ms, default)
    deadline, attempt = start_attempt(budget_ms)
    try:
        with http.stream(
            request.method,
            request.path,
            params=request.params or None,
            content=request.content,
            headers=request.headers or None,
            timeout=timeout,
        ) as reply:
            reader = BodyReader(config.max_response_bytes, reply.headers.get("content-encoding"))
            chunks = (reply.content,) if reply.is_stream_consumed else reply.iter_raw()
            for chunk in chunks:
                if time.monotonic() > deadline:
                    raise _deadline_exceeded(budget_ms, http, request)
                if not reader.feed(chunk):
                    break
            if time.monotonic() > deadline:
                raise _deadline_exceeded(budget_ms, http, request)
    except httpx.HTTPError as exc:
        return rq.transport_failure(exc, scrub=scrub)
    except OSError as exc:  # a transport that leaks a socket error: still "no answer", never a crash
        return rq.transport_failure(exc, scrub=scrub)
    finally:
        end_attempt(attempt)
    return _answer(reply, reader, scrub)


def worker_sender_for_sync(send: Callable[[rq.HttpRequest, int | None], CyclesResponse]) -> Callable[[], Any]:
    """The background sender of a sync client: its blocking send, run off the worker's event loop."""

    def make() -> Callable[[rq.HttpRequest, int | None], Any]:
        limiter = anyio.CapacityLimiter(8)

        async def send_on_worker(request: rq.HttpRequest, deadline_ms: int | None) -> CyclesResponse:
            return await anyio.to_thread.run_sync(send, request, deadline_ms, limiter=limiter)

        return send_on_worker

    return make


def worker_sender_for_async(
    config: CyclesConfig,
    transport: httpx.AsyncBaseTransport | None,
    factory: Callable[[], httpx.AsyncBaseTransport] | None,
    options: dict[str, Any],
    send: Callable[..., Any] = send_async,
) -> Callable[[], Any]:
    """The background sender of an async client: its own `httpx.AsyncClient` in the worker's loop.

    A network transport's connection pool belongs to the event loop that opened it, so the worker never
    shares one: it builds its own (``factory``, else a default ``httpx.AsyncHTTPTransport``).
    """

    def make() -> Callable[[rq.HttpRequest, int | None], Any]:
        if factory is not None:
            own: httpx.AsyncBaseTransport | None = factory()
        elif transport is None or isinstance(transport, httpx.AsyncHTTPTransport):
            own = None
        else:
            own = transport
        http = httpx.AsyncClient(transport=own, **options)

        async def send_on_worker(request: rq.HttpRequest, deadline_ms: int | None) -> CyclesResponse:
            response: CyclesResponse = await send(http, config, request, deadline_ms)
            return response

        return send_on_worker

    return make
