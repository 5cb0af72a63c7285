"""`Traced`, the wrapper `runcycles._otel.traced` puts on a step generator: what one observed step reports.

Each ``Send`` passing through gets a CLIENT span (``cycles.reserve``, ``cycles.commit``, ...) under the parent
context the step was created in, and the request that span's ``traceparent`` unless it has one; the answers
update the counters (``cycles.reservations``, ``cycles.denials``, ``cycles.settlement.retries``, and
``cycles.journal.backlog`` from the journal effects) and give one DEBUG line per request. `_Answer` reads an
answer once for all three; `_describe` turns it into span attributes and status.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Generator, Mapping
from typing import Any, TypeVar
from urllib.parse import unquote

import attrs

from ._otel_api import Instruments, format_traceparent, with_header
from ._protocol.effects import Detach, JournalDelete, JournalWrite, Send, Sent
from ._protocol.requests import Operation

__all__ = ["Traced", "reset_backlog"]

log = logging.getLogger("runcycles.lifecycle")

T = TypeVar("T")


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


_backlog: set[str] = set()
_backlog_lock = threading.Lock()


def reset_backlog() -> None:
    """Forget which reservations were counted in ``cycles.journal.backlog`` (new providers start at zero)."""
    with _backlog_lock:
        _backlog.clear()


def _backlog_change(state: Instruments | None, reservation_id: str, add: bool) -> None:
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


class Traced:
    """The state of one observed step generator: its parent context and the attempts per idempotency key."""

    def __init__(self, state: Instruments | None, parent: Any) -> None:
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
                traceparent = format_traceparent(span.get_span_context())
                if traceparent is not None:
                    send = with_header(send, "traceparent", traceparent)
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


def _count(state: Instruments, operation: Operation, answer: _Answer, retry: int) -> None:
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
