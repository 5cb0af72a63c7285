"""CyclesResponse accessors: status predicates, headers, body lookups; nothing ever raises."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from runcycles.models import ErrorCode, ErrorResponse
from runcycles.response import CyclesResponse


def resp(status: int = 200, body: Any = None, **headers: str) -> CyclesResponse:
    # Encoded as UTF-8 bytes, as non-ASCII header values would arrive from the wire.
    raw = [(name.encode(), value.encode("utf-8")) for name, value in headers.items()]
    return CyclesResponse(status=status, body=body, headers=httpx.Headers(raw))


# --------------------------------------------------------------------------- status predicates


@pytest.mark.parametrize(
    ("status", "success", "client", "server", "transport"),
    [
        (-1, False, False, False, True),
        (100, False, False, False, False),
        (199, False, False, False, False),
        (200, True, False, False, False),
        (201, True, False, False, False),
        (204, True, False, False, False),
        (299, True, False, False, False),
        (302, False, False, False, False),
        (399, False, False, False, False),
        (400, False, True, False, False),
        (409, False, True, False, False),
        (499, False, True, False, False),
        (500, False, False, True, False),
        (503, False, False, True, False),
        (599, False, False, True, False),
    ],
)
def test_status_predicates(status: int, success: bool, client: bool, server: bool, transport: bool) -> None:
    r = resp(status)
    assert r.status == status
    assert r.is_success is success
    assert r.is_client_error is client
    assert r.is_server_error is server
    assert r.is_transport_error is transport


def test_defaults() -> None:
    r = CyclesResponse(status=-1)
    assert r.body is None
    assert isinstance(r.headers, httpx.Headers)
    assert len(r.headers) == 0
    assert r.error_message is None
    assert r.transport_error is None
    accessors = ("request_id", "trace_id", "cycles_tenant", "rate_limit_remaining", "rate_limit_reset")
    assert r.retry_after_ms is None
    for name in accessors:
        assert getattr(r, name) is None
    assert r.get_body_attribute("x") is None
    assert r.get_error_response() is None


def test_transport_error_kept() -> None:
    exc = httpx.ConnectError("refused")
    r = CyclesResponse(status=-1, error_message="ConnectError: refused", transport_error=exc)
    assert r.transport_error is exc
    assert r.is_transport_error


# --------------------------------------------------------------------------- header accessors


def test_header_accessors_case_insensitive() -> None:
    r = CyclesResponse(
        status=200,
        headers=httpx.Headers(
            {
                "x-request-id": "req-1",
                "X-CYCLES-TRACE-ID": "0af7651916cd43dd8448eb211c80319c",
                "X-Cycles-Tenant": "acme",
                "x-ratelimit-remaining": "42",
                "X-RateLimit-Reset": "1700000000",
                "Retry-After": "3",
            }
        ),
    )
    assert r.request_id == "req-1"
    assert r.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert r.cycles_tenant == "acme"
    assert r.rate_limit_remaining == 42
    assert r.rate_limit_reset == 1700000000
    assert r.retry_after_ms == 3000


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0", 0),
        ("1", 1000),
        ("120", 120_000),
        (" 7 ", 7000),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),
        ("-1", None),
        ("1e3", None),
        ("+3", None),
        ("1.5", None),
        ("", None),
        ("abc", None),
        ("3 s", None),
        ("٣", None),  # a non-ASCII digit is not delta-seconds
        ("9" * 40, None),  # overflow
        (str(2**63), None),
        (str((2**63 - 1) // 1000), ((2**63 - 1) // 1000) * 1000),
    ],
)
def test_retry_after_ms_delta_seconds_only(raw: str, expected: int | None) -> None:
    assert resp(429, **{"Retry-After": raw}).retry_after_ms == expected


@pytest.mark.parametrize("name", ["X-RateLimit-Remaining", "X-RateLimit-Reset"])
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0", 0),
        ("17", 17),
        ("-1", -1),  # the reference server's "no rate limiting" sentinel
        (" 5 ", 5),
        ("1e3", None),
        ("+3", None),
        ("1.5", None),
        ("", None),
        ("-", None),
        ("ten", None),
        ("٣", None),
        ("9" * 40, None),
        (str(2**63), None),
        (str(2**63 - 1), 2**63 - 1),
    ],
)
def test_rate_limit_headers_never_raise(name: str, raw: str, expected: int | None) -> None:
    r = resp(200, **{name: raw})
    value = r.rate_limit_remaining if name == "X-RateLimit-Remaining" else r.rate_limit_reset
    assert value == expected


def test_empty_tenant_header_is_none() -> None:
    assert resp(200, **{"X-Cycles-Tenant": ""}).cycles_tenant is None


# --------------------------------------------------------------------------- request_id / trace_id


def test_ids_from_headers_win_over_body() -> None:
    r = resp(
        409,
        {"request_id": "body-req", "trace_id": "b" * 32},
        **{"X-Request-Id": "hdr-req", "X-Cycles-Trace-Id": "a" * 32},
    )
    assert r.request_id == "hdr-req"
    assert r.trace_id == "a" * 32


def test_ids_fall_back_to_body() -> None:
    r = resp(409, {"request_id": "body-req", "trace_id": "b" * 32})
    assert r.request_id == "body-req"
    assert r.trace_id == "b" * 32


def test_empty_header_ids_fall_back_to_body() -> None:
    r = resp(409, {"request_id": "body-req", "trace_id": "t"}, **{"X-Request-Id": "", "X-Cycles-Trace-Id": ""})
    assert r.request_id == "body-req"
    assert r.trace_id == "t"


def test_non_string_body_ids_are_ignored() -> None:
    r = resp(409, {"request_id": 12, "trace_id": ["x"]})
    assert r.request_id is None
    assert r.trace_id is None


# --------------------------------------------------------------------------- body accessors


def test_get_body_attribute() -> None:
    r = resp(200, {"decision": "ALLOW", "nested": {"a": 1}, "n": None})
    assert r.get_body_attribute("decision") == "ALLOW"
    assert r.get_body_attribute("nested") == {"a": 1}
    assert r.get_body_attribute("n") is None
    assert r.get_body_attribute("missing") is None


ERROR_BODY = {
    "error": "BUDGET_EXCEEDED",
    "message": "Insufficient budget",
    "request_id": "req-9",
    "trace_id": "c" * 32,
    "details": {"scope": "tenant:acme"},
    "future_field": 1,
}


def test_get_error_response_reads_an_error_body() -> None:
    err = resp(409, ERROR_BODY).get_error_response()
    assert isinstance(err, ErrorResponse)
    assert err.error is ErrorCode.BUDGET_EXCEEDED
    assert err.message == "Insufficient budget"
    assert err.request_id == "req-9"
    assert err.trace_id == "c" * 32
    assert err.details == {"scope": "tenant:acme"}
    assert err.extra == {"future_field": 1}


def test_get_error_response_unknown_code_is_unknown() -> None:
    err = resp(400, {**ERROR_BODY, "error": "SOMETHING_NEW"}).get_error_response()
    assert err is not None
    assert err.error is ErrorCode.UNKNOWN


def test_get_error_response_none_on_success() -> None:
    assert resp(200, ERROR_BODY).get_error_response() is None


@pytest.mark.parametrize(
    "body",
    [
        {"error": "BUDGET_EXCEEDED"},  # message and request_id missing
        {"error": 5, "message": "m", "request_id": "r"},
        {"error": "BUDGET_EXCEEDED", "message": None, "request_id": "r"},
        {"error": "BUDGET_EXCEEDED", "message": "m", "request_id": "r", "details": [1, 2]},
        {},
    ],
)
def test_get_error_response_none_for_unreadable_error_objects(body: dict[str, Any]) -> None:
    assert resp(409, body).get_error_response() is None


NON_OBJECT_BODIES: list[Any] = [None, [], [1, {"error": "X"}], "text", "", 0, 3.5, True, False, float("inf")]


@pytest.mark.parametrize("status", [-1, 200, 201, 400, 409, 429, 500])
@pytest.mark.parametrize("body", NON_OBJECT_BODIES)
def test_non_object_bodies_never_raise(status: int, body: Any) -> None:
    r = resp(status, body, **{"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT", "X-RateLimit-Reset": "x"})
    assert r.get_body_attribute("error") is None
    assert r.get_body_attribute("request_id") is None
    assert r.get_error_response() is None
    assert r.request_id is None
    assert r.trace_id is None
    assert r.cycles_tenant is None
    assert r.rate_limit_remaining is None
    assert r.rate_limit_reset is None
    assert r.retry_after_ms is None
    assert r.body is body  # kept as decoded
