# ruff: noqa: F811  (pytest fixtures imported from fixtures_local)
"""Observability end to end: OpenTelemetry spans (SDK in-memory exporter), counters (in-memory metric reader),
the ``traceparent`` the server received, DEBUG log lines, and zero cost without OpenTelemetry."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures_local import USD, Harness, harness, mode, uvicorn_switch  # noqa: F401
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from runcycles import BudgetExceededError, _otel, reserve_for_stream, with_cycles

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent


class Otel:
    """The test's own providers (the global ones can be set only once per process)."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meters = MeterProvider(metric_readers=[self.reader])
        self.tracer = self.provider.get_tracer("test")

    def spans(self, prefix: str = "cycles.") -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name.startswith(prefix)]

    def names(self) -> list[str]:
        return [s.name for s in self.spans()]

    def metric(self, name: str) -> dict[tuple[tuple[str, Any], ...], int]:
        """The data points of counter ``name``, keyed by their sorted attributes."""
        data = self.reader.get_metrics_data()
        points: dict[tuple[tuple[str, Any], ...], int] = {}
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        for point in metric.data.data_points:
                            points[tuple(sorted((point.attributes or {}).items()))] = point.value
        return points


@pytest.fixture
def otel() -> Iterator[Otel]:
    o = Otel()
    _otel.configure(tracer_provider=o.provider, meter_provider=o.meters)
    yield o
    _otel.configure()
    o.provider.shutdown()
    o.meters.shutdown()


def traceparent_of(span: Any) -> str:
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


INPROC = pytest.mark.parametrize("mode", ["inproc"])


# --------------------------------------------------------------------------- spans, parentage, attributes


@pytest.mark.anyio
async def test_async_call_spans_are_children_of_the_callers_span_and_carry_its_trace(
    harness: Harness, otel: Otel
) -> None:
    client, faults = harness.async_client()
    async with client:

        @with_cycles(estimate=1000, actual=700, client=client)
        async def work() -> str:
            return "ok"

        with otel.tracer.start_as_current_span("caller") as caller:
            assert await work() == "ok"
        assert await client.flush() == 0
    reserve, commit = otel.spans()
    assert [reserve.name, commit.name] == ["cycles.reserve", "cycles.commit"]
    caller_ctx = caller.get_span_context()
    for span in (reserve, commit):
        assert span.parent is not None and span.parent.span_id == caller_ctx.span_id
        assert span.context.trace_id == caller_ctx.trace_id
        assert span.kind is trace.SpanKind.CLIENT
    rid = reserve.attributes["cycles.reservation.id"]
    assert reserve.attributes["cycles.decision"] == "ALLOW"
    assert reserve.attributes["cycles.scope_path"] == harness.reservation(rid)["scope_path"]
    assert reserve.attributes["cycles.amount.estimate"] == 1000
    assert reserve.attributes["cycles.amount.reserved"] == 1000
    assert reserve.attributes["cycles.unit"] == USD
    assert reserve.attributes["cycles.outcome"] == "success"
    assert reserve.attributes["cycles.retry_count"] == 0
    assert reserve.attributes["http.request.method"] == "POST"
    assert reserve.attributes["http.response.status_code"] == 200
    assert commit.attributes["cycles.reservation.id"] == rid
    assert commit.attributes["cycles.amount.actual"] == 700
    assert commit.attributes["cycles.amount.charged"] == 700
    assert commit.attributes["cycles.outcome"] == "success"
    # The server received, on each request, the traceparent of that request's span (same trace as the caller).
    create_entry, commit_entry = faults.log
    assert create_entry.headers["traceparent"] == traceparent_of(reserve)
    assert commit_entry.headers["traceparent"] == traceparent_of(commit)
    assert otel.metric("cycles.reservations") == {(("cycles.decision", "ALLOW"),): 1}
    assert otel.metric("cycles.journal.backlog") == {(): 0}


@INPROC
def test_without_an_sdk_the_traceparent_is_the_callers_own(harness: Harness, otel: Otel) -> None:
    # With only the API (a no-op tracer provider) the request carries the current span's context unchanged.
    _otel.configure(tracer_provider=trace.NoOpTracerProvider(), meter_provider=otel.meters)
    client, faults = harness.sync_client(journal_enabled=False)

    @with_cycles(estimate=10, client=client)
    def work() -> None:
        return None

    work()  # no current span: no header
    with otel.tracer.start_as_current_span("caller") as caller:
        work()
    assert client.flush() == 0
    headers = [e.headers.get("traceparent") for e in faults.log]
    assert headers == [None, None, traceparent_of(caller), traceparent_of(caller)]
    assert otel.spans() == []


@INPROC
def test_sync_release_span_and_explicit_traceparent_kept(harness: Harness, otel: Otel) -> None:
    client, faults = harness.sync_client()

    @with_cycles(estimate=10, client=client)
    def work() -> None:
        raise ValueError("boom")

    with otel.tracer.start_as_current_span("caller") as caller, pytest.raises(ValueError):
        work()
    reserve, release = otel.spans()
    assert release.name == "cycles.release"
    assert release.parent is not None and release.parent.span_id == caller.get_span_context().span_id
    assert release.attributes["cycles.reservation.id"] == reserve.attributes["cycles.reservation.id"]
    assert release.attributes["cycles.amount.released"] == 10
    assert faults.log[1].headers["traceparent"] == traceparent_of(release)
    # A wire call given its own traceparent sends it unchanged (the lifecycle only fills a missing one).
    explicit = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    client.get_reservation(str(reserve.attributes["cycles.reservation.id"]), traceparent=explicit)
    assert faults.log[-1].headers["traceparent"] == explicit


@INPROC
def test_denial_span_and_counter(harness: Harness, otel: Otel) -> None:
    client, _ = harness.sync_client()

    @with_cycles(estimate=10**12, client=client)
    def work() -> None:
        raise AssertionError("never called")

    with pytest.raises(BudgetExceededError):
        work()
    (reserve,) = otel.spans()
    assert reserve.attributes["cycles.outcome"] == "denied"
    assert otel.metric("cycles.denials") == {(("cycles.reason_code", "BUDGET_EXCEEDED"),): 1}
    assert otel.metric("cycles.reservations") == {}


@INPROC
def test_background_retry_spans_keep_the_callers_parent(
    harness: Harness, otel: Otel, caplog: pytest.LogCaptureFixture
) -> None:
    client, faults = harness.sync_client()
    faults.on("commit").connect_error()

    @with_cycles(estimate=10, actual=5, client=client)
    def work() -> None:
        return None

    with caplog.at_level(logging.DEBUG, logger="runcycles"), otel.tracer.start_as_current_span("caller") as caller:
        work()
        assert client.flush() == 0
    rid = otel.spans()[0].attributes["cycles.reservation.id"]
    assert f"cycles: continuing on the background worker: reservation_id={rid}" in caplog.messages
    harness.assert_ledger(spent=5)
    first, second = (s for s in otel.spans() if s.name == "cycles.commit")
    for span in (first, second):
        assert span.parent is not None and span.parent.span_id == caller.get_span_context().span_id
    assert (first.attributes["cycles.retry_count"], second.attributes["cycles.retry_count"]) == (0, 1)
    assert first.attributes["cycles.outcome"] == "transport_error"
    assert first.attributes["error.type"] == "ConnectError"
    assert first.status.status_code is trace.StatusCode.ERROR
    assert second.attributes["cycles.outcome"] == "success"
    assert otel.metric("cycles.settlement.retries") == {(("cycles.operation", "commit"),): 1}
    assert [e.headers["traceparent"] for e in faults.entries("commit")] == [
        traceparent_of(first), traceparent_of(second)
    ]


@INPROC
def test_journal_backlog_counts_unsettled_records(harness: Harness, otel: Otel) -> None:
    client, faults = harness.sync_client(retry_enabled=False)
    faults.on("commit").status(500)

    @with_cycles(estimate=10, actual=5, client=client)
    def work() -> None:
        return None

    work()
    assert client.flush() == 0
    assert otel.metric("cycles.journal.backlog") == {(): 1}
    assert client.replay_journal() == 1
    assert client.flush() == 0
    harness.assert_ledger(spent=5)
    assert otel.metric("cycles.journal.backlog") == {(): 0}


@pytest.mark.anyio
@INPROC
async def test_stream_and_heartbeat_spans(harness: Harness, otel: Otel) -> None:
    client, faults = harness.async_client()
    async with client:
        with otel.tracer.start_as_current_span("caller") as caller:
            async with reserve_for_stream(client=client, estimate=50, ttl_ms=1000) as stream:
                await faults.wait_for(lambda f: f.count("extend") >= 1, timeout=10)
                stream.actual = 40
        assert await client.flush() == 0
    names = otel.names()
    # (an extend cut short by the end of the stream may finish after the commit: the order of the rest is free)
    assert names[0] == "cycles.reserve" and names.count("cycles.commit") == 1 and "cycles.extend" in names
    caller_id = caller.get_span_context().span_id
    assert all(s.parent is not None and s.parent.span_id == caller_id for s in otel.spans())
    extend = next(s for s in otel.spans() if s.name == "cycles.extend" and s.attributes["cycles.outcome"] == "success")
    assert extend.attributes["cycles.reservation.id"] == stream.reservation_id
    assert faults.entries("extend")[0].headers["traceparent"] == traceparent_of(extend)


# --------------------------------------------------------------------------- logging


@INPROC
def test_one_debug_line_per_step_and_nothing_above_debug(
    harness: Harness, otel: Otel, caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = harness.sync_client()

    @with_cycles(estimate=10, client=client)
    def work() -> None:
        return None

    with caplog.at_level(logging.DEBUG, logger="runcycles"):
        work()
        assert client.flush() == 0
    ours = [r for r in caplog.records if r.name.startswith("runcycles")]
    assert [r.levelno for r in ours] == [logging.DEBUG, logging.DEBUG]
    rid = otel.spans()[0].attributes["cycles.reservation.id"]
    assert [r.getMessage() for r in ours] == [
        f"cycles reserve: reservation_id={rid} status=200 outcome=success retry=0",
        f"cycles commit: reservation_id={rid} status=200 outcome=success retry=0",
    ]


# --------------------------------------------------------------------------- helpers for the provider clients


def test_current_traceparent_and_gen_ai_span(otel: Otel) -> None:
    assert _otel.current_traceparent() is None
    with otel.tracer.start_as_current_span("caller") as caller:
        assert _otel.current_traceparent() == traceparent_of(caller)
        with _otel.gen_ai_span(system="openai", request_model="gpt-4o") as span:
            assert span.recording
            assert _otel.current_traceparent() != traceparent_of(caller)
            span.record_response(input_tokens=12, output_tokens=8, response_model="gpt-4o-2024")
        with pytest.raises(KeyError), _otel.gen_ai_span(system="anthropic", request_model=None):
            raise KeyError("x")
    ok, failed = otel.spans(prefix="")[:2]
    assert ok.name == "chat gpt-4o" and ok.kind is trace.SpanKind.CLIENT
    assert ok.parent is not None and ok.parent.span_id == caller.get_span_context().span_id
    assert dict(ok.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "openai",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 8,
        "gen_ai.response.model": "gpt-4o-2024",
    }
    assert failed.name == "chat" and failed.attributes["error.type"] == "KeyError"
    assert failed.status.status_code is trace.StatusCode.ERROR


# --------------------------------------------------------------------------- without OpenTelemetry

NO_OTEL = """
import importlib.abc, json, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ImportError("blocked: " + name)
        return None

sys.meta_path.insert(0, Block())
import runcycles
imported_on_import = any(m.startswith("opentelemetry") for m in sys.modules)
from runcycles import CyclesClient, CyclesConfig, with_cycles, _otel
from runcycles._lifecycle import reserve_steps
from runcycles.local import LocalCyclesServer

server = LocalCyclesServer(admin_key="a")
server.create_tenant("acme")
key = server.create_api_key("acme")
server.create_budget("tenant:acme", "USD_MICROCENTS", 1000)
client = CyclesClient(CyclesConfig(base_url="http://x", api_key=key, tenant="acme", journal_enabled=False),
                      transport=server.transport())

@with_cycles(estimate=10, client=client)
def work():
    return "ok"

result = work()
client.close()
with _otel.gen_ai_span(system="openai", request_model="m") as span:
    span.record_response(input_tokens=1)
print(json.dumps({
    "imported_on_import": imported_on_import,
    "result": result,
    "available": _otel.available(),
    "traceparent": _otel.current_traceparent(),
    "recording": span.recording,
    "plain_generator": type(reserve_steps(None)).__name__ == "generator"
        and reserve_steps(None).gi_code.co_name == "reserve_steps",
    "otel_modules": sorted(m for m in sys.modules if m.startswith("opentelemetry")),
}))
"""


def test_without_opentelemetry_nothing_is_wrapped_and_calls_work() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(NO_OTEL)], cwd=ROOT, capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result == {
        "imported_on_import": False,
        "result": "ok",
        "available": False,
        "traceparent": None,
        "recording": False,
        "plain_generator": True,
        "otel_modules": [],
    }


def test_import_runcycles_does_not_import_opentelemetry() -> None:
    code = "import sys, runcycles; print(any(m.startswith('opentelemetry') for m in sys.modules))"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert completed.stdout.strip() == "False", completed.stderr


# --------------------------------------------------------------------------- the API without an SDK

API_ONLY = """
import json, httpx
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from runcycles import CyclesClient, CyclesConfig, with_cycles
from runcycles._lifecycle import reserve_steps
from runcycles.local import LocalCyclesServer

server = LocalCyclesServer(admin_key="a")
server.create_tenant("acme")
key = server.create_api_key("acme")
server.create_budget("tenant:acme", "USD_MICROCENTS", 10**6)
inner = server.transport()
seen = []

class Recording(httpx.BaseTransport):
    def handle_request(self, request):
        seen.append(request.headers.get("traceparent"))
        return inner.handle_request(request)

client = CyclesClient(CyclesConfig(base_url="http://x", api_key=key, tenant="acme", journal_enabled=False),
                      transport=Recording())

@with_cycles(estimate=10, client=client)
def work():
    return "ok"

plain = reserve_steps(None).gi_code.co_name == "reserve_steps"
work()
remote = SpanContext(trace_id=0xABC, span_id=0xDEF, is_remote=True, trace_flags=TraceFlags(1))
with trace.use_span(NonRecordingSpan(remote)):
    work()

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
work()
client.close()
print(json.dumps({
    "plain": plain,
    "headers": seen[:4],
    "sdk_header_set": seen[4] is not None and seen[4] != seen[2],
    "spans_after_sdk": [s.name for s in exporter.get_finished_spans()],
}))
"""


def test_without_an_sdk_nothing_is_recorded_the_callers_context_is_carried_and_a_later_sdk_is_seen() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(API_ONLY)], cwd=ROOT, capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    remote = f"00-{0xABC:032x}-{0xDEF:016x}-01"
    assert result == {
        "plain": True,  # no SDK and no current span: the steps are not wrapped at all
        "headers": [None, None, remote, remote],
        "sdk_header_set": True,
        "spans_after_sdk": ["cycles.reserve", "cycles.commit"],
    }
