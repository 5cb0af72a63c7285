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

        ops = self.ops_paths
        if path in ops:
            await self._serve_ops(path, method, recording_send)
        else:
            await self._inner(scope, receive, recording_send)
        if self.metrics is not None and status:
            self.metrics.observe(method, route_template(path, ops), status[0], time.perf_counter() - started)

    @property
    def ops_paths(self) -> tuple[str, ...]:
        """The paths served here (health probes, and ``/metrics`` when prometheus-client is installed)."""
        return (LIVENESS, READINESS, HEALTH) + ((METRICS,) if self.metrics is not None else ())

    async def answer(self, path: str, method: str) -> tuple[int, list[tuple[str, str]], bytes]:
        """``(status, headers, body)`` of a request for one of :attr:`ops_paths` (the body even for ``HEAD``)."""
        if method not in ("GET", "HEAD"):
            body = {"error": "INVALID_REQUEST", "message": f"Method {method} is not allowed here"}
            return 405, [("content-type", "application/json"), ("allow", "GET, HEAD")], dumps(body)
        if path == METRICS and self.metrics is not None:
            payload, content_type = await anyio.to_thread.run_sync(self.metrics.render)
            return 200, [("content-type", content_type)], payload
        up = path == LIVENESS or await anyio.to_thread.run_sync(ledger_ready, self._env)
        return 200 if up else 503, [("content-type", "application/json")], dumps({"status": "UP" if up else "DOWN"})

    async def _serve_ops(self, path: str, method: str, send: Send) -> None:
        status, headers, body = await self.answer(path, method)
        out = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        out.insert(1, (b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
