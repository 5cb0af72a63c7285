"""httpx's default async transport, with a cheaper check of idle connections.

Before httpcore (1.x) hands a request to a connection, and again when a response ends, its pool asks every idle
connection whether the server closed it (``get_extra_info("is_readable")``: a zero-timeout poll of the socket).
On anyio streams that question first rebuilds the stream's table of attributes, which costs a ``getpeername``
system call, so each idle connection costs two system calls per request handed out. In a burst of concurrent
calls the pool holds up to 100 connections, and these checks were a fifth of a 1,000-call burst's time.

`default_async_transport` is ``httpx.AsyncHTTPTransport`` with the same pool settings whose network streams
answer that question from the socket they keep from their connect: one ``poll`` and nothing else, the same
answer. Every other call goes to httpcore's own stream. Should httpx's transport no longer be built the way this
expects, the plain transport is returned.
"""

from __future__ import annotations

import select
import ssl
from collections.abc import Iterable
from typing import Any, Protocol

import httpcore
import httpx

from ._slots import POOL_CONNECTIONS

__all__ = ["default_async_transport", "is_readable"]


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


def is_readable(sock: _HasFileno) -> bool:
    """Whether ``sock`` (a socket, or asyncio's wrapper of one) has data or end-of-file waiting (an idle HTTP/1.1
    connection then cannot be reused), or is closed; without waiting."""
    try:
        fd = sock.fileno()
        if fd < 0:
            return True
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            return bool(poller.poll(0))
        ready, _, _ = select.select([fd], [], [], 0)  # Windows
        return bool(ready)
    except (OSError, ValueError):
        return True


class _Stream(httpcore.AsyncNetworkStream):
    """httpcore's stream, with ``is_readable`` answered from its socket."""

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream
        sock = stream.get_extra_info("socket")  # asyncio: its TransportSocket; trio: a trio socket
        self._socket: _HasFileno | None = sock if callable(getattr(sock, "fileno", None)) else None

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._stream.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable" and self._socket is not None:
            return is_readable(self._socket)
        return self._stream.get_extra_info(info)


class _Backend(httpcore.AsyncNetworkBackend):
    def __init__(self, backend: httpcore.AsyncNetworkBackend) -> None:
        self._backend = backend

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._backend.connect_tcp(host, port, timeout, local_address, socket_options))

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._backend.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


def default_async_transport() -> httpx.AsyncHTTPTransport:
    """httpx's default async transport with our pool limits (see `_http.http_options`) and the cheaper idle
    check."""
    transport = httpx.AsyncHTTPTransport(
        limits=httpx.Limits(
            max_connections=POOL_CONNECTIONS, max_keepalive_connections=POOL_CONNECTIONS, keepalive_expiry=5.0
        )
    )
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if isinstance(pool, httpcore.AsyncConnectionPool) and isinstance(backend, httpcore.AsyncNetworkBackend):
        pool._network_backend = _Backend(backend)
    return transport
