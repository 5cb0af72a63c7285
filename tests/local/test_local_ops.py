"""Health probes and Prometheus metrics of the embedded server, over real HTTP (uvicorn on 127.0.0.1)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from local_support import ADMIN_KEY, USD, FakeClock, _Switch, start_uvicorn
from prometheus_client.parser import text_string_to_metric_families

from runcycles.local import LocalCyclesServer

PROBES = ("/actuator/health", "/actuator/health/liveness", "/actuator/health/readiness")


class Ops:
    """A seeded server behind the session's uvicorn, and a credential-less HTTP client to it."""

    def __init__(self, server: LocalCyclesServer, base_url: str) -> None:
        self.server = server
        self.server.create_tenant("acme")
        self.server.create_budget("tenant:acme", USD, 1_000)
        self.key = self.server.create_api_key("acme")
        self.http = httpx.Client(base_url=base_url, timeout=10)
        self.api = httpx.Client(base_url=base_url, timeout=10, headers={"X-Cycles-API-Key": self.key})

    def reserve(self, amount: int, key: str) -> httpx.Response:
        body = {
            "idempotency_key": key,
            "subject": {"tenant": "acme"},
            "action": {"kind": "llm", "name": "m"},
            "estimate": {"unit": USD, "amount": amount},
            "ttl_ms": 10_000,
            "grace_period_ms": 0,
        }
        return self.api.post("/v1/reservations", json=body)

    def metrics(self) -> dict[str, list[Any]]:
        response = self.http.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        samples: dict[str, list[Any]] = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append(sample)
        return samples

    def close(self) -> None:
        self.http.close()
        self.api.close()


@pytest.fixture
def ops(http_switch: tuple[str, _Switch], clock: FakeClock) -> Iterator[Ops]:
    base_url, switch = http_switch
    server = LocalCyclesServer(admin_key=ADMIN_KEY, clock=clock)
    switch.target = server.asgi_app
    o = Ops(server, base_url)
    yield o
    o.close()
    server.close()


def value(samples: dict[str, list[Any]], name: str, **labels: str) -> float | None:
    found = [s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) <= 1, found
    return found[0] if found else None


# --- health --------------------------------------------------------------------------------------------------


def test_health_probes_answer_up_without_credentials(ops: Ops) -> None:
    for path in PROBES:
        response = ops.http.get(path)
        assert response.status_code == 200, path
        assert response.content == b'{"status":"UP"}'
        assert response.headers["content-type"] == "application/json"
        head = ops.http.head(path)
        assert head.status_code == 200 and head.content == b""


def test_health_probes_take_only_get_and_head(ops: Ops) -> None:
    response = ops.http.post("/actuator/health/readiness", json={})
    assert response.status_code == 405 and response.headers["allow"] == "GET, HEAD"
    assert ops.http.get("/actuator/health/other").status_code == 404


def test_readiness_is_down_503_when_the_database_cannot_answer(ops: Ops) -> None:
    ops.server.close()
    for path in ("/actuator/health", "/actuator/health/readiness"):
        response = ops.http.get(path)
        assert (response.status_code, response.json()) == (503, {"status": "DOWN"}), path
    assert ops.http.get("/actuator/health/liveness").json() == {"status": "UP"}  # the process still serves
    assert value(ops.metrics(), "cycles_ledger_up") == 0


# --- metrics -------------------------------------------------------------------------------------------------


def test_requests_are_counted_by_route_and_status_and_timed(ops: Ops) -> None:
    rid = ops.reserve(100, "r1").json()["reservation_id"]
    assert ops.reserve(5_000, "r2").status_code == 409
    assert ops.api.get(f"/v1/reservations/{rid}").status_code == 200
    assert ops.api.get("/v1/reservations/nope").status_code == 404
    ops.http.get("/actuator/health/liveness")
    ops.http.get("/no/such/path")
    samples = ops.metrics()
    total = "cycles_http_requests_total"
    assert value(samples, total, method="POST", route="/v1/reservations", status="200") == 1
    assert value(samples, total, method="POST", route="/v1/reservations", status="409") == 1
    assert value(samples, total, method="GET", route="/v1/reservations/{id}", status="200") == 1
    assert value(samples, total, method="GET", route="/v1/reservations/{id}", status="404") == 1
    assert value(samples, total, method="GET", route="/actuator/health/liveness", status="200") == 1
    assert value(samples, total, method="GET", route="other", status="404") == 1
    assert not any(rid in str(s.labels) for s in samples[total])  # ids never become label values
    count = "cycles_http_request_duration_seconds_count"
    assert value(samples, count, method="POST", route="/v1/reservations") == 2
    bucket = "cycles_http_request_duration_seconds_bucket"
    assert value(samples, bucket, method="POST", route="/v1/reservations", le="+Inf") == 2


def test_ledger_gauges_track_active_reservations_and_budget_amounts(ops: Ops, clock: FakeClock) -> None:
    ops.server.create_budget("tenant:acme/agent:a1", USD, 50, overdraft_limit=100)
    rid = ops.reserve(100, "r1").json()["reservation_id"]
    ops.reserve(200, "r2")
    samples = ops.metrics()
    assert value(samples, "cycles_ledger_up") == 1
    assert value(samples, "cycles_reservations_active", tenant="acme") == 2
    tenant = {"tenant": "acme", "scope": "tenant:acme", "unit": USD}
    assert value(samples, "cycles_budget_remaining", **tenant) == 700
    assert value(samples, "cycles_budget_reserved", **tenant) == 300
    assert value(samples, "cycles_budget_allocated", **tenant) == 1_000
    agent = {"tenant": "acme", "scope": "tenant:acme/agent:a1", "unit": USD}
    assert value(samples, "cycles_budget_remaining", **agent) == 50

    commit = {"idempotency_key": "c1", "actual": {"unit": USD, "amount": 40}}
    assert ops.api.post(f"/v1/reservations/{rid}/commit", json=commit).status_code == 200
    clock.advance(10_001)  # the other one lapses: no longer active, even before a sweep
    samples = ops.metrics()
    assert value(samples, "cycles_reservations_active", tenant="acme") is None
    assert value(samples, "cycles_budget_spent", **tenant) == 40
    assert value(samples, "cycles_budget_debt", **tenant) == 0


def test_each_server_has_its_own_registry(ops: Ops) -> None:
    other = LocalCyclesServer()
    base_url, uvicorn_server, thread = start_uvicorn(other.asgi_app)
    try:
        ops.reserve(10, "r1")
        with httpx.Client(base_url=base_url, timeout=10) as http:
            http.get("/actuator/health/liveness")
            theirs = http.get("/metrics").text
        mine = ops.metrics()
        assert "route=\"/v1/reservations\"" not in theirs
        assert 'scope="tenant:acme"' not in theirs
        total = "cycles_http_requests_total"
        assert value(mine, total, method="GET", route="/actuator/health/liveness", status="200") is None
        assert value(mine, total, method="POST", route="/v1/reservations", status="200") == 1
    finally:
        uvicorn_server.should_exit = True
        thread.join(10)
        other.close()


def test_without_prometheus_client_metrics_is_404_and_health_still_works(
    http_switch: tuple[str, _Switch], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    server = LocalCyclesServer()
    base_url, switch = http_switch
    switch.target = server.asgi_app
    try:
        assert server.asgi_app.metrics is None
        with httpx.Client(base_url=base_url, timeout=10) as http:
            missing = http.get("/metrics")
            assert missing.status_code == 404 and missing.json()["error"] == "NOT_FOUND"
            assert http.get("/actuator/health/readiness").json() == {"status": "UP"}
    finally:
        server.close()
