"""A hand-written ASGI 3 application over :meth:`App.handle` (for uvicorn or any ASGI server).

On an in-memory database the server core runs inline on the event loop (no file I/O, a fraction of a
millisecond per request, as the in-process async transport does). On a file database requests run in
batches on a worker thread, one commit per batch (:mod:`._batches`), so blocking file I/O stays off the loop.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote

from ._batches import Batcher, internal_error
from ._http import App, HttpResponse

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class AsgiApp:
    """ASGI 3 callable: HTTP requests run the server core (see the module doc); lifespan is acknowledged."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._batcher = Batcher(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope."""
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", [])]
        body = await self._read_body(scope, receive, send, headers)
        if body is None:
            return
        raw_path = scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path else quote(scope["path"])
        method = scope["method"]
        call = functools.partial(self._app.handle, method, path, scope.get("query_string", b""), headers, body)
        if self._app.env.ledger.in_memory:
            response = call()
        else:
            response = await self._batcher.run(call, internal_error(self._app, method, headers))
        await _send(send, response)

    async def _read_body(
        self, scope: Scope, receive: Receive, send: Send, headers: list[tuple[str, str]]
    ) -> bytes | None:
        """The request body, or ``None`` when the client left or the body is over the limit (413 sent)."""
        limit = self._app.env.max_body_bytes
        declared = next((v.strip() for k, v in headers if k.lower() == "content-length"), "")
        if declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
            # Refused before a byte of the body is read.
            await _send(send, self._app.too_large(scope["method"], headers))
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:  # a chunked body: counted as it streams, never held beyond the limit
                await _send(send, self._app.too_large(scope["method"], headers))
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _send(send: Send, response: HttpResponse) -> None:
    status, out, body = response
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in out]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
