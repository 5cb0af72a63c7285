"""Rules that live in exactly one place and are used everywhere: the metrics-empty rule, the subject field
tuple and the error-code coercion."""

from __future__ import annotations

from typing import Any

import pytest

from runcycles import ErrorCode, error_code_from_string, is_metrics_empty
from runcycles._lifecycle import Reserved, build_settlement
from runcycles.errors import error_code_of
from runcycles.mappers import reservation_create_response_from_wire
from runcycles.models import Action, Amount, CyclesMetrics, ReservationCreateRequest, Subject
from runcycles.response import CyclesResponse
from runcycles.validation import STANDARD_SUBJECT_FIELDS

ALLOW = {
    "decision": "ALLOW",
    "reservation_id": "r-1",
    "affected_scopes": ["tenant:acme"],
    "reserved": {"unit": "USD_MICROCENTS", "amount": 10},
    "expires_at_ms": 1,
    "remaining_ttl_ms": 60000,
}


def _settle_with(metrics: CyclesMetrics | None) -> tuple[Any, Any]:
    reserved = Reserved(
        request=ReservationCreateRequest(
            idempotency_key="key-create",
            subject=Subject(tenant="acme"),
            action=Action(kind="llm.completion", name="m"),
            estimate=Amount(unit="USD_MICROCENTS", amount=10),
        ),
        response=reservation_create_response_from_wire(ALLOW),
        sent_at_ms=0.0,
        received_at_ms=5.0,
    )
    record = build_settlement(reserved=reserved, actual=7, estimated=False, metrics=metrics, metadata=None)
    return record.commit_body.get("metrics"), record.event_body.get("metrics")


@pytest.mark.parametrize(
    ("metrics", "empty"),
    [
        (None, True),
        (CyclesMetrics(), True),
        (CyclesMetrics(custom={}), True),  # an empty custom object carries nothing
        (CyclesMetrics(tokens_input=0), False),  # zero is a value
        (CyclesMetrics(tokens_output=0), False),
        (CyclesMetrics(latency_ms=0), False),
        (CyclesMetrics(model_version=""), False),
        (CyclesMetrics(custom={"a": 1}), False),
    ],
)
def test_one_metrics_empty_rule_for_the_public_helper_the_model_and_the_commit_body(
    metrics: CyclesMetrics | None, empty: bool
) -> None:
    assert is_metrics_empty(metrics) is empty
    if metrics is not None:
        assert metrics.is_empty() is empty
    commit_metrics, event_metrics = _settle_with(metrics)
    if empty:
        assert commit_metrics is None and event_metrics is None
    else:
        assert commit_metrics is not None and commit_metrics == event_metrics


def test_subject_fields_are_one_tuple_in_canonical_scope_order() -> None:
    from runcycles import _cli_runtime, _guard, _lifecycle, config
    from runcycles._protocol import requests

    assert STANDARD_SUBJECT_FIELDS == ("tenant", "workspace", "app", "workflow", "agent", "toolset")
    for alias in (
        _cli_runtime._LEVELS,
        _guard.SUBJECT_FIELDS,
        config._SUBJECT_FIELDS,
        _lifecycle.SUBJECT_FIELDS,
        requests._SUBJECT_FILTERS,
    ):
        assert alias is STANDARD_SUBJECT_FIELDS


@pytest.mark.parametrize(
    ("body_error", "expected"),
    [
        ("BUDGET_EXCEEDED", ErrorCode.BUDGET_EXCEEDED),
        ("SOMETHING_NEW", ErrorCode.UNKNOWN),
        ("", None),
        (None, None),
        (42, None),
    ],
)
def test_error_code_coercion_is_the_same_for_bodies_and_the_public_helper(body_error: Any, expected: Any) -> None:
    # An absent or unusable body code falls back to the one the HTTP status implies.
    fallback = error_code_of(CyclesResponse(status=400, body={}))
    response = CyclesResponse(status=400, body={"error": body_error} if body_error is not None else {})
    assert error_code_of(response) == (expected if expected is not None else fallback)
    if isinstance(body_error, str) and body_error:
        assert error_code_from_string(body_error) is expected
