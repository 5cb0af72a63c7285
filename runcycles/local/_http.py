"""Routing, authentication, correlation headers and error bodies: the server's pure, synchronous core.

:meth:`App.handle` maps ``(method, path, query, headers, body)`` to ``(status, headers, body)`` with no
I/O besides the ledger; the transports and the ASGI app are thin shells around it.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs, unquote

from . import _admin_budgets as budgets
from . import _admin_keys as keys
from . import _admin_tenants as tenants
from . import _reservation_writes as writes
from . import _runtime_reads as reads
from ._base import Env, LocalServerError, Request, StaleAuth, dumps, new_id
from ._runtime_shared import Response

logger = logging.getLogger("runcycles.local")

Handler = Callable[..., Response]
Headers = Mapping[str, str] | Iterable[tuple[str, str]]
HttpResponse = tuple[int, list[tuple[str, str]], bytes]
"""``(status, headers, body)``."""

# (method, path pattern, handler, auth) — "*" captures one path segment; auth is "key" (X-Cycles-API-Key),
# "admin" (X-Admin-API-Key) or "either".
ROUTES: list[tuple[str, tuple[str, ...], Handler, str]] = [
    ("POST", ("v1", "reservations"), writes.create_reservation, "key"),
    ("GET", ("v1", "reservations"), reads.list_reservations, "either"),
    ("GET", ("v1", "reservations", "*"), reads.get_reservation, "either"),
    ("POST", ("v1", "reservations", "*", "commit"), writes.commit_reservation, "key"),
    ("POST", ("v1", "reservations", "*", "release"), writes.release_reservation, "either"),
    ("POST", ("v1", "reservations", "*", "extend"), writes.extend_reservation, "key"),
    ("POST", ("v1", "decide"), writes.decide, "key"),
    ("POST", ("v1", "events"), writes.create_event, "key"),
    ("GET", ("v1", "balances"), reads.get_balances, "key"),
    ("POST", ("v1", "admin", "tenants"), tenants.h_create_tenant, "admin"),
    ("GET", ("v1", "admin", "tenants"), tenants.h_list_tenants, "admin"),
    ("GET", ("v1", "admin", "tenants", "*"), tenants.h_get_tenant, "admin"),
    ("PATCH", ("v1", "admin", "tenants", "*"), tenants.h_update_tenant, "admin"),
    ("POST", ("v1", "admin", "api-keys"), keys.h_create_api_key, "admin"),
    ("GET", ("v1", "admin", "api-keys"), keys.h_list_api_keys, "admin"),
    ("DELETE", ("v1", "admin", "api-keys", "*"), keys.h_revoke_api_key, "admin"),
    ("PATCH", ("v1", "admin", "api-keys", "*"), keys.h_update_api_key, "admin"),
    ("POST", ("v1", "admin", "budgets"), budgets.h_create_budget, "either"),
    ("GET", ("v1", "admin", "budgets"), budgets.h_list_budgets, "either"),
    ("PATCH", ("v1", "admin", "budgets"), budgets.h_update_budget, "admin"),
    ("GET", ("v1", "admin", "budgets", "lookup"), budgets.h_lookup_budget, "either"),
    ("POST", ("v1", "admin", "budgets", "fund"), budgets.h_fund_budget, "either"),
    ("POST", ("v1", "admin", "budgets", "freeze"), budgets.h_freeze_budget, "admin"),
    ("POST", ("v1", "admin", "budgets", "unfreeze"), budgets.h_unfreeze_budget, "admin"),
]

# The permission a tenant API key needs for each handler it may call (admin spec Permission names). A
# key-authenticated route missing here is refused: new routes must say what they need.
PERMISSION_FOR: dict[Handler, str] = {
    writes.create_reservation: "reservations:create",
    writes.decide: "reservations:create",
    reads.list_reservations: "reservations:list",
    reads.get_reservation: "reservations:list",
    writes.commit_reservation: "reservations:commit",
    writes.create_event: "reservations:commit",
    writes.release_reservation: "reservations:release",
    writes.extend_reservation: "reservations:extend",
    reads.get_balances: "balances:read",
    budgets.h_create_budget: "budgets:write",
    budgets.h_fund_budget: "budgets:write",
    budgets.h_list_budgets: "budgets:read",
    budgets.h_lookup_budget: "budgets:read",
}

# Handlers whose write transaction checks a cached key authentication (Idem.begin) before changing anything.
_VERIFIED_IN_TRANSACTION = frozenset(
    {
        writes.create_reservation,
        writes.decide,
        writes.commit_reservation,
        writes.release_reservation,
        writes.extend_reservation,
        writes.create_event,
    }
)

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


def trace_id_of(headers: Mapping[str, str]) -> str:
    """The request's trace id: a valid ``traceparent``, else a valid ``X-Cycles-Trace-Id``, else a new one."""
    parent = headers.get("traceparent")
    match = _TRACEPARENT.match(parent.strip()) if parent is not None else None
    if match and set(match.group(1)) != {"0"} and set(match.group(2)) != {"0"}:
        return match.group(1)
    given = headers.get("x-cycles-trace-id")
    if given is not None and _TRACE_ID.match(given.strip()) and set(given.strip()) != {"0"}:
        return given.strip()
    while True:
        fresh = os.urandom(16).hex()
        if fresh != _ZERO_TRACE:
            return fresh


_ZERO_TRACE = "0" * 32
# Routes without a "*" segment, by (method, path segments): most requests are found with one dict lookup.
_EXACT = {(m, pattern): (handler, auth) for m, pattern, handler, auth in ROUTES if "*" not in pattern}
_NO_CAPTURE: list[str] = []


def _match(method: str, segments: list[str]) -> tuple[Handler, str, list[str]] | set[str] | None:
    """The route for a request, the methods the path allows if only the method is wrong, or ``None``."""
    exact = _EXACT.get((method, tuple(segments)))
    if exact is not None:
        return exact[0], exact[1], _NO_CAPTURE
    allowed: set[str] = set()
    for route_method, pattern, handler, auth in ROUTES:
        if len(pattern) != len(segments):
            continue
        captured: list[str] = []
        for want, got in zip(pattern, segments, strict=True):
            if want == "*":
                captured.append(got)
            elif want != got:
                break
        else:
            if route_method == method:
                return handler, auth, captured
            allowed.add(route_method)
    return allowed or None


def _request(method: str, path: str, query: str | bytes, headers: Headers, body: bytes) -> Request:
    """The parsed request (path segments percent-decoded, query parsed, header names lower-cased)."""
    lowered = {k.lower(): v for k, v in (headers.items() if isinstance(headers, Mapping) else headers)}
    if "?" in path:
        path, _, extra = path.partition("?")
        query = query or extra
    raw_query = query.decode("latin-1") if isinstance(query, bytes) else query
    stripped = path.strip("/")
    segments = stripped.split("/") if stripped else []
    if "%" in stripped:
        segments = [unquote(part) for part in segments]
    return Request(
        method=method.upper(),
        segments=segments,
        query=parse_qs(raw_query, keep_blank_values=True) if raw_query else {},
        headers=lowered,
        body=body,
        request_id=new_id(),
        trace_id=trace_id_of(lowered),
    )


def _response_headers(req: Request, status: int) -> list[tuple[str, str]]:
    out = [
        ("content-type", "application/json"),
        ("x-request-id", req.request_id),
        ("x-cycles-trace-id", req.trace_id),
    ]
    if req.tenant is not None:
        out.append(("x-cycles-tenant", req.tenant))
    if status == 405:
        allowed = _match("", req.segments)
        out.append(("allow", ", ".join(sorted(allowed if isinstance(allowed, set) else ()))))
    return out


class App:
    """The embedded server's request handler over one :class:`Env`."""

    def __init__(self, env: Env) -> None:
        self.env = env

    def handle(
        self,
        method: str,
        path: str,
        query: str | bytes,
        headers: Headers,
        body: bytes,
        *,
        error: LocalServerError | None = None,
    ) -> HttpResponse:
        """Handle one request. ``path`` is the raw (percent-encoded) path; ``query`` the raw query string."""
        req = _request(method, path, query, headers, body)
        if error is None and len(body) > self.env.max_body_bytes:
            error = LocalServerError(
                413, "INVALID_REQUEST", f"Request body exceeds the limit of {self.env.max_body_bytes} bytes"
            )
        try:
            if error is not None:
                raise error
            status, payload = self._dispatch(req)
        except LocalServerError as exc:
            status, payload = exc.status, self._error_body(req, exc)
        except Exception as exc:  # the server must answer; the details go to the log, not the client
            # One line per failure (a hostile client must not multiply the log); the traceback at DEBUG.
            logger.error(
                "internal error handling %s %s (request %s): %s",
                req.method[:16],
                path[:200],
                req.request_id,
                type(exc).__name__,
            )
            logger.debug("traceback of request %s", req.request_id, exc_info=True)
            status = 500
            payload = self._error_body(req, LocalServerError(500, "INTERNAL_ERROR", "Internal server error"))
        return status, _response_headers(req, status), payload

    def too_large(self, method: str, headers: Headers) -> HttpResponse:
        """The 413 answer for a body over :attr:`Env.max_body_bytes` (sent without reading the body)."""
        exc = LocalServerError(
            413, "INVALID_REQUEST", f"Request body exceeds the limit of {self.env.max_body_bytes} bytes"
        )
        return self.handle(method, "/", "", headers, b"", error=exc)

    def _error_body(self, req: Request, exc: LocalServerError) -> bytes:
        body: dict[str, Any] = {
            "error": exc.code,
            "message": exc.message,
            "request_id": req.request_id,
            "trace_id": req.trace_id,
        }
        if exc.details:
            body["details"] = exc.details
        return dumps(body)

    def _dispatch(self, req: Request) -> tuple[int, bytes]:
        found = _match(req.method, req.segments)
        if found is None:
            raise LocalServerError(404, "NOT_FOUND", f"No such endpoint: {'/' + '/'.join(req.segments)}")
        if isinstance(found, set):
            raise LocalServerError(405, "INVALID_REQUEST", f"Method {req.method} is not allowed here")
        handler, auth, captured = found
        self._authenticate(req, auth, deferred=handler in _VERIFIED_IN_TRANSACTION)
        try:
            return self._run(req, handler, captured)
        except StaleAuth:
            stale = True
        except LocalServerError:
            # An answer given before the transaction checked a cached authentication: check it now.
            stale = req.auth_stamp is not None and req.auth_stamp != (
                self.env.ledger.auth_epoch(),
                self.env.ledger.rollbacks,
            )
            if not stale:
                raise
        req.auth_stamp = None
        self._authenticate(req, auth, deferred=False)
        return self._run(req, handler, captured)

    def _run(self, req: Request, handler: Handler, captured: list[str]) -> tuple[int, bytes]:
        if req.grant is not None:
            needed = PERMISSION_FOR.get(handler)
            if needed is None or not req.grant.allows(needed):
                code = "INSUFFICIENT_PERMISSIONS" if req.segments[1] == "admin" else "FORBIDDEN"
                raise LocalServerError(403, code, f"API key lacks the {needed or 'required'} permission")
        if req.segments[1] == "reservations" and captured and not 1 <= len(captured[0]) <= 128:
            raise LocalServerError(400, "INVALID_REQUEST", "reservation_id must be 1..128 characters")
        return handler(self.env, req, *captured)

    def _authenticate(self, req: Request, auth: str, *, deferred: bool) -> None:
        """Authenticate ``req``; with ``deferred`` a cached key is taken as is and checked by the handler's
        transaction (``Request.auth_stamp``), which saves reading the ledger here."""
        api_key = req.headers.get("x-cycles-api-key")
        admin_key = req.headers.get("x-admin-api-key")
        if auth != "admin" and api_key is not None:
            cached = keys.authenticate_cached(self.env, api_key) if deferred else None
            if cached is not None:
                req.tenant, req.grant, req.auth_stamp = cached
            else:
                req.tenant, req.grant = keys.authenticate(self.env, api_key)
        elif auth != "key" and admin_key is not None:
            if not hmac.compare_digest(admin_key.encode(), self.env.admin_key.encode()):
                raise LocalServerError(401, "UNAUTHORIZED", "Invalid admin API key")
            req.admin = True
        else:
            header = "X-Admin-API-Key" if auth == "admin" else "X-Cycles-API-Key"
            raise LocalServerError(401, "UNAUTHORIZED", f"Missing {header} header")
