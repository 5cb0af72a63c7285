"""The request/response plumbing both clients share: httpx options, per-attempt timeouts, one bounded send
(sync and async), and the senders of the background worker.

A send never raises for an HTTP error status or a transport failure: it returns a `CyclesResponse` (status -1
when nothing came back).
"""

from __future__ import annotations

import re
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
    "Route",
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

    stored = False  # whether a response ever set a cookie (requests then take httpx's own path, see `Route`)

    def extract_cookies(self, response: httpx.Response) -> None:
        """Load the cookies a response sets, if it sets any."""
        headers = response.headers
        if "set-cookie" in headers or "set-cookie2" in headers:
            self.stored = True
            super().extract_cookies(response)


def lean(http: HttpT) -> HttpT:
    # httpx keeps the jar in ``_cookies``; should that change, this only loses the shortcut.
    http._cookies = _LeanCookies(http.cookies)
    return http


_URL_CACHE = 64  # parsed URLs of paths that need quoting (a plain path's URL is made without parsing)
_PLAIN_PATH = re.compile(r"[A-Za-z0-9/._~-]*")  # needs no quoting: httpx would parse it back unchanged
_AUTO_HEADERS = frozenset({"host", "content-length", "transfer-encoding"})


class Route:
    """How one of our httpx clients sends a request, worked out once: its base URL's transport (the pool, or
    the proxy mounted for it), the URL prefix and the default headers.

    httpx's ``Client.send`` costs about 0.1 ms per request on top of the transport (merging the URL, headers,
    cookies and params of every request, the auth and redirect machinery, event hooks), for nothing our
    requests use: no auth, no redirects followed, no event hooks, no cookies. `build` makes the same
    ``httpx.Request`` as ``Client.build_request`` would (same URL, same headers in the same order, same body
    and timeouts), for the transport's ``handle_request``. A client that is closed, or that holds a cookie a
    response set, takes httpx's own path (`build` returns ``None``).
    """

    __slots__ = ("_base", "_cookies", "_head", "_http", "_prefix", "_urls", "transport")

    def __init__(self, http: httpx.Client | httpx.AsyncClient, transport: Any) -> None:
        self._http = http
        self._cookies = http.cookies
        self.transport = transport
        base = http.base_url
        self._prefix = str(base).rstrip("/")
        # What every request starts with: the Host header httpx puts first, then the client's headers.
        self._head = httpx.Headers([(b"Host", base.netloc), *http.headers.raw])
        self._urls: dict[str, httpx.URL] = {}
        self._base = _url_base(self._prefix)

    @classmethod
    def of(cls, http: httpx.Client | httpx.AsyncClient) -> Route | None:
        """The route of ``http``; ``None`` when it has auth or event hooks, or httpx changed (then requests
        take httpx's own path)."""
        find = getattr(http, "_transport_for_url", None)
        if find is None or http.auth is not None or any(http.event_hooks.values()):
            return None
        return cls(http, find(http.base_url))

    def build(self, request: rq.HttpRequest, timeout: httpx.Timeout) -> httpx.Request | None:
        """``request`` as httpx's client would build it (``None``: let the client do it)."""
        if self._http.is_closed or getattr(self._cookies, "stored", True):
            return None
        url = self._url(request.path)
        content = request.content
        extensions = {"timeout": timeout.as_dict()}
        if request.params or content is None or not _AUTO_HEADERS.isdisjoint(map(str.lower, request.headers)):
            headers = httpx.Headers(self._head)
            del headers["Host"]  # httpx adds it back, first
            headers.update(request.headers)
            return httpx.Request(
                request.method, url, params=request.params or None, content=content, headers=headers,
                extensions=extensions,
            )
        # The headers and stream httpx would derive from ``content=`` bytes, without deriving them per request.
        headers = httpx.Headers(self._head)
        if request.headers:
            headers.update(request.headers)
        headers["Content-Length"] = str(len(content))
        sent = httpx.Request(
            request.method, url, headers=headers, stream=httpx.ByteStream(content), extensions=extensions
        )
        sent.read()
        return sent

    def _url(self, path: str) -> httpx.URL:
        url = self._urls.get(path)
        if url is not None:
            return url
        base = self._base
        if base is not None and _PLAIN_PATH.fullmatch(path):
            url = base(path)
        else:
            url = httpx.URL(self._prefix + path)
            if len(self._urls) >= _URL_CACHE:
                self._urls.clear()
            self._urls[path] = url
        return url


def _url_base(prefix: str) -> Callable[[str], httpx.URL] | None:
    """A maker of ``httpx.URL(prefix + path)`` for paths that need no quoting, without parsing each one (httpx
    parses and validates every URL component again); ``None`` when this httpx's URL is not built the way it
    expects, checked on a sample (then every URL is parsed)."""
    base = httpx.URL(prefix)
    reference: Any = getattr(base, "_uri_reference", None)
    replace = getattr(reference, "_replace", None)
    if replace is None or reference.query is not None or reference.fragment is not None:
        return None
    root = reference.path.rstrip("/")

    def make(path: str) -> httpx.URL:
        url = httpx.URL.__new__(httpx.URL)
        url._uri_reference = replace(path=root + path)
        return url

    try:
        sample = "/v1/reservations/r-1.a_b~c/commit"
        made, parsed = make(sample), httpx.URL(prefix + sample)
        if made != parsed or str(made) != str(parsed) or made.raw_path != parsed.raw_path:
            return None
    except Exception:  # another httpx: parse every URL
        return None
    return make


def _sent_as(exc: BaseException, sent: httpx.Request | None) -> None:
    """Give a transport error the request it failed, as httpx's client does."""
    if sent is not None and isinstance(exc, httpx.RequestError):
        try:
            exc.request  # noqa: B018 - raises while unset
        except RuntimeError:
            exc.request = sent


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


def _own_path(request: rq.HttpRequest, timeout: httpx.Timeout) -> dict[str, Any]:
    """The keyword arguments of httpx's own ``stream(method, path, ...)`` for ``request``."""
    return {
        "params": request.params or None,
        "content": request.content,
        "headers": request.headers or None,
        "timeout": timeout,
    }


def _keep_cookies(http: httpx.Client | httpx.AsyncClient, reply: httpx.Response) -> None:
    """Give the client's jar the cookies a routed response sets, as httpx's own path does."""
    if "set-cookie" in reply.headers or "set-cookie2" in reply.headers:
        http.cookies.extract_cookies(reply)


def _read_sync(
    reply: httpx.Response, config: CyclesConfig, deadline: float, fail: Callable[[], httpx.TimeoutException]
) -> BodyReader:
    reader = BodyReader(config.max_response_bytes, reply.headers.get("content-encoding"))
    chunks = (reply.content,) if reply.is_stream_consumed else reply.iter_raw()
    for chunk in chunks:
        if time.monotonic() > deadline:
            raise fail()
        if not reader.feed(chunk):
            break
    if time.monotonic() > deadline:
        raise fail()
    return reader


async def _read_async(reply: httpx.Response, config: CyclesConfig) -> BodyReader:
    reader = BodyReader(config.max_response_bytes, reply.headers.get("content-encoding"))
    if reply.is_stream_consumed:  # a transport that answered with a body already in memory
        reader.feed(reply.content)
    else:
        async for chunk in reply.aiter_raw():
            if not reader.feed(chunk):
                break
    return reader


async def send_async(
    http: httpx.AsyncClient,
    config: CyclesConfig,
    request: rq.HttpRequest,
    deadline_ms: int | None,
    *,
    scrub: Scrubber | None = None,
    default: tuple[int, httpx.Timeout] | None = None,
    route: Route | None = None,
) -> CyclesResponse:
    """One attempt, bounded as a whole by the attempt budget (see `AsyncCyclesClient.send`); ``route``: send
    through it (see `Route`) rather than through ``http``'s own request path."""
    budget_ms, timeout = _attempt(config, deadline_ms, default)
    if scrub is None:
        scrub = Scrubber(config.api_key)
    sent = None if route is None else route.build(request, timeout)
    try:
        with anyio.fail_after(budget_ms / 1000):
            if sent is not None:
                reply = await route.transport.handle_async_request(sent)  # type: ignore[union-attr]
                try:
                    reply.request = sent
                    _keep_cookies(http, reply)
                    reader = await _read_async(reply, config)
                finally:
                    await reply.aclose()
            else:
                async with http.stream(request.method, request.path, **_own_path(request, timeout)) as reply:
                    reader = await _read_async(reply, config)
    except httpx.HTTPError as exc:
        _sent_as(exc, sent)
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
    route: Route | None = None,
) -> CyclesResponse:
    """One blocking attempt, bounded as a whole by the attempt budget (see `CyclesClient.send`); ``route``:
    send through it (see `Route`) rather than through ``http``'s own request path."""
    from ._deadline import end_attempt, start_attempt  # imports httpcore: not at `import runcycles.client`

    budget_ms, timeout = _attempt(config, deadline_ms, default)
    sent = None if route is None else route.build(request, timeout)
    deadline, attempt = start_attempt(budget_ms)

    def fail() -> httpx.TimeoutException:
        return _deadline_exceeded(budget_ms, http, request)

    try:
        if sent is not None:
            reply = route.transport.handle_request(sent)  # type: ignore[union-attr]
            try:
                reply.request = sent
                _keep_cookies(http, reply)
                reader = _read_sync(reply, config, deadline, fail)
            finally:
                reply.close()
        else:
            with http.stream(request.method, request.path, **_own_path(request, timeout)) as reply:
                reader = _read_sync(reply, config, deadline, fail)
    except httpx.HTTPError as exc:
        _sent_as(exc, sent)
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
            from ._idle_check import default_async_transport  # imports httpcore: on use only

            own = default_async_transport()
        else:
            own = transport
        http = lean(httpx.AsyncClient(transport=own, **options))
        route = Route.of(http)

        async def send_on_worker(request: rq.HttpRequest, deadline_ms: int | None) -> CyclesResponse:
            response: CyclesResponse = await send(http, config, request, deadline_ms, route=route)
            return response

        return send_on_worker

    return make
