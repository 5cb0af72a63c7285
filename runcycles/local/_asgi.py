"""A hand-written ASGI 3 application over :meth:`App.handle` (for uvicorn or any ASGI server)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote

import anyio.to_thread

from ._http import App

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class AsgiApp:
    """ASGI 3 callable: HTTP requests run the server core on a worker thread; lifespan is acknowledged."""

    def __init__(self, app: App) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", [])]
        limit = self._app.env.max_body_bytes
        declared = next((v.strip() for k, v in headers if k.lower() == "content-length"), "")
        if declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
            # Refused before a byte of the body is read.
            await self._send(send, self._app.too_large(scope["method"], headers))
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:  # a chunked body: counted as it streams, never held beyond the limit
                await self._send(send, self._app.too_large(scope["method"], headers))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        raw_path = scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path else quote(scope["path"])
        call = functools.partial(
            self._app.handle, scope["method"], path, scope.get("query_string", b""), headers, b"".join(chunks)
        )
        await self._send(send, await anyio.to_thread.run_sync(call))

    @staticmethod
    async def _send(send: Send, response: tuple[int, list[tuple[str, str]], bytes]) -> None:
        status, out, body = response
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in out]
                + [(b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
