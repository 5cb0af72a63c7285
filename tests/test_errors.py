"""The exception hierarchy and response -> exception mapping."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from runcycles._protocol.requests import parse_response, transport_failure
from runcycles.errors import (
    AuthenticationError,
    BudgetExceededError,
    CyclesError,
    CyclesProtocolError,
    CyclesTransportError,
    DebtOutstandingError,
    OverdraftLimitExceededError,
    PermissionDeniedError,
    ReservationExpiredError,
    ReservationFinalizedError,
    ResponseFormatError,
    TenantClosedError,
    denial_error,
    error_code_of,
    error_from_response,
)
from runcycles.models import ErrorCode
from runcycles.response import CyclesResponse


def wire(status: int, body: Any = None, headers: dict[str, str] | None = None) -> CyclesResponse:
    content = b"" if body is None else json.dumps(body).encode()
    return parse_response(status, httpx.Headers(headers or {}), content)


def err_body(code: str, **more: Any) -> dict[str, Any]:
    return {"error": code, "message": f"{code} happened", "request_id": "req-1", **more}


# --------------------------------------------------------------------------- hierarchy


@pytest.mark.parametrize(
    "cls",
    [
        BudgetExceededError,
        OverdraftLimitExceededError,
        DebtOutstandingError,
        ReservationExpiredError,
        ReservationFinalizedError,
        TenantClosedError,
        AuthenticationError,
        PermissionDeniedError,
    ],
)
def test_protocol_subclasses(cls: type[CyclesProtocolError]) -> None:
    assert issubclass(cls, CyclesProtocolError)
    assert issubclass(cls, CyclesError)
    assert not issubclass(cls, CyclesTransportError)


def test_transport_and_format_errors() -> None:
    assert issubclass(CyclesProtocolError, CyclesError)
    assert issubclass(CyclesTransportError, CyclesError)
    assert not issubclass(CyclesTransportError, CyclesProtocolError)
    assert issubclass(ResponseFormatError, CyclesError)
    assert issubclass(ResponseFormatError, ValueError)


def test_transport_error_chains_its_cause() -> None:
    cause = httpx.ConnectError("connection refused")
    exc = CyclesTransportError("Failed to create reservation: refused", cause)
    assert exc.__cause__ is cause
    assert exc.cause is cause
    assert str(exc) == "Failed to create reservation: refused"
    with pytest.raises(CyclesTransportError) as info:
        raise exc
    assert info.value.__cause__ is cause


def test_transport_error_without_cause() -> None:
    exc = CyclesTransportError("boom")
    assert exc.__cause__ is None
    assert exc.cause is None


def test_protocol_error_defaults() -> None:
    exc = CyclesProtocolError("m")
    assert str(exc) == "m"
    assert exc.status == 0
    assert exc.error_code is None
    assert exc.reason_code is None
    assert exc.retry_after_ms is None
    assert exc.request_id is None
    assert exc.trace_id is None
    assert exc.details == {}
    assert "CyclesProtocolError" in repr(exc)


# --------------------------------------------------------------------------- mapping by code


@pytest.mark.parametrize(
    ("code", "status", "cls"),
    [
        ("BUDGET_EXCEEDED", 409, BudgetExceededError),
        ("OVERDRAFT_LIMIT_EXCEEDED", 409, OverdraftLimitExceededError),
        ("DEBT_OUTSTANDING", 409, DebtOutstandingError),
        ("RESERVATION_EXPIRED", 410, ReservationExpiredError),
        ("RESERVATION_FINALIZED", 409, ReservationFinalizedError),
        ("TENANT_CLOSED", 409, TenantClosedError),
        # The body's code wins over the status.
        ("BUDGET_EXCEEDED", 400, BudgetExceededError),
        ("RESERVATION_EXPIRED", 409, ReservationExpiredError),
    ],
)
def test_mapping_by_error_code(code: str, status: int, cls: type[CyclesProtocolError]) -> None:
    exc = error_from_response(wire(status, err_body(code)), "Failed to commit")
    assert type(exc) is cls
    assert exc.error_code is ErrorCode(code)
    assert exc.status == status
    assert exc.reason_code == code
    assert str(exc) == f"Failed to commit: {code} happened"


@pytest.mark.parametrize(
    "code",
    [
        "INVALID_REQUEST",
        "NOT_FOUND",
        "BUDGET_FROZEN",
        "BUDGET_CLOSED",
        "IDEMPOTENCY_MISMATCH",
        "UNIT_MISMATCH",
        "MAX_EXTENSIONS_EXCEEDED",
        "LIMIT_EXCEEDED",
        "INTERNAL_ERROR",
        "ACTION_QUOTA_EXCEEDED",
    ],
)
def test_other_known_codes_give_the_base_class(code: str) -> None:
    exc = error_from_response(wire(409, err_body(code)), "x")
    assert type(exc) is CyclesProtocolError
    assert exc.error_code is ErrorCode(code)


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, ErrorCode.INVALID_REQUEST, CyclesProtocolError),
        (401, ErrorCode.UNAUTHORIZED, AuthenticationError),
        (403, ErrorCode.FORBIDDEN, PermissionDeniedError),
        (404, ErrorCode.NOT_FOUND, CyclesProtocolError),
        (410, ErrorCode.RESERVATION_EXPIRED, ReservationExpiredError),
        (429, ErrorCode.LIMIT_EXCEEDED, CyclesProtocolError),
        (500, ErrorCode.INTERNAL_ERROR, CyclesProtocolError),
        (502, ErrorCode.INTERNAL_ERROR, CyclesProtocolError),
        (503, ErrorCode.INTERNAL_ERROR, CyclesProtocolError),
        (409, None, CyclesProtocolError),
        (418, None, CyclesProtocolError),
    ],
)
@pytest.mark.parametrize("body", [None, {}, {"message": "no code here"}, ["not", "an", "object"], {"error": ""}])
def test_codeless_body_falls_back_to_status(
    status: int, code: ErrorCode | None, cls: type[CyclesProtocolError], body: Any
) -> None:
    response = wire(status, body)
    assert error_code_of(response) is code
    exc = error_from_response(response, "Failed")
    assert type(exc) is cls
    assert exc.error_code is code
    assert exc.status == status
    assert exc.reason_code == (code.value if code is not None else None)


def test_codeless_body_message_uses_the_body_message() -> None:
    exc = error_from_response(wire(404, {"message": "no such reservation"}), "Failed to get")
    assert str(exc) == "Failed to get: no such reservation"


def test_unknown_code_is_unknown_and_plain() -> None:
    response = wire(409, err_body("QUOTA_MOON_PHASE"))
    assert error_code_of(response) is ErrorCode.UNKNOWN
    exc = error_from_response(response, "Failed")
    assert type(exc) is CyclesProtocolError
    assert exc.error_code is ErrorCode.UNKNOWN
    assert exc.reason_code == "UNKNOWN"


def test_non_string_code_falls_back_to_status() -> None:
    response = wire(410, {"error": 17, "message": "m", "request_id": "r"})
    assert error_code_of(response) is ErrorCode.RESERVATION_EXPIRED
    assert type(error_from_response(response, "x")) is ReservationExpiredError


# --------------------------------------------------------------------------- fields kept


def test_ids_details_reason_code_are_kept() -> None:
    body = err_body(
        "BUDGET_EXCEEDED",
        trace_id="d" * 32,
        details={"scope": "tenant:acme", "remaining": 0},
        reason_code="BUDGET_EXCEEDED_AT_WORKSPACE",
    )
    exc = error_from_response(wire(409, body), "Reservation denied")
    assert isinstance(exc, BudgetExceededError)
    assert exc.request_id == "req-1"
    assert exc.trace_id == "d" * 32
    assert exc.details == {"scope": "tenant:acme", "remaining": 0}
    assert exc.reason_code == "BUDGET_EXCEEDED_AT_WORKSPACE"


def test_body_request_id_wins_over_the_header_trace_id_from_the_header() -> None:
    """API.md §3: a denial exception takes ``request_id`` from the body first, then ``X-Request-Id``."""
    headers = {"X-Request-Id": "hdr-req", "X-Cycles-Trace-Id": "e" * 32}
    exc = error_from_response(wire(409, err_body("DEBT_OUTSTANDING", trace_id="f" * 32), headers), "x")
    assert exc.request_id == err_body("DEBT_OUTSTANDING")["request_id"]
    assert exc.trace_id == "e" * 32
    no_body_id = {k: v for k, v in err_body("DEBT_OUTSTANDING").items() if k != "request_id"}
    assert error_from_response(wire(409, no_body_id, headers), "x").request_id == "hdr-req"


def test_non_mapping_details_are_dropped() -> None:
    exc = error_from_response(wire(409, err_body("BUDGET_EXCEEDED", details=[1, 2])), "x")
    assert exc.details == {}


@pytest.mark.parametrize(
    ("body_retry", "header", "expected"),
    [
        (1500, "9", 1500),
        (0, "9", 0),
        (None, "9", 9000),
        ("1500", "2", 2000),  # a string in the body is not an int
        (True, "2", 2000),
        (-5, "2", 2000),
        (None, "Wed, 21 Oct 2015 07:28:00 GMT", None),
        (None, None, None),
    ],
)
def test_retry_after_from_body_else_header(body_retry: Any, header: str | None, expected: int | None) -> None:
    body = err_body("LIMIT_EXCEEDED")
    if body_retry is not None:
        body["retry_after_ms"] = body_retry
    exc = error_from_response(wire(429, body, {"Retry-After": header} if header else None), "x")
    assert exc.retry_after_ms == expected


# --------------------------------------------------------------------------- predicates


PREDICATES = {
    "BUDGET_EXCEEDED": "is_budget_exceeded",
    "OVERDRAFT_LIMIT_EXCEEDED": "is_overdraft_limit_exceeded",
    "DEBT_OUTSTANDING": "is_debt_outstanding",
    "RESERVATION_EXPIRED": "is_reservation_expired",
    "RESERVATION_FINALIZED": "is_reservation_finalized",
    "IDEMPOTENCY_MISMATCH": "is_idempotency_mismatch",
    "UNIT_MISMATCH": "is_unit_mismatch",
    "TENANT_CLOSED": "is_tenant_closed",
}


@pytest.mark.parametrize("code", sorted(PREDICATES))
def test_exactly_one_predicate_is_true(code: str) -> None:
    exc = error_from_response(wire(409, err_body(code)), "x")
    for other, predicate in PREDICATES.items():
        assert getattr(exc, predicate)() is (other == code), (code, predicate)


def test_predicates_false_without_code() -> None:
    exc = error_from_response(wire(409, None), "x")
    assert not any(getattr(exc, p)() for p in PREDICATES.values())


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (-1, None, True),
        (500, "INTERNAL_ERROR", True),
        (502, None, True),
        (503, None, True),
        (429, "LIMIT_EXCEEDED", True),
        (429, None, True),
        (409, "BUDGET_EXCEEDED", False),
        (409, "RESERVATION_FINALIZED", False),
        (409, None, False),
        (400, "INVALID_REQUEST", False),
        (401, "UNAUTHORIZED", False),
        (404, "NOT_FOUND", False),
        (410, "RESERVATION_EXPIRED", False),
    ],
)
def test_is_retryable(status: int, code: str | None, retryable: bool) -> None:
    body = err_body(code) if code else None
    response = transport_failure(httpx.ConnectError("down")) if status == -1 else wire(status, body)
    exc = error_from_response(response, "x")
    assert exc.status == status
    assert exc.is_retryable() is retryable


# --------------------------------------------------------------------------- denial_error


def test_denial_error_for_200_deny_is_budget_exceeded() -> None:
    body = {
        "decision": "DENY",
        "reason_code": "BUDGET_EXCEEDED",
        "affected_scopes": ["tenant:acme"],
        "retry_after_ms": 2500,
        "deny_detail": {"reason_code": "BUDGET_EXCEEDED", "blocked_by_scope": "tenant:acme"},
    }
    response = wire(200, body, {"X-Request-Id": "req-deny", "X-Cycles-Trace-Id": "a" * 32})
    exc = denial_error(response, reason_code="BUDGET_EXCEEDED", retry_after_ms=2500, prefix="Reservation denied")
    assert type(exc) is BudgetExceededError
    assert exc.is_budget_exceeded()
    assert exc.status == 200
    assert exc.error_code is ErrorCode.BUDGET_EXCEEDED
    assert exc.reason_code == "BUDGET_EXCEEDED"
    assert exc.retry_after_ms == 2500
    assert exc.request_id == "req-deny"
    assert exc.trace_id == "a" * 32
    assert exc.details == {"deny_detail": body["deny_detail"]}
    assert str(exc) == "Reservation denied: BUDGET_EXCEEDED"
    assert not exc.is_retryable()


@pytest.mark.parametrize(
    ("reason", "cls"),
    [
        ("OVERDRAFT_LIMIT_EXCEEDED", OverdraftLimitExceededError),
        ("DEBT_OUTSTANDING", DebtOutstandingError),
        ("TENANT_CLOSED", TenantClosedError),
        ("BUDGET_FROZEN", CyclesProtocolError),
        ("ACTION_KIND_DENIED", CyclesProtocolError),
    ],
)
def test_denial_error_classes(reason: str, cls: type[CyclesProtocolError]) -> None:
    exc = denial_error(wire(200, {"decision": "DENY"}), reason_code=reason, retry_after_ms=None, prefix="Denied")
    assert type(exc) is cls
    assert exc.error_code is ErrorCode(reason)
    assert exc.details == {}


def test_denial_error_unknown_reason_code() -> None:
    exc = denial_error(wire(200, {"decision": "DENY"}), reason_code="NEW_REASON", retry_after_ms=None, prefix="Denied")
    assert type(exc) is CyclesProtocolError
    assert exc.error_code is ErrorCode.UNKNOWN
    assert exc.reason_code == "NEW_REASON"


def test_denial_error_without_reason_code() -> None:
    exc = denial_error(wire(200, {"decision": "DENY"}), reason_code=None, retry_after_ms=None, prefix="Denied")
    assert type(exc) is CyclesProtocolError
    assert exc.error_code is None
    assert str(exc) == "Denied"


def test_denial_error_request_id_from_body_when_no_header() -> None:
    exc = denial_error(
        wire(200, {"decision": "DENY", "request_id": "body-req"}),
        reason_code="BUDGET_EXCEEDED",
        retry_after_ms=None,
        prefix="Denied",
    )
    assert exc.request_id == "body-req"


# --------------------------------------------------------------------------- issue 8: typed statuses, URLs, ids


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [(401, "UNAUTHORIZED", AuthenticationError), (403, "FORBIDDEN", PermissionDeniedError)],
)
def test_401_and_403_have_their_own_classes(status: int, code: str, cls: type[CyclesProtocolError]) -> None:
    with_code = error_from_response(wire(status, err_body(code)), "x")
    assert type(with_code) is cls and with_code.status == status
    # By status alone (no or an unknown code), and by code alone (whatever the status).
    assert type(error_from_response(wire(status, {"error": "SOMETHING_NEW", "message": "m"}), "x")) is cls
    assert type(error_from_response(wire(400, err_body(code)), "x")) is cls


def test_transport_error_names_the_url_it_could_not_reach() -> None:
    request = httpx.Request("POST", "http://127.0.0.1:9/v1/reservations")
    cause = httpx.ConnectError("connection refused", request=request)
    exc = CyclesTransportError("Failed to create reservation: refused", cause)
    assert exc.url == "http://127.0.0.1:9/v1/reservations"
    assert "http://127.0.0.1:9/v1/reservations" in str(exc)
    assert CyclesTransportError("x", url="http://h/").url == "http://h/"


def test_transport_error_from_a_real_unreachable_port_names_it() -> None:
    import socket

    from runcycles import CyclesClient, CyclesConfig, with_cycles
    from runcycles import CyclesTransportError as Err

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    config = CyclesConfig(base_url=f"http://127.0.0.1:{port}", api_key="k", tenant="t", journal_enabled=False)
    with CyclesClient(config) as client:

        @with_cycles(estimate=1, client=client)
        def work() -> int:
            return 1

        with pytest.raises(Err) as caught:
            work()
    assert f"127.0.0.1:{port}" in str(caught.value)


def test_denial_request_id_comes_from_the_body_before_the_header() -> None:
    body = {"decision": "DENY", "reason_code": "BUDGET_EXCEEDED", "request_id": "body-req"}
    response = wire(200, body, {"X-Request-Id": "hdr-req"})
    exc = denial_error(response, reason_code="BUDGET_EXCEEDED", retry_after_ms=None, prefix="Denied")
    assert exc.request_id == "body-req"
    only_header = wire(200, {"decision": "DENY"}, {"X-Request-Id": "hdr-req"})
    assert denial_error(only_header, reason_code=None, retry_after_ms=None, prefix="D").request_id == "hdr-req"
