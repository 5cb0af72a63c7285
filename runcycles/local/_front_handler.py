"""What the built-in HTTP front (:mod:`._front`) does with one parsed request, without the ASGI layer.

Health probes and ``/metrics`` go to :meth:`OpsApp.answer`; everything else to :meth:`App.handle`, inline on
an in-memory database (as the ASGI app does) or in a batch on a worker thread on a file database
(:class:`~._front_threads.Batches`, answered through a callback). Every request is counted in the server's
metrics like the ASGI app counts it. Responses are encoded here as HTTP/1.1 bytes.
"""

from __future__ import annotations

import email.utils
import http
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import unquote

import httptools

from ._base import LocalServerError
from ._batches import internal_error
from ._front_threads import Batches, ThreadPool
from ._http import App, HttpResponse
from ._metrics import route_template

if TYPE_CHECKING:
    from .server import LocalCyclesServer

logger = logging.getLogger("runcycles.local")

_STATUS_LINES = {int(s): f"HTTP/1.1 {int(s)} {s.phrase}\r\n" for s in http.HTTPStatus}


class Request:
    """One request as the front read it: method, raw target, headers (names as sent), body."""

    __slots__ = ("answer", "body", "headers", "keep_alive", "method", "target", "version")

    def __init__(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
        keep_alive: bool,
        version: str,
        answer: HttpResponse | None = None,
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.version = version
        self.answer = answer
        """A response decided by the front itself (a framing error, a body over the limit), if any."""


class Handler:
    """Answers requests for one :class:`LocalCyclesServer` (see the module doc)."""

    def __init__(self, server: LocalCyclesServer) -> None:
        self.app: App = server._app
        self._ops = server.asgi_app
        self._ops_paths = self._ops.ops_paths
        self._metrics = self._ops.metrics
        self._inline = self.app.env.ledger.in_memory
        self.pool = ThreadPool()
        """The worker threads of the batches on a file database (close it when the front stops)."""
        self._batches = Batches(self.app, self.pool)
        self._date = ""
        self._date_second = -1

    def error(self, status: int, message: str, request: Request | None = None) -> HttpResponse:
        """A JSON error answer with the server's correlation headers (for requests the front refuses)."""
        code = "INTERNAL_ERROR" if status in (500, 503) else "INVALID_REQUEST"
        method = request.method if request is not None else "GET"
        headers = request.headers if request is not None else []
        return self.app.handle(method, "/", "", headers, b"", error=LocalServerError(status, code, message))

    def too_large(self, method: str, headers: list[tuple[str, str]]) -> HttpResponse:
        """The 413 answer for a body over the limit."""
        return self.app.too_large(method, headers)

    def now(self, request: Request) -> HttpResponse | None:
        """The answer when it needs no waiting (the in-memory core), else ``None``: use :meth:`later`."""
        if not self._inline:
            return None
        path = _path_of(request.target)
        if path in self._ops_paths:
            return None
        started = time.perf_counter()
        response = self.app.handle(request.method, request.target, "", request.headers, request.body)
        self._observe(request.method, path, response[0], started)
        return response

    def submit(self, request: Request, done: Callable[[Request, HttpResponse], None]) -> bool:
        """Queue a request for the core's batches (a file database); ``done(request, response)`` is called on
        the loop with its answer. ``False`` (nothing done) when the request is for :meth:`later` instead."""
        path = _path_of(request.target)
        if self._inline or path in self._ops_paths:
            return False
        self._batches.submit(_Call(self, request, path, done))
        return True

    async def later(self, request: Request) -> HttpResponse:
        """The answer of a request that waits and was not :meth:`submit` ted: a health probe or ``/metrics``."""
        started = time.perf_counter()
        method, target = request.method, request.target
        path = _path_of(target)
        if path in self._ops_paths:
            response = await self._ops.answer(path, method)
        else:
            response = self.app.handle(method, target, "", request.headers, request.body)
        self._observe(method, path, response[0], started)
        return response

    def encode(self, request: Request, response: HttpResponse, close: bool) -> bytes:
        """The response as HTTP/1.1 bytes: no body for ``HEAD``; ``connection: close`` when ``close``."""
        status, headers, body = response
        lines = [_STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n"]
        lines.extend(f"{name}: {value}\r\n" for name, value in headers)
        lines.append(f"content-length: {len(body)}\r\ndate: {self._http_date()}\r\n")
        if close:
            lines.append("connection: close\r\n\r\n")
        elif request.version == "1.0":
            lines.append("connection: keep-alive\r\n\r\n")
        else:
            lines.append("\r\n")
        head = "".join(lines)
        # Header values come from the core; one with a line break would split the response (never sent).
        breaks = len(lines) + 1 + (close or request.version == "1.0")
        if head.count("\n") != breaks or head.count("\r") != breaks:
            logger.error("refused to send a response header with a line break (request %s)", request.method[:16])
            return self.encode(request, self.error(500, "Internal server error"), close)
        try:
            data = head.encode("latin-1")
        except UnicodeEncodeError:
            logger.error("refused to send a response header that is not latin-1")
            return self.encode(request, self.error(500, "Internal server error"), close)
        return data if request.method == "HEAD" else data + body

    def _observe(self, method: str, path: str, status: int, started: float) -> None:
        if self._metrics is not None:
            route = route_template(path, self._ops_paths)
            self._metrics.observe(method, route, status, time.perf_counter() - started)

    def _http_date(self) -> str:
        second = int(time.time())
        if second != self._date_second:
            self._date_second = second
            self._date = email.utils.formatdate(second, usegmt=True)
        return self._date


class _Call:
    """One request in the core's batches (a :class:`~._front_threads.Job`): ``App.handle`` on the worker
    thread, then its answer, counted in the metrics, to ``done`` on the loop."""

    __slots__ = ("_done", "_handler", "_path", "_request", "_started")

    def __init__(
        self, handler: Handler, request: Request, path: str, done: Callable[[Request, HttpResponse], None]
    ) -> None:
        self._handler, self._request, self._path, self._done = handler, request, path, done
        self._started = time.perf_counter()

    def __call__(self) -> HttpResponse:
        request = self._request
        return self._handler.app.handle(request.method, request.target, "", request.headers, request.body)

    def failed(self) -> HttpResponse:
        """The 500 answer, when the request's batch could not be committed."""
        return internal_error(self._handler.app, self._request.method, self._request.headers)()

    def answer(self, response: HttpResponse) -> None:
        """Count the request in the metrics and hand its response to the connection."""
        self._handler._observe(self._request.method, self._path, response[0], self._started)
        self._done(self._request, response)


def _path_of(target: str) -> str:
    """The path of a request target (percent-decoded only when it has escapes, as ASGI's ``path`` is)."""
    path = target.partition("?")[0]
    return unquote(path) if "%" in path else path


def origin_form(target: bytes) -> str:
    """The request target as ``/path?query`` (an absolute-form ``http://host/path`` is reduced to it)."""
    if target[:1] != b"/" and target != b"*":
        try:
            url = httptools.parse_url(target)
        except httptools.HttpParserInvalidURLError:
            return target.decode("latin-1")
        path = url.path or b"/"
        target = path + (b"?" + url.query if url.query else b"")
    return target.decode("latin-1")
