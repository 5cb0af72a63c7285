"""In-process httpx transports over :meth:`App.handle` (no sockets)."""

from __future__ import annotations

import functools

import anyio.to_thread
import httpx

from ._http import App


def _split(request: httpx.Request) -> tuple[str, str]:
    path, _, query = request.url.raw_path.decode("ascii").partition("?")
    return path, query


def _response(
    status: int, headers: list[tuple[str, str]], body: bytes, request: httpx.Request
) -> httpx.Response:
    return httpx.Response(status, headers=headers, content=body, request=request)


class LocalTransport(httpx.BaseTransport):
    """A sync transport that answers from the embedded server in the calling thread."""

    def __init__(self, app: App) -> None:
        self._app = app

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Run the request through the server core."""
        path, query = _split(request)
        status, headers, body = self._app.handle(
            request.method, path, query, request.headers.items(), request.read()
        )
        return _response(status, headers, body, request)


class AsyncLocalTransport(httpx.AsyncBaseTransport):
    """An async transport: inline for an in-memory database, on a worker thread for a file database."""

    def __init__(self, app: App) -> None:
        self._app = app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Run the request through the server core without blocking the event loop on disk I/O."""
        path, query = _split(request)
        content = await request.aread()
        call = functools.partial(
            self._app.handle, request.method, path, query, list(request.headers.items()), content
        )
        if self._app.env.ledger.in_memory:
            status, headers, body = call()
        else:
            status, headers, body = await anyio.to_thread.run_sync(call)
        return _response(status, headers, body, request)
