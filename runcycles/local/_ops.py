"""Operational endpoints around the ASGI app: health probes and Prometheus metrics, without credentials.

* ``GET /actuator/health/liveness``: ``{"status":"UP"}`` while the process serves requests.
* ``GET /actuator/health/readiness`` and ``GET /actuator/health``: ``{"status":"UP"}`` when the ledger database
  answers a query, else 503 ``{"status":"DOWN"}`` (the reference server's probes, same paths and bodies).
* ``GET /metrics``: the Prometheus text format when ``prometheus-client`` is installed (else 404 like any
  unknown path). Every HTTP request the app serves is counted and timed there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio.to_thread

from ._base import Env, dumps
from ._metrics import ServerMetrics, route_template

logger = logging.getLogger("runcycles.local")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]

LIVENESS = "/actuator/health/liveness"
READINESS = "/actuator/health/readiness"
HEALTH = "/actuator/health"
METRICS = "/metrics"


def ledger_ready(env: Env) -> bool:
    """Whether the ledger database answers a query on its tables (blocking: call off the event loop)."""
    try:
        with env.ledger.read() as conn:
            conn.execute("SELECT 1 FROM budgets LIMIT 1").fetchall()
    except Exception as exc:  # readiness reports, it never raises
        logger.warning("readiness: the ledger database is not available: %s", exc)
        return False
    return True


class OpsApp:
    """ASGI 3 callable: health and metrics here, everything else to the protocol app it wraps."""

    def __init__(self, inner: Asgi, env: Env) -> None:
        self._inner = inner
        self._env = env
        self.metrics: ServerMetrics | None = None
        """The server's Prometheus metrics, or ``None`` without prometheus-client."""
        try:
            self.metrics = ServerMetrics(env)
        except ImportError:
            self.metrics = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope."""
        if scope["type"] != "http":
            await self._inner(scope, receive, send)
            return
        path: str = scope.get("path", "")
        method: str = scope.get("method", "GET")
        started = time.perf_counter()
        status: list[int] = []

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        ops = (LIVENESS, READINESS, HEALTH) + ((METRICS,) if self.metrics is not None else ())
        if path in ops:
            await self._serve_ops(path, method, recording_send)
        else:
            await self._inner(scope, receive, recording_send)
        if self.metrics is not None and status:
            self.metrics.observe(method, route_template(path, ops), status[0], time.perf_counter() - started)

    async def _serve_ops(self, path: str, method: str, send: Send) -> None:
        if method not in ("GET", "HEAD"):
            body = {"error": "INVALID_REQUEST", "message": f"Method {method} is not allowed here"}
            await _respond(send, 405, dumps(body), "application/json", head=False, allow="GET, HEAD")
            return
        head = method == "HEAD"
        if path == METRICS and self.metrics is not None:
            payload, content_type = await anyio.to_thread.run_sync(self.metrics.render)
            await _respond(send, 200, payload, content_type, head=head)
            return
        up = path == LIVENESS or await anyio.to_thread.run_sync(ledger_ready, self._env)
        body_bytes = dumps({"status": "UP" if up else "DOWN"})
        await _respond(send, 200 if up else 503, body_bytes, "application/json", head=head)


async def _respond(
    send: Send, status: int, body: bytes, content_type: str, *, head: bool, allow: str | None = None
) -> None:
    headers = [(b"content-type", content_type.encode("latin-1")), (b"content-length", str(len(body)).encode())]
    if allow is not None:
        headers.append((b"allow", allow.encode("latin-1")))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})
