"""Helpers for the embedded-server tests: fake clock, schema conformance, uvicorn runner, the seeded World."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import jsonschema
from fixtures_local import _Switch, start_uvicorn  # noqa: F401  (re-exported for tests/local)

from runcycles.local import LocalCyclesServer

USD = "USD_MICROCENTS"
ADMIN_KEY = "test-admin-key"
_SCHEMAS = json.loads((Path(__file__).resolve().parents[1] / "spec" / "runtime_schemas.json").read_text())
_COMPONENTS = _SCHEMAS["components"]

# (method, path shape, success status) -> response schema name, for automatic conformance checks.
_RESPONSE_SCHEMAS = {
    ("POST", ("v1", "reservations")): "ReservationCreateResponse",
    ("GET", ("v1", "reservations")): "ReservationListResponse",
    ("GET", ("v1", "reservations", "*")): "ReservationDetail",
    ("POST", ("v1", "reservations", "*", "commit")): "CommitResponse",
    ("POST", ("v1", "reservations", "*", "release")): "ReleaseResponse",
    ("POST", ("v1", "reservations", "*", "extend")): "ReservationExtendResponse",
    ("POST", ("v1", "decide")): "DecisionResponse",
    ("POST", ("v1", "events")): "EventCreateResponse",
    ("GET", ("v1", "balances")): "BalanceResponse",
}


def conforms(schema: str, body: Any) -> None:
    """Assert ``body`` validates against the protocol schema ``schema``."""
    validator = jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{schema}", "components": _COMPONENTS})
    errors = sorted(validator.iter_errors(body), key=str)
    assert not errors, f"{schema}: {errors[0].message} in {body}"


def _schema_for(method: str, path: str) -> str | None:
    parts = tuple(p for p in path.split("?")[0].strip("/").split("/"))
    for (m, shape), name in _RESPONSE_SCHEMAS.items():
        if m == method and len(shape) == len(parts) and all(s in ("*", p) for s, p in zip(shape, parts, strict=True)):
            return name
    return None


def check_response(response: httpx.Response) -> None:
    """Every runtime answer conforms: success bodies to their schema, errors to ErrorResponse."""
    request = response.request
    if not request.url.path.startswith("/v1/") or request.url.path.startswith("/v1/admin"):
        return
    response.read()
    assert response.headers["x-request-id"]
    assert len(response.headers["x-cycles-trace-id"]) == 32
    body = response.json()
    if response.status_code >= 400:
        conforms("ErrorResponse", body)
        assert body["request_id"] == response.headers["x-request-id"]
        assert body["trace_id"] == response.headers["x-cycles-trace-id"]
        return
    name = _schema_for(request.method, request.url.path)
    if name is not None:
        conforms(name, body)


class FakeClock:
    """Epoch-millisecond clock the tests move by hand."""

    def __init__(self, start: int = 1_700_000_000_000) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


class World:
    """A seeded server (tenants ``acme`` and ``beta``, 1_000_000 tenant budgets each) and its clients."""

    def __init__(self, server: LocalCyclesServer, clock: FakeClock, factory: Any) -> None:
        self.server = server
        self.clock = clock
        self._factory = factory
        self._clients: list[httpx.Client] = []
        server.create_tenant("acme", "Acme")
        server.create_tenant("beta", "Beta")
        self.key = server.create_api_key("acme")
        self.beta_key = server.create_api_key("beta")
        server.create_budget("tenant:acme", USD, 1_000_000)
        server.create_budget("tenant:beta", USD, 1_000_000)
        self.http = self.client(api_key=self.key)
        self.beta = self.client(api_key=self.beta_key)
        self.admin = self.client(admin=True)
        self.anon = self.client()
        self._seq = 0

    def client(self, api_key: str | None = None, admin: bool = False) -> httpx.Client:
        headers = {}
        if api_key is not None:
            headers["X-Cycles-API-Key"] = api_key
        if admin:
            headers["X-Admin-API-Key"] = ADMIN_KEY
        client: httpx.Client = self._factory(headers)
        self._clients.append(client)
        return client

    def close(self) -> None:
        for client in self._clients:
            client.close()

    def key_(self, prefix: str = "k") -> str:
        self._seq += 1
        return f"{prefix}-{self._seq}"

    def budget(self, scope: str = "tenant:acme", unit: str = USD) -> dict[str, Any]:
        return self.server.get_budget(scope, unit)

    def reserve_body(self, amount: int = 100, unit: str = USD, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "idempotency_key": self.key_("r"),
            "subject": {"tenant": "acme"},
            "action": {"kind": "llm.completion", "name": "gpt"},
            "estimate": {"unit": unit, "amount": amount},
        }
        body.update(extra)
        return body

    def reserve(self, amount: int = 100, client: httpx.Client | None = None, **extra: Any) -> httpx.Response:
        return (client or self.http).post("/v1/reservations", json=self.reserve_body(amount, **extra))

    def reserve_id(self, amount: int = 100, **extra: Any) -> str:
        response = self.reserve(amount, **extra)
        assert response.status_code == 200, response.text
        return str(response.json()["reservation_id"])

    def commit(
        self, rid: str, amount: int, unit: str = USD, client: httpx.Client | None = None, **extra: Any
    ) -> httpx.Response:
        body = {"idempotency_key": self.key_("c"), "actual": {"unit": unit, "amount": amount}, **extra}
        return (client or self.http).post(f"/v1/reservations/{rid}/commit", json=body)

    def release(self, rid: str, client: httpx.Client | None = None) -> httpx.Response:
        return (client or self.http).post(f"/v1/reservations/{rid}/release", json={"idempotency_key": self.key_("l")})

    def extend(self, rid: str, by: int = 10_000, client: httpx.Client | None = None) -> httpx.Response:
        body = {"idempotency_key": self.key_("x"), "extend_by_ms": by}
        return (client or self.http).post(f"/v1/reservations/{rid}/extend", json=body)

    def event(self, amount: int, unit: str = USD, **extra: Any) -> httpx.Response:
        body: dict[str, Any] = {
            "idempotency_key": self.key_("e"),
            "subject": {"tenant": "acme"},
            "action": {"kind": "tool.search", "name": "web"},
            "actual": {"unit": unit, "amount": amount},
            **extra,
        }
        return self.http.post("/v1/events", json=body)

    def decide(self, amount: int = 100, **extra: Any) -> httpx.Response:
        body = self.reserve_body(amount, **extra)
        return self.http.post("/v1/decide", json=body)


def error_of(response: httpx.Response) -> str:
    """The ``error`` code of an error response."""
    return str(response.json()["error"])
