"""A whole-attempt deadline for the sync client's default transport, without a thread per request.

httpx bounds each socket operation by its own timeout only, so a server trickling its status line and headers
one byte per read timeout would hold a sync attempt indefinitely. The default transport of `CyclesClient` gets
an httpcore network backend whose streams clamp every connect, read and write timeout to what is left of the
current attempt's budget (a contextvar set by `CyclesClient.send` around the request) and raise httpcore's
timeout error once it is spent; httpx turns that into its own ``TimeoutException``. Outside an attempt the
streams behave as plain sockets.

`AttemptSlots` is the async client's counterpart for queueing: a request beyond the connection pool's size
waits for a slot *before* its attempt's clock starts, so a burst of our own requests never fails on the
attempt deadline (or httpx's pool timeout) merely for queueing behind itself.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterable
from contextvars import ContextVar, Token
from typing import Any

import attrs
import httpcore
import httpx

from ._slots import POOL_CONNECTIONS

__all__ = ["default_transport", "end_attempt", "start_attempt"]


@attrs.frozen
class _Deadline:
    at: float  # time.monotonic() value
    budget_ms: int


_current: ContextVar[_Deadline | None] = ContextVar("runcycles_attempt_deadline", default=None)


def start_attempt(budget_ms: int) -> tuple[float, Token[_Deadline | None]]:
    """Bound every socket operation of this context by ``budget_ms`` from now, until `end_attempt`.

    Returns the monotonic deadline and the token to pass to `end_attempt`."""
    deadline = _Deadline(time.monotonic() + budget_ms / 1000, budget_ms)
    return deadline.at, _current.set(deadline)


def end_attempt(token: Token[_Deadline | None]) -> None:
    """End the attempt begun by `start_attempt`."""
    _current.reset(token)


def _clamp(timeout: float | None, error: type[Exception]) -> tuple[float | None, _Deadline | None]:
    """``timeout`` shortened to the attempt's remaining budget (and that deadline, when it is the tighter one)."""
    deadline = _current.get()
    if deadline is None:
        return timeout, None
    remaining = deadline.at - time.monotonic()
    if remaining <= 0:
        raise error(_message(deadline))
    if timeout is None or remaining < timeout:
        return remaining, deadline
    return timeout, None


def _message(deadline: _Deadline) -> str:
    return f"attempt deadline of {deadline.budget_ms} ms exceeded"


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        timeout, clamped = _clamp(timeout, httpcore.ReadTimeout)
        try:
            return self._stream.read(max_bytes, timeout)
        except httpcore.ReadTimeout as exc:
            if clamped is None:
                raise
            raise httpcore.ReadTimeout(_message(clamped)) from exc

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        timeout, clamped = _clamp(timeout, httpcore.WriteTimeout)
        try:
            self._stream.write(buffer, timeout)
        except httpcore.WriteTimeout as exc:
            if clamped is None:
                raise
            raise httpcore.WriteTimeout(_message(clamped)) from exc

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        timeout, _ = _clamp(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        timeout, _ = _clamp(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        timeout, _ = _clamp(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def default_transport() -> httpx.HTTPTransport:
    """httpx's default transport (same TLS and pool limits as ``httpx.Client()`` builds) on the deadline backend.

    httpx has no public way to choose the network backend, so this sets the transport's private ``_pool``; if
    a future httpx no longer has it, the plain transport is returned (then only per-read timeouts bound the
    header phase, as before).
    """
    transport = httpx.HTTPTransport()
    if not isinstance(getattr(transport, "_pool", None), httpcore.ConnectionPool):
        return transport
    pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        # httpx's default pool size and keep-alive expiry; every connection may stay open (see `http_options`).
        max_connections=POOL_CONNECTIONS,
        max_keepalive_connections=POOL_CONNECTIONS,
        keepalive_expiry=5.0,
        network_backend=_DeadlineBackend(httpcore.SyncBackend()),
    )
    transport._pool.close()
    transport._pool = pool
    return transport
