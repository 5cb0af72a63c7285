"""Reservations and decisions for the framework integrations (LangChain, the Agents SDK).

Frameworks hand us "before" and "after" hooks rather than a function to wrap, so the integrations hold a
stream-style handle between the two (`open_async` / `open_sync`, the caller owns commit/release), optionally
under a deterministic idempotency key, and ask ``/v1/decide`` through `decide_async` / `decide_sync`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any

import attrs

from .._guard import Guard, options_from
from .._lifecycle import new_key
from .._protocol.outcomes import OutcomeKind, classify
from .._protocol.requests import Operation
from ..client import AsyncCyclesClient, CyclesClient
from ..defaults import resolve_client
from ..errors import CyclesProtocolError, CyclesTransportError, error_from_response
from ..models import Decision, DecisionRequest, DecisionResponse, ReservationCreateRequest
from ..response import CyclesResponse
from ..streaming import AsyncStreamReservation, StreamReservation, StreamStarter
from ..validation import STANDARD_SUBJECT_FIELDS
from ._steps import Steps

__all__ = [
    "Verdict",
    "commit_steps",
    "create_event_async",
    "decide_async",
    "decide_sync",
    "denial_reason",
    "idempotency_key",
    "is_denial",
    "open_async",
    "open_sync",
    "subject_options",
]

_MAX_KEY = 128
log = logging.getLogger("runcycles.integrations")


def idempotency_key(kind: str, call_id: str, namespace: str | None = None) -> str:
    """A deterministic idempotency key for one framework call (``kind`` e.g. ``"tool"``), namespaced per run
    when ``namespace`` is given; a retry of the same call lands on the same reservation. Long ids are hashed."""
    parts = ["runcycles", kind] + ([namespace] if namespace else []) + [call_id]
    key = ":".join(parts)
    if len(key) <= _MAX_KEY:
        return key
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()
    return f"runcycles:{kind}:sha256:{digest}"


def subject_options(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The subject fields set among a constructor's arguments (pass ``locals()``), as reservation options."""
    return {name: arguments[name] for name in STANDARD_SUBJECT_FIELDS if arguments.get(name) is not None}


@attrs.frozen
class _KeyedGuard(Guard):
    """A `Guard` whose create request carries a given idempotency key."""

    key: str | None = None

    def plan(self, config: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> ReservationCreateRequest:
        request = super().plan(config, args, kwargs)
        return attrs.evolve(request, idempotency_key=self.key) if self.key else request


def _starter(client: CyclesClient | AsyncCyclesClient | None, key: str | None, options: dict[str, Any]) -> Any:
    return StreamStarter(_KeyedGuard(options_from(options), key), client)


async def open_async(
    client: AsyncCyclesClient | None, *, estimate: int, idempotency_key: str | None = None, **options: Any
) -> AsyncStreamReservation:
    """Reserve ``estimate`` (any `reserve_for_stream` option); the caller commits or releases the handle.
    A denial raises the typed `CyclesProtocolError`, an unreachable server `CyclesTransportError`."""
    handle: AsyncStreamReservation = await _starter(client, idempotency_key, {"estimate": estimate, **options})
    return handle


def open_sync(
    client: CyclesClient | None, *, estimate: int, idempotency_key: str | None = None, **options: Any
) -> StreamReservation:
    """The sync twin of `open_async`."""
    handle: StreamReservation = _starter(client, idempotency_key, {"estimate": estimate, **options})._open_sync()
    return handle


def commit_steps(handle: StreamReservation | AsyncStreamReservation, actual: int | None, metrics: Any) -> Steps[None]:
    """Commit ``actual`` with ``metrics``; without one (no usage reported), the estimate marked
    ``actual_source=estimate``. A step (see `_steps`): the handle's flavour decides sync or async."""
    if actual is None:
        yield handle.commit(handle.context.estimate, metadata={"actual_source": "estimate"})
    else:
        yield handle.commit(actual, metrics=metrics)


@attrs.frozen
class Verdict:
    """What ``/v1/decide`` said: ``allowed`` (ALLOW or ALLOW_WITH_CAPS) and, for a DENY, why."""

    allowed: bool
    decision: Decision | str
    reason_code: str | None = None
    retry_after_ms: int | None = None
    response: DecisionResponse | None = None

    @property
    def reason(self) -> str:
        """A short human-readable reason."""
        return self.reason_code or str(getattr(self.decision, "value", self.decision))


def _decision_request(config: Any, estimate: int, options: dict[str, Any]) -> DecisionRequest:
    create = Guard(options_from({"estimate": estimate, **options})).plan(config, (), {})
    return DecisionRequest(
        idempotency_key=new_key(), subject=create.subject, action=create.action, estimate=create.estimate,
        metadata=create.metadata,
    )


def _verdict(response: CyclesResponse) -> Verdict:
    outcome = classify(Operation.DECIDE, response)
    if outcome.kind is OutcomeKind.TRANSIENT and response.is_transport_error:
        raise CyclesTransportError(f"Failed to decide: {response.error_message}", response.transport_error)
    if outcome.kind in (OutcomeKind.TRANSIENT, OutcomeKind.AMBIGUOUS):
        raise CyclesProtocolError(
            "Decide did not produce a schema-valid HTTP 200 response"
            + (f" ({outcome.problem})" if outcome.problem else ""),
            status=response.status, request_id=response.request_id, trace_id=response.trace_id,
        )
    if not outcome.is_success:
        raise error_from_response(response, "Decide failed")
    model: DecisionResponse = outcome.model
    return Verdict(
        allowed=model.decision in (Decision.ALLOW, Decision.ALLOW_WITH_CAPS),
        decision=model.decision,
        reason_code=model.reason_code,
        retry_after_ms=model.retry_after_ms,
        response=model,
    )


async def decide_async(client: AsyncCyclesClient | None, *, estimate: int, **options: Any) -> Verdict:
    """Ask ``/v1/decide`` whether ``estimate`` would be allowed (subject/action options as `with_cycles`).
    Raises `CyclesTransportError` when no answer came and `CyclesProtocolError` for an error or a malformed one."""
    resolved = resolve_client(client, want_async=True)
    assert isinstance(resolved, AsyncCyclesClient)
    request = _decision_request(resolved.config, estimate, options)
    return _verdict(await resolved.decide(request))


def decide_sync(client: CyclesClient | None, *, estimate: int, **options: Any) -> Verdict:
    """The sync twin of `decide_async`."""
    resolved = resolve_client(client, want_async=False)
    assert isinstance(resolved, CyclesClient)
    request = _decision_request(resolved.config, estimate, options)
    return _verdict(resolved.decide(request))


def is_denial(exc: BaseException) -> bool:
    """Whether ``exc`` is the server refusing budget (a 409 or a ``DENY`` decision), not a failure."""
    return isinstance(exc, CyclesProtocolError) and exc.status in (200, 409)


def denial_reason(exc: CyclesProtocolError) -> str:
    """The reason code of a denial (else its message)."""
    return exc.reason_code or str(exc)


async def create_event_async(
    client: AsyncCyclesClient | None, *, amount: int, metadata: Mapping[str, Any] | None = None, **options: Any
) -> bool:
    """Record ``amount`` as a post-only event (``POST /v1/events``) under the subject/action options.
    Never raises for the answer: a failure is logged and False returned (an event is accounting, not a gate)."""
    from ..models import Amount, EventCreateRequest

    resolved = resolve_client(client, want_async=True)
    assert isinstance(resolved, AsyncCyclesClient)
    create = Guard(options_from({"estimate": amount, **options})).plan(resolved.config, (), {})
    request = EventCreateRequest(
        idempotency_key=new_key(), subject=create.subject, action=create.action,
        actual=Amount(unit=create.estimate.unit, amount=amount), metadata=dict(metadata) if metadata else None,
    )
    response = await resolved.create_event(request)
    outcome = classify(Operation.EVENT, response)
    if not outcome.is_success:
        log.error(
            "could not record the %s event (%s): the event is not on the ledger",
            create.action.kind, outcome.problem or response.error_message or response.status,
        )
    return outcome.is_success
