"""Prometheus metrics of the embedded server (needs ``prometheus-client``, imported only when a server starts).

Each server has its own ``CollectorRegistry`` (never the process-global one), so several servers in one
process do not clash. Request metrics are recorded by the ASGI shell; ledger gauges (active reservations,
budget amounts) are read from the database at scrape time, so they are right for every process sharing it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from ._base import Env
from ._http import ROUTES

logger = logging.getLogger("runcycles.local")

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BUDGET_GAUGES = (
    ("remaining", "Budget remaining (allocated - spent - reserved - debt; may be negative)"),
    ("allocated", "Budget allocated"),
    ("reserved", "Budget held by active reservations"),
    ("spent", "Budget spent"),
    ("debt", "Budget debt (overdraft)"),
)


def _templates_by_length() -> dict[int, list[tuple[tuple[str, ...], str]]]:
    """Each route pattern (in :data:`ROUTES` order, once) with its template, by segment count."""
    by_length: dict[int, list[tuple[tuple[str, ...], str]]] = {}
    for _method, pattern, _handler, _auth in ROUTES:
        known = by_length.setdefault(len(pattern), [])
        if all(pattern != seen for seen, _ in known):
            known.append((pattern, "/" + "/".join("{id}" if p == "*" else p for p in pattern)))
    return by_length


_TEMPLATES = _templates_by_length()


def route_template(path: str, extra: tuple[str, ...] = ()) -> str:
    """The route a request path belongs to, with path parameters as ``{id}`` (bounded label values).

    ``extra`` are exact paths served outside the protocol routes (health, metrics); anything else is
    ``"other"``.
    """
    if path in extra:
        return path
    segments = [part for part in path.split("?", 1)[0].strip("/").split("/") if part]
    for pattern, template in _TEMPLATES.get(len(segments), ()):
        for want, got in zip(pattern, segments):  # noqa: B905 - same length by construction
            if want != "*" and want != got:
                break
        else:
            return template
    return "other"


class ServerMetrics:
    """One server's Prometheus registry: HTTP requests by route and status, latency, ledger gauges.

    Raises ``ImportError`` when ``prometheus-client`` is not installed.
    """

    def __init__(self, env: Env) -> None:
        import prometheus_client as prom

        self._prom = prom
        self.registry = prom.CollectorRegistry()
        self._requests = prom.Counter(
            "cycles_http_requests",
            "HTTP requests served, by method, route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self._latency = prom.Histogram(
            "cycles_http_request_duration_seconds",
            "HTTP request latency in seconds, by method and route",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_LedgerCollector(env))
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one served request."""
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            # Label values are bounded (routes are templates); methods are not, so only a bounded number of
            # label sets is remembered here (the registry keeps them all, as before).
            children = (self._requests.labels(method, route, str(status)), self._latency.labels(method, route))
            if len(self._children) < 256:
                self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The text exposition of the registry and its content type (reads the ledger: call off the loop)."""
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST


class _LedgerCollector:
    """Gauges read from the ledger at scrape time."""

    def __init__(self, env: Env) -> None:
        self._env = env

    def describe(self) -> Iterator[Any]:
        """The metric families (without samples), so registering does not query the database."""
        up, active, budgets = self._families()
        yield up
        yield active
        yield from budgets

    def collect(self) -> Iterator[Any]:
        """The current values; ``cycles_ledger_up`` is 0 (and nothing else is reported) when the read fails."""
        up, active, budgets = self._families()
        try:
            now = self._env.clock()
            with self._env.ledger.read() as conn:
                counts = conn.execute(
                    "SELECT tenant_id, COUNT(*) FROM reservations WHERE status = 'ACTIVE' AND deadline_ms >= ? "
                    "GROUP BY tenant_id",
                    (now,),
                ).fetchall()
                rows = conn.execute(
                    "SELECT tenant_id, scope, unit, allocated, reserved, spent, debt FROM budgets "
                    "ORDER BY tenant_id, scope, unit"
                ).fetchall()
        except Exception as exc:  # a scrape must answer; the failure shows as cycles_ledger_up 0
            logger.warning("metrics: cannot read the ledger: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        for tenant, count in counts:
            active.add_metric([tenant], count)
        gauges = dict(zip([name for name, _help in _BUDGET_GAUGES], budgets, strict=True))
        for tenant, scope, unit, allocated, reserved, spent, debt in rows:
            labels = [tenant, scope, unit]
            gauges["remaining"].add_metric(labels, allocated - spent - reserved - debt)
            gauges["allocated"].add_metric(labels, allocated)
            gauges["reserved"].add_metric(labels, reserved)
            gauges["spent"].add_metric(labels, spent)
            gauges["debt"].add_metric(labels, debt)
        yield up
        yield active
        yield from budgets

    @staticmethod
    def _families() -> tuple[Any, Any, list[Any]]:
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily("cycles_ledger_up", "1 when the ledger database could be read at scrape time")
        active = GaugeMetricFamily(
            "cycles_reservations_active", "Reservations ACTIVE and not past their grace deadline", labels=["tenant"]
        )
        budgets = [
            GaugeMetricFamily(f"cycles_budget_{name}", text, labels=["tenant", "scope", "unit"])
            for name, text in _BUDGET_GAUGES
        ]
        return up, active, budgets
