"""Observability of the lifecycle: OpenTelemetry spans and counters, and one DEBUG line per step.

Everything hangs on one hook, `traced`: a decorator on the lifecycle's step-generator functions (reserve,
release, settle, heartbeat). When OpenTelemetry is importable (or DEBUG logging is on for
``runcycles.lifecycle``) it wraps the generator the function returns in `_Traced`, which watches the effects
passing through to whichever driver runs it (sync, async, or the background worker after a ``Detach``):

- each ``Send`` gets one CLIENT span (``cycles.reserve``, ``cycles.commit``, ...), a child of the span that was
  current when the step was *created* (carried along, so a settlement retried on the worker thread still nests
  under the caller's span), and the request gets that span's ``traceparent`` unless it already has one;
- the counters ``cycles.reservations``, ``cycles.denials``, ``cycles.settlement.retries`` and the up-down
  counter ``cycles.journal.backlog`` are updated from the answers;
- one DEBUG log line per request, with the reservation id.

Without OpenTelemetry installed the import is attempted once, "not available" is cached, and the decorator
returns the generator unchanged (no wrapper at all unless DEBUG logging is on).

`current_traceparent` and `gen_ai_span` are for the guarded provider clients: the first gives the W3C
``traceparent`` of the current span, the second a span with OpenTelemetry's GenAI attributes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Generator, Iterator, Mapping
from typing import Any, ParamSpec, TypeVar
from urllib.parse import unquote

import attrs

from ._protocol.effects import Detach, JournalDelete, JournalWrite, Send, Sent
from ._protocol.requests import Operation
from ._version import __version__

__all__ = ["GenAiSpan", "configure", "current_traceparent", "gen_ai_span", "traced"]

log = logging.getLogger("runcycles.lifecycle")

P = ParamSpec("P")
T = TypeVar("T")

SCOPE = "runcycles"

_SPAN_NAMES = {
    Operation.CREATE: "cycles.reserve",
    Operation.COMMIT: "cycles.commit",
    Operation.RELEASE: "cycles.release",
    Operation.EXTEND: "cycles.extend",
    Operation.EVENT: "cycles.event",
    Operation.GET: "cycles.get_reservation",
    Operation.DECIDE: "cycles.decide",
}
_STEP_NAMES = {name: span.split(".", 1)[1] for name, span in _SPAN_NAMES.items()}
# Error codes that mean "the budget said no" (a denial), as opposed to a failed request.
_DENIAL_CODES = frozenset(
    {
        "BUDGET_EXCEEDED",
        "BUDGET_FROZEN",
        "BUDGET_CLOSED",
        "OVERDRAFT_LIMIT_EXCEEDED",
        "DEBT_OUTSTANDING",
        "ACTION_QUOTA_EXCEEDED",
        "ACTION_KIND_NOT_ALLOWED",
        "ACTION_KIND_DENIED",
    }
)


# --------------------------------------------------------------------------- loading (once)


@attrs.define
class _Instruments:
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


_UNSET: Any = object()
_state: Any = _UNSET  # _Instruments, or None when OpenTelemetry is not importable
_providers: dict[str, Any] = {}
_lock = threading.Lock()


def _load() -> _Instruments | None:
    global _state
    state = _state
    if state is not _UNSET:
        return state  # type: ignore[no-any-return]
    with _lock:
        if _state is _UNSET:
            _state = _build()
        return _state  # type: ignore[no-any-return]


def _build() -> _Instruments | None:
    try:
        from opentelemetry import metrics, trace
    except ImportError:
        return None
    tracer_provider = _providers.get("tracer_provider")
    meter_provider = _providers.get("meter_provider")
    tracer = trace.get_tracer(SCOPE, __version__, tracer_provider=tracer_provider)
    meter = metrics.get_meter(SCOPE, __version__, meter_provider=meter_provider)
    return _Instruments(
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


def configure(*, tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Use these providers instead of the global ones (``None``: the global one); for tests and embedders.

    OpenTelemetry's global providers can be set once per process; this lets each test bring its own.
    """
    global _state
    with _lock:
        _providers.clear()
        if tracer_provider is not None:
            _providers["tracer_provider"] = tracer_provider
        if meter_provider is not None:
            _providers["meter_provider"] = meter_provider
        _state = _UNSET
    with _backlog_lock:
        _backlog.clear()


def available() -> bool:
    """Whether OpenTelemetry is importable (checked once)."""
    return _load() is not None


# --------------------------------------------------------------------------- traceparent


def _format_traceparent(span_context: Any) -> str | None:
    if span_context is None or not span_context.is_valid:
        return None
    return f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{int(span_context.trace_flags):02x}"


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, or ``None`` (no valid span, or no OpenTelemetry)."""
    state = _load()
    if state is None:
        return None
    return _format_traceparent(state.trace.get_current_span().get_span_context())


# --------------------------------------------------------------------------- the step wrapper


def traced(fn: Callable[P, Generator[Any, Any, T]]) -> Callable[P, Generator[Any, Any, T]]:
    """Wrap the steps ``fn`` returns in the observing generator (or not at all when nothing observes)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Generator[Any, Any, T]:
        steps = fn(*args, **kwargs)
        state = _load()
        debug = log.isEnabledFor(logging.DEBUG)
        if state is None:
            return _Traced(None, None).run(steps) if debug else steps
        current = state.trace.get_current_span()
        if not debug and state.idle():
            # No SDK: no span is recorded and no counter counts; requests only carry the caller's context.
            traceparent = _format_traceparent(current.get_span_context())
            return steps if traceparent is None else _with_traceparent(steps, traceparent)
        return _Traced(state, state.trace.set_span_in_context(current)).run(steps)

    return wrapper


def _with_header(send: Send, name: str, value: str) -> Send:
    request = send.request
    return attrs.evolve(send, request=attrs.evolve(request, headers={**request.headers, name: value}))


def _with_traceparent(steps: Generator[Any, Any, T], traceparent: str) -> Generator[Any, Any, T]:
    """``steps`` with ``traceparent`` on every request that has none (drivers only ever ``send``)."""
    answer: Any = None
    try:
        while True:
            try:
                effect = steps.send(answer)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            if type(effect) is Send and "traceparent" not in effect.request.headers:
                effect = _with_header(effect, "traceparent", traceparent)
            answer = yield effect
    finally:
        steps.close()


_backlog: set[str] = set()
_backlog_lock = threading.Lock()


def _backlog_change(state: _Instruments | None, reservation_id: str, add: bool) -> None:
    if state is None:
        return
    with _backlog_lock:
        if add == (reservation_id in _backlog):
            return
        if add:
            _backlog.add(reservation_id)
        else:
            _backlog.discard(reservation_id)
    state.journal_backlog.add(1 if add else -1)


def _reservation_id_of(send: Send, body: Any) -> str | None:
    if send.request.operation is Operation.CREATE:
        value = body.get("reservation_id") if isinstance(body, Mapping) else None
        return value if isinstance(value, str) else None
    if send.request.operation is Operation.EVENT:
        metadata = send.request.body.get("metadata") if send.request.body else None
        value = metadata.get("recovered_reservation_id") if isinstance(metadata, Mapping) else None
        return value if isinstance(value, str) else None
    parts = send.request.path.split("/")
    return unquote(parts[3]) if len(parts) > 3 and parts[2] == "reservations" else None


def _amount(value: Any) -> int | None:
    amount = value.get("amount") if isinstance(value, Mapping) else None
    return amount if isinstance(amount, int) and not isinstance(amount, bool) else None


class _Traced:
    """The state of one observed step generator: its parent context and the attempts per idempotency key."""

    def __init__(self, state: _Instruments | None, parent: Any) -> None:
        self.state = state
        self.parent = parent
        self.attempts: dict[tuple[Operation, str], int] = {}
        self.reservation_id: str | None = None

    def run(self, steps: Generator[Any, Any, T]) -> Generator[Any, Any, T]:
        """Pass every effect and answer through, observing them (drivers only ever ``send``)."""
        answer: Any = None
        try:
            while True:
                try:
                    effect = steps.send(answer)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
                if type(effect) is Send:
                    answer = yield from self._send(effect)
                    continue
                answer = yield effect
                if answer is None and type(effect) is JournalWrite:
                    _backlog_change(self.state, str(effect.record.reservation_id), add=True)
                elif answer is None and type(effect) is JournalDelete:
                    _backlog_change(self.state, effect.reservation_id, add=False)
                elif type(effect) is Detach:
                    log.debug("cycles: continuing on the background worker: reservation_id=%s", self.reservation_id)
        finally:
            steps.close()

    def _send(self, send: Send) -> Generator[Any, Any, Any]:
        request = send.request
        operation = request.operation
        key = request.headers.get("X-Idempotency-Key") or ""
        retry = self.attempts.get((operation, key), 0)
        self.attempts[(operation, key)] = retry + 1
        state = self.state
        span: Any = None
        if state is not None:
            span = state.tracer.start_span(
                _SPAN_NAMES.get(operation, "cycles.request"),
                context=self.parent,
                kind=state.trace.SpanKind.CLIENT,
            )
            if "traceparent" not in request.headers:
                traceparent = _format_traceparent(span.get_span_context())
                if traceparent is not None:
                    send = _with_header(send, "traceparent", traceparent)
        sent: Any = None
        try:
            sent = yield send
        finally:
            self._finish(send, sent, span, retry)
        return sent

    def _finish(self, send: Send, sent: Sent | None, span: Any, retry: int) -> None:
        operation = send.request.operation
        answer = _Answer.of(sent.response if isinstance(sent, Sent) else None)
        reservation_id = _reservation_id_of(send, answer.body)
        self.reservation_id = reservation_id or self.reservation_id
        state = self.state
        if state is not None:
            _count(state, operation, answer, retry)
        if span is not None:
            if span.is_recording():
                _describe(span, state, send, answer, reservation_id, retry)
            span.end()
        log.debug(
            "cycles %s: reservation_id=%s status=%s outcome=%s retry=%d",
            _STEP_NAMES.get(operation, operation.value), reservation_id, answer.status, answer.outcome, retry,
        )


@attrs.frozen
class _Answer:
    """What one request's answer says, as the spans, counters and log line see it."""

    response: Any  # CyclesResponse, or None when the request was cancelled
    body: Any  # the decoded body (any JSON value, or None)
    fields: Mapping[str, Any]  # the body when it is an object, else empty
    error_code: Any  # the body's ``error`` on a non-2xx answer
    decision: Any
    denied: bool
    outcome: str  # cancelled | transport_error | denied | success | error

    @property
    def status(self) -> int | None:
        return self.response.status if self.response is not None else None

    @classmethod
    def of(cls, response: Any) -> _Answer:
        body = response.body if response is not None else None
        fields: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
        status = response.status if response is not None else None
        error_code = fields.get("error") if status is not None and status >= 300 else None
        decision = fields.get("decision")
        denied = decision == "DENY" or (isinstance(error_code, str) and error_code in _DENIAL_CODES)
        return cls(response, body, fields, error_code, decision, denied, _outcome(response, denied))


def _outcome(response: Any, denied: bool) -> str:
    if response is None:
        return "cancelled"
    if response.is_transport_error:
        return "transport_error"
    if denied:
        return "denied"
    return "success" if response.is_success else "error"


def _count(state: _Instruments, operation: Operation, answer: _Answer, retry: int) -> None:
    if operation is Operation.CREATE and answer.response is not None:
        if answer.denied:
            reason = answer.fields.get("reason_code")
            state.denials.add(1, {"cycles.reason_code": str(reason or answer.error_code or "")})
        elif answer.outcome == "success" and isinstance(answer.decision, str):
            state.reservations.add(1, {"cycles.decision": answer.decision})
    if retry and operation in (Operation.COMMIT, Operation.EVENT):
        state.settlement_retries.add(1, {"cycles.operation": _STEP_NAMES[operation]})


_FAILED = frozenset({"transport_error", "error", "cancelled"})


def _describe(
    span: Any, state: Any, send: Send, answer: _Answer, reservation_id: str | None, retry: int
) -> None:
    attributes = _request_attributes(send, reservation_id, answer.outcome, retry)
    response = answer.response
    if response is not None and not response.is_transport_error:
        attributes["http.response.status_code"] = response.status
    _add_answer_attributes(attributes, answer)
    failed = answer.outcome in _FAILED
    if failed:
        attributes["error.type"] = _error_type(answer)
    span.set_attributes(attributes)
    if failed and state is not None:
        span.set_status(state.trace.Status(state.trace.StatusCode.ERROR, response.error_message if response else None))


def _request_attributes(send: Send, reservation_id: str | None, outcome: str, retry: int) -> dict[str, Any]:
    request = send.request
    request_body = request.body or {}
    attributes: dict[str, Any] = {
        "http.request.method": request.method,
        "cycles.operation": _STEP_NAMES.get(request.operation, request.operation.value),
        "cycles.outcome": outcome,
        "cycles.retry_count": retry,
    }
    if reservation_id:
        attributes["cycles.reservation.id"] = reservation_id
    key = request.headers.get("X-Idempotency-Key")
    if key:
        attributes["cycles.idempotency_key"] = key
    for name in ("estimate", "actual"):
        source: Any = request_body.get(name)
        amount = _amount(source)
        if amount is not None:
            attributes[f"cycles.amount.{name}"] = amount
            attributes["cycles.unit"] = str(source.get("unit"))
    if request_body.get("dry_run") is True:
        attributes["cycles.dry_run"] = True
    return attributes


def _add_answer_attributes(attributes: dict[str, Any], answer: _Answer) -> None:
    if isinstance(answer.body, Mapping):
        if isinstance(answer.decision, str):
            attributes["cycles.decision"] = answer.decision
        for name in ("scope_path", "reason_code"):
            value = answer.fields.get(name)
            if isinstance(value, str):
                attributes[f"cycles.{name}"] = value
        for name in ("reserved", "charged", "released"):
            amount = _amount(answer.fields.get(name))
            if amount is not None:
                attributes[f"cycles.amount.{name}"] = amount
    if isinstance(answer.error_code, str):
        attributes["cycles.error_code"] = answer.error_code


def _error_type(answer: _Answer) -> str:
    response = answer.response
    if response is None:
        return "cancelled"
    if response.is_transport_error:
        exc = response.transport_error
        return type(exc).__qualname__ if exc is not None else "transport_error"
    return answer.error_code if isinstance(answer.error_code, str) else str(response.status)


# --------------------------------------------------------------------------- GenAI spans (provider clients)


class GenAiSpan:
    """The handle `gen_ai_span` yields: record what the provider answered (a no-op without OpenTelemetry)."""

    def __init__(self, span: Any) -> None:
        self._span = span

    @property
    def recording(self) -> bool:
        """Whether attributes set here go anywhere."""
        return self._span is not None and bool(self._span.is_recording())

    def record_response(
        self,
        *,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        response_model: str | None = None,
        response_id: str | None = None,
        finish_reasons: list[str] | None = None,
    ) -> None:
        """``gen_ai.usage.input_tokens`` / ``output_tokens``, ``gen_ai.response.model`` / ``id`` /
        ``finish_reasons`` (each only when given)."""
        if self._span is None:
            return
        attributes: dict[str, Any] = {}
        if input_tokens is not None:
            attributes["gen_ai.usage.input_tokens"] = int(input_tokens)
        if output_tokens is not None:
            attributes["gen_ai.usage.output_tokens"] = int(output_tokens)
        if response_model:
            attributes["gen_ai.response.model"] = response_model
        if response_id:
            attributes["gen_ai.response.id"] = response_id
        if finish_reasons:
            attributes["gen_ai.response.finish_reasons"] = list(finish_reasons)
        self._span.set_attributes(attributes)

    def set_attribute(self, name: str, value: Any) -> None:
        """Any other attribute (e.g. ``gen_ai.request.max_tokens``)."""
        if self._span is not None:
            self._span.set_attribute(name, value)


@contextlib.contextmanager
def gen_ai_span(
    *, system: str, request_model: str | None, operation: str = "chat", attributes: Mapping[str, Any] | None = None
) -> Iterator[GenAiSpan]:
    """A CLIENT span for one model call, current inside the block, named ``"{operation} {request_model}"``.

    Attributes follow OpenTelemetry's GenAI conventions: ``gen_ai.operation.name``, ``gen_ai.system`` and its
    newer name ``gen_ai.provider.name`` (both set), ``gen_ai.request.model``; usage is added with
    `GenAiSpan.record_response`. An exception leaving the block is recorded with ``error.type``. Without
    OpenTelemetry the handle does nothing.
    """
    state = _load()
    if state is None:
        yield GenAiSpan(None)
        return
    initial: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.system": system,
        "gen_ai.provider.name": system,
    }
    if request_model:
        initial["gen_ai.request.model"] = request_model
    if attributes:
        initial.update(attributes)
    name = f"{operation} {request_model}" if request_model else operation
    with state.tracer.start_as_current_span(
        name, kind=state.trace.SpanKind.CLIENT, attributes=initial, record_exception=True, set_status_on_exception=True
    ) as span:
        try:
            yield GenAiSpan(span)
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__qualname__)
            raise
