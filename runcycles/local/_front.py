"""The built-in HTTP/1.1 server of ``runcycles serve``: ``asyncio.Protocol`` + ``httptools``, no ASGI layer.

uvicorn and the ASGI shell cost about twice the server core per request; this front parses with the same
``httptools`` parser uvicorn uses and calls the core directly (:mod:`._front_handler`). It keeps the
hardening a public-facing server needs:

* framing: ``httptools`` (llhttp, strict) refuses Content-Length with Transfer-Encoding, duplicate or invalid
  Content-Length and malformed requests: 400 and close. A transfer coding other than ``chunked`` is 501.
  Chunked bodies are decoded and counted as they stream.
* bounds: the request head (line and headers) is at most :attr:`FrontLimits.max_head_bytes` (else 431), the
  body at most the server's ``max_body_bytes`` (413, refused on a declared length before the body is read);
  at most :attr:`FrontLimits.max_pipelined` requests wait per connection (reading pauses beyond, and while
  the client does not read its responses); at most :attr:`FrontLimits.max_connections` connections (503).
* time: a connection idle longer than :attr:`FrontLimits.keep_alive_timeout` is closed; a request (head and
  body) must arrive within :attr:`FrontLimits.request_timeout` of its first byte (else 408 and close: slow
  clients cannot hold connections); a client not reading its responses for that long is disconnected.
* HTTP/1.1 keep-alive and HTTP/1.0 (keep-alive only when asked), pipelined requests answered in order,
  ``Connection: close`` honoured, ``Expect: 100-continue`` answered, ``HEAD`` without a body.
* graceful stop (:meth:`Front.serve` returns after ``stop`` is set): the listener closes, idle connections
  close, requests in progress are answered (with ``connection: close``) within
  :attr:`FrontLimits.shutdown_timeout`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
from typing import TYPE_CHECKING, Any

import attrs
import httptools

from ._front_handler import Handler, Request, origin_form
from ._http import HttpResponse

if TYPE_CHECKING:
    from .server import LocalCyclesServer

logger = logging.getLogger("runcycles.local")


@attrs.frozen
class FrontLimits:
    """Bounds and timeouts of the built-in HTTP front (seconds, bytes, counts)."""

    max_connections: int = 1000
    """Open connections beyond this are answered 503 and closed."""
    max_head_bytes: int = 64 * 1024
    """Request line and headers of one request (431 above)."""
    max_pipelined: int = 16
    """Requests read ahead on one connection before reading pauses."""
    keep_alive_timeout: float = 5.0
    """An idle connection (no request in progress) is closed after this long."""
    request_timeout: float = 30.0
    """A request must arrive whole this long after its first byte (else 408); also the longest a client may
    leave its responses unread."""
    shutdown_timeout: float = 10.0
    """On stop, requests in progress get this long to be answered before their connections are dropped."""


class Front:
    """The HTTP server of one :class:`LocalCyclesServer` (see the module doc)."""

    def __init__(self, server: LocalCyclesServer, limits: FrontLimits | None = None) -> None:
        self.handler = Handler(server)
        self.limits = limits or FrontLimits()
        self.max_body = self.handler.app.env.max_body_bytes
        self.connections: set[_Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.stopping = False
        self._all_closed: asyncio.Event | None = None

    async def serve(self, sock: socket.socket, stop: asyncio.Event) -> None:
        """Serve HTTP on the listening ``sock`` until ``stop`` is set, then stop gracefully (closes ``sock``)."""
        loop = asyncio.get_running_loop()
        self._all_closed = asyncio.Event()
        server = await loop.create_server(lambda: _Connection(self), sock=sock, backlog=2048)
        try:
            await stop.wait()
        finally:
            server.close()
            self.stopping = True
            for connection in list(self.connections):
                connection.stop()
            if self.connections:
                try:
                    await asyncio.wait_for(self._all_closed.wait(), self.limits.shutdown_timeout)
                except asyncio.TimeoutError:
                    logger.warning("%d connections still busy at shutdown: dropped", len(self.connections))
            for connection in list(self.connections):
                connection.abort()
            for task in list(self.tasks):
                task.cancel()
            if self.tasks:
                await asyncio.wait(list(self.tasks), timeout=self.limits.shutdown_timeout)
            self.handler.pool.close(self.limits.shutdown_timeout)

    def closed(self, connection: _Connection) -> None:
        """Forget a closed connection."""
        self.connections.discard(connection)
        if self.stopping and not self.connections and self._all_closed is not None:
            self._all_closed.set()


class _Connection(asyncio.Protocol):
    """One client connection: parses requests, answers them in order (see the module doc)."""

    def __init__(self, front: Front) -> None:
        self._front = front
        self._handler = front.handler
        self._limits = front.limits
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: Any = None
        self._queue: collections.deque[Request] = collections.deque()
        self._answering = False  # the first queued request is with the core (or a task)
        self._reading = True
        self._write_paused = False
        self._closing = False  # reads nothing more; closes once the queue is answered
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._idle_since = self._loop.time()
        self._write_deadline = 0.0
        # The request being read.
        self._in_message = False
        self._in_head = False
        self._deadline = 0.0
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._head_bytes = 0
        self._head_fed = 0
        self._began_here = False
        self._body: list[bytes] = []
        self._body_size = 0
        self._keep_alive = True
        self._method = "GET"

    # asyncio.Protocol

    def connection_made(self, transport: Any) -> None:
        self._transport = transport
        self._front.connections.add(self)
        if len(self._front.connections) > self._limits.max_connections or self._front.stopping:
            request = Request("GET", "/", [], b"", False, "1.1")
            answer = self._handler.error(503, "Too many connections; try again later")
            transport.write(self._handler.encode(request, answer, close=True))
            self._closing = True
            transport.close()
            return
        self._rearm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._queue.clear()
        if self._timer is not None:
            self._timer.cancel()
        self._front.closed(self)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._write_deadline = self._loop.time() + self._limits.request_timeout
        self._update_reading()
        self._rearm()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()
        self._rearm()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._began_here = False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._closing = True  # no protocol switch here: the request was read; answer it and close
        except httptools.HttpParserError as exc:
            if not self._closing:
                self._refuse(400, f"Malformed HTTP request: {str(exc)[:100]}")
        if self._in_head and not self._closing:
            self._head_fed = self._head_bytes if self._began_here else self._head_fed + len(data)
            if max(self._head_fed, self._head_bytes) > self._limits.max_head_bytes:
                self._refuse(431, f"Request head exceeds {self._limits.max_head_bytes} bytes")
        self._pump()

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self._closing:
            return
        self._in_message = self._in_head = self._began_here = True
        self._deadline = self._loop.time() + self._limits.request_timeout
        self._url = b""
        self._headers = []
        self._head_bytes = self._head_fed = self._body_size = 0
        self._body = []
        self._rearm()

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        self._headers.append((name.decode("latin-1"), value.rstrip(b" \t").decode("latin-1")))

    def on_headers_complete(self) -> None:
        if self._closing:
            return
        self._in_head = False
        if self._head_bytes > self._limits.max_head_bytes:
            self._refuse(431, f"Request head exceeds {self._limits.max_head_bytes} bytes")
            return
        parser = self._parser
        self._method = parser.get_method().decode("ascii")
        self._keep_alive = parser.should_keep_alive()
        length = coding = expect = None
        for name, value in self._headers:
            lowered = name.lower()
            if lowered == "content-length":
                length = value
            elif lowered == "transfer-encoding":  # several headers: any coding but chunked is refused
                coding = value if coding is None or coding.strip().lower() == "chunked" else coding
            elif lowered == "expect":
                expect = value
        if coding is not None and coding.strip().lower() != "chunked":
            self._refuse(501, "Only the chunked transfer coding is supported")
        elif length is not None and int(length) > self._front.max_body:
            self._refuse_body()
        elif expect is not None and expect.strip().lower() == "100-continue" and self._idle_output():
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._closing:
            return
        self._body_size += len(body)
        if self._body_size > self._front.max_body:
            self._refuse_body()  # a chunked body: counted as it streams, never held beyond the limit
        else:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if self._closing:
            return
        self._in_message = False
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        version = self._parser.get_http_version()
        target = origin_form(self._url)
        self._queue.append(Request(self._method, target, self._headers, body, self._keep_alive, version))
        if not self._keep_alive:
            self._closing = True
        self._update_reading()
        self._rearm()

    # answering

    def _pump(self) -> None:
        """Answer queued requests in order, until one has to wait for the core."""
        while self._queue and not self._answering:
            request = self._queue[0]
            response = request.answer or self._handler.now(request)
            if response is None:
                self._answering = True
                if not self._handler.submit(request, self._answered):
                    task = self._loop.create_task(self._answer_later(request))
                    self._front.tasks.add(task)
                    task.add_done_callback(self._front.tasks.discard)
                return
            self._queue.popleft()
            self._write(request, response)
        if self._closing and not self._queue and not self._answering:
            self._transport.close()
            return
        if not self._answering:
            self._idle_since = self._loop.time()
        self._update_reading()
        self._rearm()

    async def _answer_later(self, request: Request) -> None:
        try:
            response = await self._handler.later(request)
        except Exception as exc:  # the client gets an answer; the details go to the log
            logger.error("internal error answering %s: %s", request.method[:16], type(exc).__name__)
            logger.debug("traceback", exc_info=True)
            response = self._handler.error(500, "Internal server error", request)
        self._answered(request, response)

    def _answered(self, request: Request, response: HttpResponse) -> None:
        """The answer to the first queued request: write it, then go on with the queue."""
        self._answering = False
        if self._transport.is_closing():
            return
        self._queue.popleft()
        self._write(request, response)
        self._pump()

    def _write(self, request: Request, response: HttpResponse) -> None:
        close = not request.keep_alive or self._front.stopping or (self._closing and not self._queue)
        self._transport.write(self._handler.encode(request, response, close))
        if close:
            self._closing = True
            self._queue.clear()

    # refusals, flow control, timers

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` after the requests already read, then close; nothing more is read."""
        request = Request("GET", "/", self._headers, b"", False, "1.1")
        self._last(request, self._handler.error(status, message, request))

    def _refuse_body(self) -> None:
        request = Request(self._method, "/", self._headers, b"", False, "1.1")
        self._last(request, self._handler.too_large(self._method, self._headers))

    def _last(self, request: Request, answer: HttpResponse) -> None:
        request.answer = answer
        self._queue.append(request)
        self._closing = True
        self._in_message = self._in_head = False
        self._update_reading()

    def _idle_output(self) -> bool:
        return not self._queue and not self._answering

    def _update_reading(self) -> None:
        want = not self._closing and not self._write_paused and len(self._queue) < self._limits.max_pipelined
        if want != self._reading and not self._transport.is_closing():
            self._reading = want
            if want:
                self._transport.resume_reading()
            else:
                self._transport.pause_reading()

    def _rearm(self) -> None:
        """Make sure the one timer fires by the current deadline (see :meth:`_due`).

        Called on every state change, so it is cheap: a timer due no later than the deadline is kept (when it
        fires, :meth:`_on_timer` looks again); a timer is only created when none is due early enough.
        """
        at = self._due()
        if at is not None and (self._timer is None or self._timer_at > at):
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = at
            self._timer = self._loop.call_at(at, self._on_timer)

    def _due(self) -> float | None:
        """When the connection times out in its current state: unread responses, a request arriving too
        slowly, or idle; ``None`` while the server is answering."""
        if self._write_paused:
            return self._write_deadline
        if self._in_message:
            return self._deadline
        if self._idle_output() and not self._closing:
            return self._idle_since + self._limits.keep_alive_timeout
        return None

    def _on_timer(self) -> None:
        self._timer = None
        at = self._due()
        if at is None:
            return
        if at > self._loop.time():
            self._rearm()
        elif self._write_paused:
            self.abort()
        elif self._in_message:
            self._too_slow()
        else:
            self._transport.close()

    def _too_slow(self) -> None:
        self._refuse(408, f"Request not received within {self._limits.request_timeout:g} s")
        self._pump()

    def stop(self) -> None:
        """Graceful stop: close now when idle, else after answering what was read (a request half read is not)."""
        if self._idle_output():
            self._transport.close()
        else:
            self._closing = True
            self._in_message = self._in_head = False
            self._update_reading()
            self._rearm()

    def abort(self) -> None:
        """Drop the connection now."""
        self._transport.abort()


class StopRequest:
    """A request to stop that may come from a signal handler, before or while the front's loop runs."""

    def __init__(self) -> None:
        self._requested = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    def request(self) -> None:
        """Ask the front to stop gracefully (safe from a signal handler or another thread)."""
        self._requested = True
        if self._loop is not None and self._event is not None:
            with contextlib.suppress(RuntimeError):  # the loop has finished: it stopped already
                self._loop.call_soon_threadsafe(self._event.set)

    def bind(self) -> asyncio.Event:
        """The event set on a stop request, for the running loop (already set if one came before)."""
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        if self._requested:
            self._event.set()
        return self._event


def run(front: Front, sock: socket.socket, stop: StopRequest) -> None:
    """Serve on ``sock`` in a new event loop until ``stop`` is requested (blocking).

    The loop is uvloop's when uvloop is installed (as uvicorn does), else asyncio's.
    """

    async def main() -> None:
        await front.serve(sock, stop.bind())

    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        loop = asyncio.new_event_loop()
    else:
        loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(main())
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
