"""HTTP-layer fault injection for the lifecycle tests.

``FaultyTransport(inner)`` / ``AsyncFaultyTransport(inner)`` wrap any httpx transport (the embedded server's
in-process transports, or ``httpx.HTTPTransport()`` to a real socket) and share one rule engine, `FaultPlan`:

    faults = AsyncFaultyTransport(server.async_transport())
    faults.on("commit").lost_response()          # first commit: applied by the server, response lost
    faults.on("extend", times=2).connect_error() # the next two extends never reach the server
    ...
    assert faults.sequence() == ["create", "commit", "commit_same_key"]

Rules are matched by operation (derived from method + path: create, commit, release, extend, event, decide,
get, list, balances, other) and consumed in the order they were added, each ``times`` times (``None``:
forever). A request no rule matches is forwarded unchanged. Every request is recorded in ``.log`` (thread-safe:
the client's background worker sends from its own thread).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import anyio
import attrs
import httpx

__all__ = [
    "OPERATIONS",
    "AsyncFaultyTransport",
    "Entry",
    "Fault",
    "FaultPlan",
    "FaultyTransport",
    "operation_of",
]

OPERATIONS = ("create", "commit", "release", "extend", "event", "decide", "get", "list", "balances", "other")

_ERROR_CODES = {
    400: "INVALID_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    409: "RESERVATION_FINALIZED",
    410: "RESERVATION_EXPIRED",
    429: "LIMIT_EXCEEDED",
    500: "INTERNAL_ERROR",
}
# Hop-by-hop / encoding headers that no longer describe a body we re-emit decoded (or cut short).
_STALE_HEADERS = ("content-length", "content-encoding", "transfer-encoding")


def operation_of(method: str, path: str) -> str:
    """The protocol operation of a request (``other`` for anything else, e.g. the admin plane)."""
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    method = method.upper()
    if len(parts) < 2 or parts[0] != "v1":
        return "other"
    resource, rest = parts[1], parts[2:]
    if resource == "reservations":
        if not rest:
            return {"POST": "create", "GET": "list"}.get(method, "other")
        if len(rest) == 1 and method == "GET":
            return "get"
        if len(rest) == 2 and method == "POST" and rest[1] in ("commit", "release", "extend"):
            return rest[1]
        return "other"
    if not rest:
        if resource == "events" and method == "POST":
            return "event"
        if resource == "decide" and method == "POST":
            return "decide"
        if resource == "balances" and method == "GET":
            return "balances"
    return "other"


# --------------------------------------------------------------------------- log


@attrs.define(kw_only=True)
class Entry:
    """One request that went through the transport, and what the fault layer did with it."""

    operation: str
    method: str
    path: str
    body: Any
    headers: dict[str, str]
    fault: str | None = None
    forwarded: bool = True
    status: int | None = None  # the status the client saw; None when it got an exception
    error: str | None = None  # the exception type the client got
    at: float = attrs.field(factory=time.monotonic)

    @property
    def idempotency_key(self) -> str | None:
        """The ``X-Idempotency-Key`` header, else the body's ``idempotency_key``."""
        header = self.headers.get("x-idempotency-key")
        if header is not None:
            return header
        if isinstance(self.body, Mapping):
            key = self.body.get("idempotency_key")
            return key if isinstance(key, str) else None
        return None

    @property
    def reservation_id(self) -> str | None:
        """The ``{id}`` path segment of a per-reservation operation."""
        parts = [p for p in self.path.split("/") if p]
        if len(parts) >= 3 and parts[1] == "reservations":
            return parts[2]
        return None


# --------------------------------------------------------------------------- faults


@attrs.frozen(kw_only=True)
class _Captured:
    """A real response from the inner transport, read in full."""

    status: int
    headers: list[tuple[str, str]]
    content: bytes


def _fresh_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers if k.lower() not in _STALE_HEADERS]


def _content(payload: Any) -> tuple[bytes, str | None]:
    if payload is None:
        return b"", None
    if isinstance(payload, bytes):
        return payload, None
    if isinstance(payload, str):
        return payload.encode(), "text/plain"
    return json.dumps(payload).encode(), "application/json"


def _json_or_none(content: bytes) -> Any:
    try:
        return json.loads(content) if content else None
    except ValueError:
        return None


@attrs.frozen(kw_only=True)
class Fault:
    """What to do with one matched request.

    ``forward``: whether the inner transport (the server) sees the request. ``respond`` builds the answer
    (or raises the transport exception) from the request and, when forwarded, the real response.
    """

    name: str
    forward: bool
    respond: Callable[[httpx.Request, _Captured | None], httpx.Response]


def _error_body(code: int, request: httpx.Request) -> dict[str, Any]:
    error = _ERROR_CODES.get(code, "INTERNAL_ERROR" if code >= 500 else "INVALID_REQUEST")
    return {"error": error, "message": f"injected {code}", "request_id": "req-fault"}


def status(
    code: int,
    body: Any = ...,
    headers: Mapping[str, str] | None = None,
    *,
    forward: bool = False,
) -> Fault:
    """Answer ``code`` instead of the server. ``body``: a JSON value, ``bytes`` or ``str``; by default an
    ErrorResponse with the usual code for the status (409: RESERVATION_FINALIZED, 410: RESERVATION_EXPIRED),
    except 502/503/504 which get a proxy's HTML page. ``forward=True``: the server applies the request first."""

    def respond(request: httpx.Request, real: _Captured | None) -> httpx.Response:
        payload = body
        if payload is ...:
            if code in (502, 503, 504):
                payload = "<html><body><h1>Bad Gateway</h1></body></html>"
            elif code >= 400:
                payload = _error_body(code, request)
            else:
                payload = None
        content, ctype = _content(payload)
        out = [("x-request-id", "req-fault")]
        if ctype:
            out.append(("content-type", ctype))
        out.extend((headers or {}).items())
        return httpx.Response(code, headers=out, content=content, request=request)

    return Fault(name=f"status_{code}", forward=forward, respond=respond)


def rate_limited(retry_after: int | None = None) -> Fault:
    """A 429 LIMIT_EXCEEDED, with ``Retry-After: <retry_after>`` (seconds) when given."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    return status(429, headers=headers)


def expired() -> Fault:
    """A 410 RESERVATION_EXPIRED (the server is not asked)."""
    return status(410)


def finalized() -> Fault:
    """A 409 RESERVATION_FINALIZED (the server is not asked)."""
    return status(409)


def connect_error() -> Fault:
    """``httpx.ConnectError``: the request never reaches the server."""

    def respond(request: httpx.Request, real: _Captured | None) -> httpx.Response:
        raise httpx.ConnectError("injected: connection refused", request=request)

    return Fault(name="connect_error", forward=False, respond=respond)


def read_timeout() -> Fault:
    """``httpx.ReadTimeout`` before the request reaches the server (nothing is applied)."""

    def respond(request: httpx.Request, real: _Captured | None) -> httpx.Response:
        raise httpx.ReadTimeout("injected: read timed out", request=request)

    return Fault(name="read_timeout", forward=False, respond=respond)


def lost_response() -> Fault:
    """The server applies the request, then the response is lost (``httpx.ReadTimeout``)."""

    def respond(request: httpx.Request, real: _Captured | None) -> httpx.Response:
        raise httpx.ReadTimeout("injected: response lost", request=request)

    return Fault(name="lost_response", forward=True, respond=respond)


def reset(kind: str = "protocol") -> Fault:
    """The server applies the request, then the connection drops: ``httpx.RemoteProtocolError``
    (``kind="protocol"``) or ``httpx.ConnectError`` (``kind="connect"``)."""
    if kind not in ("protocol", "connect"):
        raise ValueError("kind must be 'protocol' or 'connect'")

    def respond(request: httpx.Request, real: _Captured | None) -> httpx.Response:
        if kind == "connect":
            raise httpx.ConnectError("injected: connection reset by peer", request=request)
        raise httpx.RemoteProtocolError("injected: server disconnected without sending a response", request=request)

    return Fault(name=f"reset_{kind}", forward=True, respond=respond)


def truncated() -> Fault:
    """The server applies the request; the client gets the real status with the body cut in half."""

    def respond(request: httpx.Request, real: _Captured | None) -> httpx.Response:
        assert real is not None
        cut = real.content[: len(real.content) // 2]
        return httpx.Response(real.status, headers=_fresh_headers(real.headers), content=cut, request=request)

    return Fault(name="truncated", forward=True, respond=respond)


def body(code: int, payload: Any, headers: Mapping[str, str] | None = None, *, forward: bool = True) -> Fault:
    """Answer ``code`` with ``payload`` (JSON value, ``bytes``, ``str``, or a callable of the real JSON body
    returning the replacement) — e.g. a non-conformant 2xx. By default the server applies the request first."""

    def respond(request: httpx.Request, real: _Captured | None) -> httpx.Response:
        value = payload
        if callable(value):
            value = value(_json_or_none(real.content) if real is not None else None)
        content, ctype = _content(value)
        out = _fresh_headers(real.headers) if real is not None else []
        out = [(k, v) for k, v in out if k.lower() != "content-type"]
        if ctype:
            out.append(("content-type", ctype))
        out.extend((headers or {}).items())
        return httpx.Response(code, headers=out, content=content, request=request)

    return Fault(name=f"body_{code}", forward=forward, respond=respond)


def passthrough() -> Fault:
    """Forward unchanged (takes a place in the order, e.g. "the first extend succeeds, the second fails")."""

    def respond(request: httpx.Request, real: _Captured | None) -> httpx.Response:
        assert real is not None
        return httpx.Response(real.status, headers=_fresh_headers(real.headers), content=real.content, request=request)

    return Fault(name="passthrough", forward=True, respond=respond)


_PASS = passthrough()


# --------------------------------------------------------------------------- the engine


@attrs.define(kw_only=True, eq=False)
class Rule:
    """``fault`` for the next ``times`` requests of ``operations`` (``None``: every one)."""

    operations: frozenset[str]
    fault: Fault
    times: int | None
    used: int = 0

    @property
    def exhausted(self) -> bool:
        """True once it has fired ``times`` times."""
        return self.times is not None and self.used >= self.times


class _RuleBuilder:
    """``plan.on("commit", times=2).<fault>(...)``: adds the rule and returns it."""

    def __init__(self, plan: FaultPlan, operations: frozenset[str], times: int | None) -> None:
        self._plan = plan
        self._operations = operations
        self._times = times

    def _add(self, fault: Fault) -> Rule:
        return self._plan.add(self._operations, fault, times=self._times)

    def status(self, code: int, body: Any = ..., headers: Mapping[str, str] | None = None, *,
               forward: bool = False) -> Rule:
        """See `status`."""
        return self._add(status(code, body, headers, forward=forward))

    def rate_limited(self, retry_after: int | None = None) -> Rule:
        """See `rate_limited`."""
        return self._add(rate_limited(retry_after))

    def expired(self) -> Rule:
        """See `expired`."""
        return self._add(expired())

    def finalized(self) -> Rule:
        """See `finalized`."""
        return self._add(finalized())

    def connect_error(self) -> Rule:
        """See `connect_error`."""
        return self._add(connect_error())

    def read_timeout(self) -> Rule:
        """See `read_timeout`."""
        return self._add(read_timeout())

    def lost_response(self) -> Rule:
        """See `lost_response`."""
        return self._add(lost_response())

    def reset(self, kind: str = "protocol") -> Rule:
        """See `reset`."""
        return self._add(reset(kind))

    def truncated(self) -> Rule:
        """See `truncated`."""
        return self._add(truncated())

    def body(self, code: int, payload: Any, headers: Mapping[str, str] | None = None, *,
             forward: bool = True) -> Rule:
        """See `body`."""
        return self._add(body(code, payload, headers, forward=forward))

    def passthrough(self) -> Rule:
        """See `passthrough`."""
        return self._add(passthrough())


class FaultPlan:
    """The rule engine and request log shared by both transports (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition()  # its own lock: predicates read the log under ``_lock``
        self._rules: list[Rule] = []
        self._log: list[Entry] = []

    # ---- rules

    def on(self, operation: str | Iterable[str], times: int | None = 1) -> _RuleBuilder:
        """Start a rule for ``operation`` (a name or several), applied ``times`` times (``None``: forever)."""
        return _RuleBuilder(self, self._ops(operation), times)

    def add(self, operation: str | Iterable[str], fault: Fault, *, times: int | None = 1) -> Rule:
        """Append a rule; rules of one operation fire in the order they were added."""
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None")
        rule = Rule(operations=self._ops(operation), fault=fault, times=times)
        with self._lock:
            self._rules.append(rule)
        return rule

    @staticmethod
    def _ops(operation: str | Iterable[str]) -> frozenset[str]:
        ops = frozenset([operation] if isinstance(operation, str) else operation)
        unknown = ops - set(OPERATIONS)
        if unknown or not ops:
            raise ValueError(f"unknown operation(s) {sorted(unknown)}; known: {', '.join(OPERATIONS)}")
        return ops

    def clear_rules(self) -> None:
        """Drop every rule (requests are forwarded unchanged from now on)."""
        with self._lock:
            self._rules.clear()

    def unused(self) -> list[Rule]:
        """Rules with a finite ``times`` that have not fired that often yet."""
        with self._lock:
            return [r for r in self._rules if r.times is not None and not r.exhausted]

    # ---- the two phases around the inner transport

    def _begin(self, request: httpx.Request, content: bytes) -> tuple[Entry, Fault]:
        operation = operation_of(request.method, request.url.path)
        entry = Entry(
            operation=operation,
            method=request.method,
            path=request.url.path,
            body=_json_or_none(content),
            headers={k.lower(): v for k, v in request.headers.items()},
        )
        with self._lock:
            rule = next((r for r in self._rules if operation in r.operations and not r.exhausted), None)
            if rule is not None:
                rule.used += 1
            fault = rule.fault if rule is not None else _PASS
            entry.fault = rule.fault.name if rule is not None else None
            entry.forwarded = fault.forward
            self._log.append(entry)
        self._notify()
        return entry, fault

    def _finish(self, entry: Entry, fault: Fault, request: httpx.Request, real: _Captured | None) -> httpx.Response:
        try:
            response = fault.respond(request, real)
        except httpx.HTTPError as exc:
            with self._lock:
                entry.error = type(exc).__name__
            self._notify()
            raise
        with self._lock:
            entry.status = response.status_code
        self._notify()
        return response

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # ---- the log

    @property
    def log(self) -> list[Entry]:
        """A snapshot of every request so far, in order."""
        with self._lock:
            return list(self._log)

    def entries(self, operation: str | None = None) -> list[Entry]:
        """The logged requests of ``operation`` (all when ``None``)."""
        return [e for e in self.log if operation is None or e.operation == operation]

    def ops(self, *, include_other: bool = False) -> list[str]:
        """The operations in order (admin-plane and unknown requests left out unless asked)."""
        return [e.operation for e in self.log if include_other or e.operation != "other"]

    def count(self, operation: str) -> int:
        """How many ``operation`` requests went through."""
        return len(self.entries(operation))

    def keys(self, operation: str) -> list[str | None]:
        """The idempotency keys of the ``operation`` requests, in order."""
        return [e.idempotency_key for e in self.entries(operation)]

    def sequence(self, *, only: Iterable[str] | None = None) -> list[str]:
        """The request choreography in the recovery catalogue's words: ``commit``, ``commit_same_key``,
        ``event_same_key``, ... — ``_same_key`` when an earlier request carried the same idempotency key.
        ``only`` restricts the listing (not the key history) to some operations."""
        wanted = None if only is None else set(only)
        seen: set[str] = set()
        out: list[str] = []
        for entry in self.log:
            if entry.operation == "other":
                continue
            key = entry.idempotency_key
            name = entry.operation + ("_same_key" if key is not None and key in seen else "")
            if key is not None:
                seen.add(key)
            if wanted is None or entry.operation in wanted:
                out.append(name)
        return out

    def clear_log(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self._log.clear()

    # ---- waiting for a condition on the log

    async def wait_for(self, predicate: Callable[[FaultPlan], bool], timeout: float = 10.0) -> None:
        """Poll ``predicate(self)`` at short checkpoints until true; ``TimeoutError`` after ``timeout`` s."""
        with anyio.fail_after(timeout):
            while not predicate(self):
                await anyio.sleep(0.002)

    def wait_for_sync(self, predicate: Callable[[FaultPlan], bool], timeout: float = 10.0) -> None:
        """Block until ``predicate(self)`` holds (woken by every logged change); ``TimeoutError`` after it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("condition on the fault log not reached")
                self._changed.wait(left)


# --------------------------------------------------------------------------- the transports


def _capture(response: httpx.Response, content: bytes) -> _Captured:
    return _Captured(status=response.status_code, headers=list(response.headers.multi_items()), content=content)


class FaultyTransport(FaultPlan, httpx.BaseTransport):
    """A sync transport applying the fault plan in front of ``inner``."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        FaultPlan.__init__(self)
        self.inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Log the request, apply the first matching rule (forwarding to ``inner`` when the fault says so)."""
        entry, fault = self._begin(request, request.read())
        real: _Captured | None = None
        if fault.forward:
            response = self.inner.handle_request(request)
            try:
                real = _capture(response, response.read())
            finally:
                response.close()
        return self._finish(entry, fault, request, real)

    def close(self) -> None:
        """Close the inner transport."""
        self.inner.close()


class AsyncFaultyTransport(FaultPlan, httpx.AsyncBaseTransport):
    """The async twin of `FaultyTransport` (same engine, same log)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        FaultPlan.__init__(self)
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Log the request, apply the first matching rule (forwarding to ``inner`` when the fault says so)."""
        entry, fault = self._begin(request, await request.aread())
        real: _Captured | None = None
        if fault.forward:
            response = await self.inner.handle_async_request(request)
            try:
                real = _capture(response, await response.aread())
            finally:
                await response.aclose()
        return self._finish(entry, fault, request, real)

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self.inner.aclose()
