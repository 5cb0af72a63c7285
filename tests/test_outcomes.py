"""classify(): what one answer means for the operation that got it."""

from __future__ import annotations

import copy
import json
from typing import Any

import httpx
import pytest

from runcycles._protocol.outcomes import OutcomeKind, classify
from runcycles._protocol.requests import Operation, parse_response, transport_failure
from runcycles.models import (
    BalanceResponse,
    CommitResponse,
    Decision,
    DecisionResponse,
    ErrorCode,
    EventCreateResponse,
    ReleaseResponse,
    ReservationCreateResponse,
    ReservationDetail,
    ReservationExtendResponse,
    ReservationListResponse,
)
from runcycles.response import CyclesResponse

AMOUNT = {"unit": "USD_MICROCENTS", "amount": 1000}
SUMMARY = {
    "reservation_id": "r-1",
    "status": "ACTIVE",
    "subject": {"tenant": "acme"},
    "action": {"kind": "llm.completion", "name": "gpt"},
    "reserved": AMOUNT,
    "created_at_ms": 1_700_000_000_000,
    "expires_at_ms": 1_700_000_060_000,
    "scope_path": "tenant:acme",
    "affected_scopes": ["tenant:acme"],
}

# operation -> (success status, schema-valid body, model class)
SUCCESS: dict[Operation, tuple[int, dict[str, Any], type]] = {
    Operation.CREATE: (
        200,
        {
            "decision": "ALLOW",
            "reservation_id": "r-1",
            "affected_scopes": ["tenant:acme"],
            "reserved": AMOUNT,
            "expires_at_ms": 1_700_000_060_000,
            "scope_path": "tenant:acme",
        },
        ReservationCreateResponse,
    ),
    Operation.COMMIT: (200, {"status": "COMMITTED", "charged": AMOUNT}, CommitResponse),
    Operation.RELEASE: (200, {"status": "RELEASED", "released": AMOUNT}, ReleaseResponse),
    Operation.EXTEND: (200, {"status": "ACTIVE", "expires_at_ms": 1_700_000_090_000}, ReservationExtendResponse),
    Operation.DECIDE: (200, {"decision": "ALLOW"}, DecisionResponse),
    Operation.EVENT: (201, {"status": "APPLIED", "event_id": "ev-1"}, EventCreateResponse),
    Operation.GET: (200, SUMMARY, ReservationDetail),
    Operation.LIST: (200, {"reservations": [SUMMARY], "has_more": False}, ReservationListResponse),
    Operation.BALANCES: (200, {"balances": []}, BalanceResponse),
}
MUTATING = [Operation.CREATE, Operation.COMMIT, Operation.RELEASE, Operation.EXTEND, Operation.DECIDE, Operation.EVENT]
ALL_OPS = list(SUCCESS)

# operation -> a field whose absence makes the success body unreadable
REQUIRED = {
    Operation.CREATE: "affected_scopes",
    Operation.COMMIT: "charged",
    Operation.RELEASE: "released",
    Operation.EXTEND: "expires_at_ms",
    Operation.DECIDE: "decision",
    Operation.EVENT: "event_id",
    Operation.GET: "reservation_id",
    Operation.LIST: "reservations",
    Operation.BALANCES: "balances",
}

# operation -> (field, a readable but wrong value for that operation's success)
WRONG = {
    Operation.CREATE: ("decision", "MAYBE"),
    Operation.COMMIT: ("status", "RELEASED"),
    Operation.RELEASE: ("status", "COMMITTED"),
    Operation.EXTEND: ("status", "EXPIRED"),
    Operation.DECIDE: ("decision", "PERHAPS"),
    Operation.EVENT: ("status", "QUEUED"),
}


def answer(
    status: int, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None
) -> CyclesResponse:
    content = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    return parse_response(status, httpx.Headers(headers or {}), content)


def error(code: str) -> dict[str, Any]:
    return {"error": code, "message": "m", "request_id": "req-1"}


# --------------------------------------------------------------------------- success


@pytest.mark.parametrize("operation", ALL_OPS)
def test_exact_status_and_valid_body_is_success(operation: Operation) -> None:
    status, body, model_cls = SUCCESS[operation]
    outcome = classify(operation, answer(status, body))
    assert outcome.kind is OutcomeKind.SUCCESS
    assert outcome.is_success
    assert isinstance(outcome.model, model_cls)


@pytest.mark.parametrize("operation", ALL_OPS)
def test_unknown_extra_fields_are_still_success(operation: Operation) -> None:
    status, body, _ = SUCCESS[operation]
    body = {**body, "future_field": {"nested": [1, 2]}, "another_v2_field": "x"}
    outcome = classify(operation, answer(status, body))
    assert outcome.kind is OutcomeKind.SUCCESS
    assert outcome.model.extra["future_field"] == {"nested": [1, 2]}


def test_success_models_carry_the_values() -> None:
    commit = classify(Operation.COMMIT, answer(*SUCCESS[Operation.COMMIT][:2])).model
    assert commit.charged.amount == 1000
    create = classify(Operation.CREATE, answer(*SUCCESS[Operation.CREATE][:2])).model
    assert create.decision is Decision.ALLOW
    assert create.reservation_id == "r-1"


@pytest.mark.parametrize("decision", ["ALLOW_WITH_CAPS", "DENY"])
@pytest.mark.parametrize("operation", [Operation.CREATE, Operation.DECIDE])
def test_every_known_decision_is_a_readable_answer(operation: Operation, decision: str) -> None:
    status, body, _ = SUCCESS[operation]
    outcome = classify(operation, answer(status, {**body, "decision": decision, "reason_code": "BUDGET_EXCEEDED"}))
    assert outcome.kind is OutcomeKind.SUCCESS
    assert outcome.model.decision is Decision(decision)


# --------------------------------------------------------------------------- ambiguous 2xx


@pytest.mark.parametrize("operation", MUTATING)
@pytest.mark.parametrize("status", [202, 204, 206])
def test_other_2xx_is_ambiguous(operation: Operation, status: int) -> None:
    _, body, _ = SUCCESS[operation]
    outcome = classify(operation, answer(status, body))
    assert outcome.kind is OutcomeKind.AMBIGUOUS
    assert outcome.model is None
    assert not outcome.is_success


@pytest.mark.parametrize("operation", ALL_OPS)
def test_missing_required_field_is_ambiguous(operation: Operation) -> None:
    status, body, _ = SUCCESS[operation]
    body = copy.deepcopy(body)
    del body[REQUIRED[operation]]
    outcome = classify(operation, answer(status, body))
    assert outcome.kind is OutcomeKind.AMBIGUOUS
    assert outcome.problem and REQUIRED[operation] in outcome.problem


@pytest.mark.parametrize("operation", list(WRONG))
def test_wrong_status_or_decision_is_ambiguous(operation: Operation) -> None:
    status, body, _ = SUCCESS[operation]
    field, value = WRONG[operation]
    outcome = classify(operation, answer(status, {**body, field: value}))
    assert outcome.kind is OutcomeKind.AMBIGUOUS


UNREADABLE = [b"", b"not json", b'{"status": "COMMI', b"[1, 2]", b'"COMMITTED"', b"null", b"\xff\xfe"]


@pytest.mark.parametrize("operation", ALL_OPS)
@pytest.mark.parametrize("raw", UNREADABLE)
def test_unreadable_success_body_is_ambiguous(operation: Operation, raw: bytes) -> None:
    status, _, _ = SUCCESS[operation]
    assert classify(operation, answer(status, raw=raw)).kind is OutcomeKind.AMBIGUOUS


def test_201_on_commit_is_ambiguous() -> None:
    outcome = classify(Operation.COMMIT, answer(201, SUCCESS[Operation.COMMIT][1]))
    assert outcome.kind is OutcomeKind.AMBIGUOUS
    assert outcome.problem == "status 201, expected 200"


def test_200_on_event_is_ambiguous() -> None:
    outcome = classify(Operation.EVENT, answer(200, SUCCESS[Operation.EVENT][1]))
    assert outcome.kind is OutcomeKind.AMBIGUOUS
    assert outcome.problem == "status 200, expected 201"


def test_wrongly_typed_amount_is_ambiguous() -> None:
    body = {"status": "COMMITTED", "charged": {"unit": "USD_MICROCENTS", "amount": 10.5}}
    assert classify(Operation.COMMIT, answer(200, body)).kind is OutcomeKind.AMBIGUOUS


@pytest.mark.parametrize("status", [100, 301, 304])
def test_non_2xx_non_error_is_ambiguous(status: int) -> None:
    assert classify(Operation.COMMIT, answer(status)).kind is OutcomeKind.AMBIGUOUS


# --------------------------------------------------------------------------- transient / rate limited


@pytest.mark.parametrize("operation", ALL_OPS)
@pytest.mark.parametrize(
    "exc", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("eof")]
)
def test_transport_failure_is_transient(operation: Operation, exc: Exception) -> None:
    outcome = classify(operation, transport_failure(exc))
    assert outcome.kind is OutcomeKind.TRANSIENT
    assert outcome.response.transport_error is exc


@pytest.mark.parametrize("operation", ALL_OPS)
@pytest.mark.parametrize("status", [500, 502, 503, 504])
@pytest.mark.parametrize("body", [None, {"error": "INTERNAL_ERROR", "message": "m", "request_id": "r"}])
def test_5xx_is_transient(operation: Operation, status: int, body: Any) -> None:
    outcome = classify(operation, answer(status, body))
    assert outcome.kind is OutcomeKind.TRANSIENT
    assert outcome.error_code is ErrorCode.INTERNAL_ERROR


def test_5xx_with_a_success_shaped_body_is_still_transient() -> None:
    assert classify(Operation.COMMIT, answer(503, SUCCESS[Operation.COMMIT][1])).kind is OutcomeKind.TRANSIENT


@pytest.mark.parametrize("operation", MUTATING)
def test_429_is_rate_limited_with_retry_after(operation: Operation) -> None:
    outcome = classify(operation, answer(429, error("LIMIT_EXCEEDED"), {"Retry-After": "7"}))
    assert outcome.kind is OutcomeKind.RATE_LIMITED
    assert outcome.retry_after_ms == 7000
    assert outcome.error_code is ErrorCode.LIMIT_EXCEEDED


@pytest.mark.parametrize(
    ("header", "expected"), [(None, None), ("Wed, 21 Oct 2015 07:28:00 GMT", None), ("-1", None), ("0", 0)]
)
def test_429_retry_after_only_delta_seconds(header: str | None, expected: int | None) -> None:
    outcome = classify(Operation.COMMIT, answer(429, None, {"Retry-After": header} if header else None))
    assert outcome.kind is OutcomeKind.RATE_LIMITED
    assert outcome.retry_after_ms == expected


def test_limit_exceeded_code_on_another_status_is_rate_limited() -> None:
    outcome = classify(Operation.COMMIT, answer(409, error("LIMIT_EXCEEDED")))
    assert outcome.kind is OutcomeKind.RATE_LIMITED


# --------------------------------------------------------------------------- expired / finalized


@pytest.mark.parametrize("operation", MUTATING)
@pytest.mark.parametrize("body", [None, {"message": "gone"}, error("RESERVATION_EXPIRED")])
def test_410_is_expired(operation: Operation, body: Any) -> None:
    outcome = classify(operation, answer(410, body))
    assert outcome.kind is OutcomeKind.EXPIRED
    assert outcome.error_code is ErrorCode.RESERVATION_EXPIRED


def test_reservation_expired_code_on_409_is_expired() -> None:
    assert classify(Operation.COMMIT, answer(409, error("RESERVATION_EXPIRED"))).kind is OutcomeKind.EXPIRED


@pytest.mark.parametrize("operation", MUTATING)
def test_reservation_finalized(operation: Operation) -> None:
    outcome = classify(operation, answer(409, error("RESERVATION_FINALIZED")))
    assert outcome.kind is OutcomeKind.FINALIZED
    assert outcome.error_code is ErrorCode.RESERVATION_FINALIZED


# --------------------------------------------------------------------------- terminal / retain


TERMINAL = [
    (400, "INVALID_REQUEST"),
    (400, "UNIT_MISMATCH"),
    (404, "NOT_FOUND"),
    (409, "BUDGET_EXCEEDED"),
    (409, "BUDGET_FROZEN"),
    (409, "BUDGET_CLOSED"),
    (409, "OVERDRAFT_LIMIT_EXCEEDED"),
    (409, "DEBT_OUTSTANDING"),
    (409, "IDEMPOTENCY_MISMATCH"),
    (400, "IDEMPOTENCY_MISMATCH"),
    (409, "TENANT_CLOSED"),
    (409, "MAX_EXTENSIONS_EXCEEDED"),
    (409, "ACTION_QUOTA_EXCEEDED"),
    (409, "ACTION_KIND_NOT_ALLOWED"),
    (409, "ACTION_KIND_DENIED"),
]


@pytest.mark.parametrize("operation", MUTATING)
@pytest.mark.parametrize(("status", "code"), TERMINAL)
def test_understood_4xx_codes_are_terminal(operation: Operation, status: int, code: str) -> None:
    outcome = classify(operation, answer(status, error(code)))
    assert outcome.kind is OutcomeKind.TERMINAL
    assert outcome.error_code is ErrorCode(code)
    assert outcome.problem == "m"


@pytest.mark.parametrize("operation", MUTATING)
@pytest.mark.parametrize(
    ("status", "body"),
    [
        (401, error("UNAUTHORIZED")),
        (403, error("FORBIDDEN")),
        (401, None),
        (403, None),
        (400, None),  # codeless
        (404, None),
        (409, None),
        (409, {"message": "conflict, but which?"}),
        (422, b"<html>nope</html>"),
        (409, error("A_CODE_FROM_THE_FUTURE")),
        (400, error("A_CODE_FROM_THE_FUTURE")),
        (418, error("")),
        (400, ["INVALID_REQUEST"]),
    ],
)
def test_auth_codeless_and_unknown_4xx_retain(operation: Operation, status: int, body: Any) -> None:
    response = answer(status, raw=body) if isinstance(body, bytes) else answer(status, body)
    outcome = classify(operation, response)
    assert outcome.kind is OutcomeKind.RETAIN


def test_unknown_code_is_reported_as_unknown() -> None:
    outcome = classify(Operation.COMMIT, answer(409, error("A_CODE_FROM_THE_FUTURE")))
    assert outcome.error_code is ErrorCode.UNKNOWN


def test_outcome_keeps_the_response() -> None:
    response = answer(409, error("BUDGET_EXCEEDED"))
    assert classify(Operation.CREATE, response).response is response
