"""What `runcycles._otel` needs from the OpenTelemetry API: the instruments, "is an SDK listening?", traceparent.

`build` imports the API (``None`` when it is not importable) and makes the tracer and the counters from the
given providers (``None``: the global ones); `Instruments.idle` is the cheap per-call "nothing would record
this" check that lets `runcycles._otel.traced` skip the span wrapper when no SDK is set; `format_traceparent`
and `with_header` carry a span's W3C ``traceparent`` on a request. The loaded state itself (once per process,
reset by ``configure``) lives in `runcycles._otel`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from ._protocol.effects import Send
from ._version import __version__

__all__ = ["SCOPE", "Instruments", "build", "format_traceparent", "with_header"]

SCOPE = "runcycles"


@attrs.define
class Instruments:
    """The tracer and the counters, from the configured (or global) providers."""

    trace: Any
    tracer: Any
    reservations: Any
    denials: Any
    settlement_retries: Any
    journal_backlog: Any
    idle: Callable[[], bool] = attrs.field(default=lambda: False)
    """Whether no SDK would see anything right now (no-op or unset providers): then only the caller's
    ``traceparent`` needs carrying."""


def build(tracer_provider: Any, meter_provider: Any) -> Instruments | None:
    """The tracer and the counters from these providers (``None``: the global one).

    ``None`` when OpenTelemetry is not importable."""
    try:
        from opentelemetry import metrics, trace
    except ImportError:
        return None
    tracer = trace.get_tracer(SCOPE, __version__, tracer_provider=tracer_provider)
    meter = metrics.get_meter(SCOPE, __version__, meter_provider=meter_provider)
    return Instruments(
        trace=trace,
        tracer=tracer,
        idle=_idle_check(trace, metrics, tracer_provider, meter_provider),
        reservations=meter.create_counter(
            "cycles.reservations", unit="{reservation}", description="Reservations the server granted"
        ),
        denials=meter.create_counter(
            "cycles.denials", unit="{denial}", description="Reservations the server denied"
        ),
        settlement_retries=meter.create_counter(
            "cycles.settlement.retries", unit="{retry}", description="Commit or event requests sent again"
        ),
        journal_backlog=meter.create_up_down_counter(
            "cycles.journal.backlog",
            unit="{record}",
            description="Settlement records this process journaled that are not yet settled",
        ),
    )


def _idle_check(trace: Any, metrics: Any, tracer_provider: Any, meter_provider: Any) -> Callable[[], bool]:
    """A cheap "is nothing listening?": true while both providers in effect are no-ops or unset proxies.

    The global providers can be set once, later than our first call, so they are looked at each time until
    one of them is real (a configured provider is judged once). The API's getters read ``os.environ`` on every
    call while no provider is set (about 2 µs each), so the API's module globals are read instead when they
    exist; a provider named by ``OTEL_PYTHON_*_PROVIDER`` is loaded here, once, as the getter would."""
    # None: an unset global, as the API's module holds it.
    idle_tracers: tuple[type, ...] = (trace.NoOpTracerProvider, trace.ProxyTracerProvider, type(None))
    idle_meters: tuple[type, ...] = (metrics.NoOpMeterProvider, type(None))
    meter_module: Any = None
    try:
        from opentelemetry.metrics import _internal as meter_module
        from opentelemetry.metrics._internal import _ProxyMeterProvider
    except ImportError:  # pragma: no cover - another API version: an unset meter provider then counts as real
        pass
    else:
        idle_meters = (*idle_meters, _ProxyMeterProvider)
    if tracer_provider is not None and not isinstance(tracer_provider, idle_tracers):
        return _never_idle
    if meter_provider is not None and not isinstance(meter_provider, idle_meters):
        return _never_idle
    current_tracers = _global_provider(trace, "_TRACER_PROVIDER", trace.get_tracer_provider)
    current_meters = _global_provider(meter_module, "_METER_PROVIDER", metrics.get_meter_provider)
    real = [False]

    def idle() -> bool:
        if real[0]:
            return False
        if tracer_provider is None and not isinstance(current_tracers(), idle_tracers):
            real[0] = True  # a global provider, once set, stays set
        elif meter_provider is None and not isinstance(current_meters(), idle_meters):
            real[0] = True
        return not real[0]

    return idle


def _global_provider(module: Any, name: str, getter: Callable[[], Any]) -> Callable[[], Any]:
    """The global provider as ``module.<name>`` holds it (``None`` while unset), else through ``getter``."""
    getter()  # loads a provider named in the environment, as the first real use would
    if module is None or not hasattr(module, name):  # pragma: no cover - another API version
        return getter

    def current() -> Any:
        return getattr(module, name)

    return current


def _never_idle() -> bool:
    return False


# --------------------------------------------------------------------------- traceparent


def format_traceparent(span_context: Any) -> str | None:
    """The W3C ``traceparent`` of ``span_context``, or ``None`` when it is not a valid one."""
    if span_context is None or not span_context.is_valid:
        return None
    return f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{int(span_context.trace_flags):02x}"


def with_header(send: Send, name: str, value: str) -> Send:
    """``send`` with the request header ``name`` set to ``value``."""
    request = send.request
    return attrs.evolve(send, request=attrs.evolve(request, headers={**request.headers, name: value}))
