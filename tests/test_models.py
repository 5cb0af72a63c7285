"""Unit tests of the models, the wire engine's behaviours and the validation rules/helpers."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from runcycles import mappers, validation
from runcycles.context import CyclesContext
from runcycles.errors import ResponseFormatError
from runcycles.models import (
    Action,
    Amount,
    Balance,
    Caps,
    CommitOveragePolicy,
    CommitRequest,
    CommitResponse,
    CommitStatus,
    CyclesMetrics,
    Decision,
    DecisionRequest,
    DenyDetail,
    DryRunResult,
    ErrorCode,
    ErrorResponse,
    EventCreateRequest,
    ObserveMode,
    PolicyKeys,
    ReleaseRequest,
    ReservationCreateRequest,
    ReservationCreateResponse,
    ReservationExtendRequest,
    ReservationStatus,
    SignedAmount,
    StandardMetrics,
    Subject,
    Unit,
)
from runcycles.validation import (
    error_code_from_string,
    is_allowed,
    is_denied,
    is_metrics_empty,
    is_retryable_error_code,
    is_tool_allowed,
    validate_amount,
    validate_model,
)

SUBJECT = Subject(tenant="acme")
ACTION = Action(kind="llm.completion", name="gpt")
EST = Amount(unit=Unit.TOKENS, amount=10)


def reserve(**overrides: Any) -> ReservationCreateRequest:
    values: dict[str, Any] = {
        "idempotency_key": "k1",
        "subject": SUBJECT,
        "action": ACTION,
        "estimate": EST,
    }
    values.update(overrides)
    return ReservationCreateRequest(**values)


def message(fn: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(ValueError) as info:
        fn(*args, **kwargs)
    return str(info.value)


# ---------------------------------------------------------------------------------------------------------
# The exact messages of API.md §5
# ---------------------------------------------------------------------------------------------------------


def test_subject_without_standard_field() -> None:
    expected = (
        "Subject must have at least one standard field (tenant, workspace, app, workflow, agent, or toolset)"
    )
    assert message(Subject) == expected
    assert message(Subject, dimensions={"cost_center": "x"}) == expected
    assert message(Subject, tenant="") == expected  # blank is not a value
    assert Subject(toolset="t").toolset == "t"  # any one standard field is enough


def test_estimate_must_be_non_negative() -> None:
    assert message(validate_amount, "estimate", -1) == "estimate must be non-negative"
    assert validate_amount("estimate", 0) == 0


@pytest.mark.parametrize("bad", [999, 86_400_001, 0, -5])
def test_ttl_message(bad: int) -> None:
    assert message(reserve, ttl_ms=bad) == "ttl_ms must be between 1000 and 86400000"
    assert message(validation.validate_ttl_ms, bad) == "ttl_ms must be between 1000 and 86400000"


@pytest.mark.parametrize("bad", [-1, 60_001])
def test_grace_period_message(bad: int) -> None:
    assert message(reserve, grace_period_ms=bad) == "grace_period_ms must be between 0 and 60000"
    assert message(validation.validate_grace_period_ms, bad) == "grace_period_ms must be between 0 and 60000"


@pytest.mark.parametrize("bad", [0, 86_400_001])
def test_extend_by_message(bad: int) -> None:
    assert (
        message(ReservationExtendRequest, idempotency_key="k", extend_by_ms=bad)
        == "extend_by_ms must be between 1 and 86400000"
    )
    assert message(validation.validate_extend_by_ms, bad) == "extend_by_ms must be between 1 and 86400000"


def test_limits_accept_their_boundaries() -> None:
    assert reserve(ttl_ms=1000, grace_period_ms=0).ttl_ms == 1000
    assert reserve(ttl_ms=86_400_000, grace_period_ms=60_000).grace_period_ms == 60_000
    assert ReservationExtendRequest(idempotency_key="k", extend_by_ms=1).extend_by_ms == 1
    assert ReservationExtendRequest(idempotency_key="k", extend_by_ms=86_400_000).extend_by_ms == 86_400_000


# ---------------------------------------------------------------------------------------------------------
# Field-naming messages
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda: Subject(tenant="t" * 129), "subject.tenant must be at most 128 characters"),
        (lambda: Subject(tenant="a", agent="x" * 129), "subject.agent must be at most 128 characters"),
        (lambda: Subject(tenant=5), "subject.tenant must be a string, got int"),
        (
            lambda: Subject(tenant="a", dimensions={str(i): "v" for i in range(17)}),
            "subject.dimensions must have at most 16 entries",
        ),
        (
            lambda: Subject(tenant="a", dimensions={"k": "v" * 257}),
            "subject.dimensions['k'] must be at most 256 characters",
        ),
        (
            lambda: Subject(tenant="a", dimensions={"k": 1}),
            "subject.dimensions['k'] must be a string, got int",
        ),
        (
            lambda: Subject(tenant="a", dimensions={1: "v"}),
            "subject.dimensions keys must be strings, got int",
        ),
        (lambda: Subject(tenant="a", dimensions=["x"]), "subject.dimensions must be a mapping, got list"),
        (lambda: Action(kind="k" * 65, name="n"), "action.kind must be at most 64 characters"),
        (lambda: Action(kind="k", name="n" * 257), "action.name must be at most 256 characters"),
        (lambda: Action(kind="k", name=None), "action.name is required"),
        (lambda: Action(kind="k", name="n", tags=["t"] * 11), "action.tags must have at most 10 items"),
        (
            lambda: Action(kind="k", name="n", tags=["ok", "t" * 65]),
            "action.tags[1] must be at most 64 characters",
        ),
        (lambda: Action(kind="k", name="n", tags="prod"), "action.tags must be a list of strings, got str"),
        (lambda: Action(kind="k", name="n", tags=[3]), "action.tags[0] must be a string, got int"),
        (
            lambda: PolicyKeys(host="h" * 254),
            "action.policy_keys.host must be at most 253 characters",
        ),
        (
            lambda: PolicyKeys(custom={str(i): "v" for i in range(9)}),
            "action.policy_keys.custom must have at most 8 entries",
        ),
        (
            lambda: Action(kind="k", name="n", policy_keys={}),
            "action.policy_keys must be a PolicyKeys, got dict",
        ),
        (lambda: reserve(idempotency_key=""), "idempotency_key must not be empty"),
        (lambda: reserve(idempotency_key="k" * 257), "idempotency_key must be at most 256 characters"),
        (lambda: reserve(idempotency_key=None), "idempotency_key is required"),
        (lambda: reserve(subject={"tenant": "a"}), "subject must be a Subject, got dict"),
        (lambda: reserve(estimate=10), "estimate must be an Amount, got int"),
        (lambda: reserve(ttl_ms=60_000.0), "ttl_ms must be an int, got float"),
        (lambda: reserve(ttl_ms=True), "ttl_ms must be an int, got bool"),
        (lambda: reserve(dry_run="yes"), "dry_run must be a bool, got str"),
        (lambda: reserve(dry_run=1), "dry_run must be a bool, got int"),
        (
            lambda: reserve(overage_policy="SOMETIMES"),
            "overage_policy must be one of REJECT, ALLOW_IF_AVAILABLE, ALLOW_WITH_OVERDRAFT, got 'SOMETIMES'",
        ),
        (
            lambda: reserve(observe_mode="LOUD"),
            "observe_mode must be one of DISABLED, OBSERVE, ENFORCE, got 'LOUD'",
        ),
        (lambda: reserve(metadata=["x"]), "metadata must be a mapping, got list"),
        (lambda: Amount(unit=Unit.TOKENS, amount=-1), "amount must be non-negative"),
        (lambda: Amount(unit=Unit.TOKENS, amount=True), "amount must be an int, got bool"),
        (lambda: Amount(unit=Unit.TOKENS, amount=1.0), "amount must be an int, got float"),
        (lambda: Amount(unit=Unit.TOKENS, amount="5"), "amount must be an int, got str"),
        (lambda: Amount(unit=Unit.TOKENS, amount=2**63), "amount must be at most 9223372036854775807"),
        (
            lambda: Amount(unit="DOLLARS", amount=1),
            "unit must be one of USD_MICROCENTS, TOKENS, CREDITS, RISK_POINTS, got 'DOLLARS'",
        ),
        (lambda: Amount(unit=None, amount=1), "unit is required"),  # type: ignore[arg-type]
        (lambda: SignedAmount(unit=Unit.TOKENS, amount=False), "amount must be an int, got bool"),
        (lambda: SignedAmount(unit=Unit.TOKENS, amount=-(2**63) - 1), "amount must be at least -9223372036854775808"),
        (lambda: CyclesMetrics(tokens_input=-1), "metrics.tokens_input must be non-negative"),
        (lambda: CyclesMetrics(latency_ms=True), "metrics.latency_ms must be an int, got bool"),
        (
            lambda: CyclesMetrics(model_version="m" * 129),
            "metrics.model_version must be at most 128 characters",
        ),
        (lambda: CyclesMetrics(custom=[1]), "metrics.custom must be a mapping, got list"),
        (
            lambda: ReleaseRequest(idempotency_key="k", reason="r" * 257),
            "reason must be at most 256 characters",
        ),
        (
            lambda: EventCreateRequest(
                idempotency_key="k", subject=SUBJECT, action=ACTION, actual=EST, client_time_ms=-1
            ),
            "client_time_ms must be non-negative",
        ),
        (
            lambda: CommitRequest(idempotency_key="k", actual=EST, metrics={}),
            "metrics must be a CyclesMetrics, got dict",
        ),
        (lambda: ReservationExtendRequest(idempotency_key="k"), None),
    ],
)
def test_field_messages(build: Any, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(TypeError):  # a missing required argument is a TypeError from attrs' __init__
            build()
        return
    assert message(build) == expected


def test_validate_amount_messages() -> None:
    assert message(validate_amount, "actual", -3) == "actual must be non-negative"
    assert message(validate_amount, "actual", True) == "actual must be an int, got bool"
    assert message(validate_amount, "actual", 2.0) == "actual must be an int, got float"
    assert message(validate_amount, "actual", None) == "actual must be an int, got NoneType"
    assert message(validate_amount, "actual", 2**63) == "actual must be at most 9223372036854775807"
    assert validate_amount("actual", 2**63 - 1) == 2**63 - 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (-1, "actual must be non-negative"),
        (True, "actual must be an int, got bool"),
        (1.5, "actual must be an int, got float"),
        (2**63, "actual must be at most 9223372036854775807"),
    ],
)
def test_context_actual_is_checked_on_assignment(value: object, expected: str) -> None:
    context = CyclesContext(reservation_id="r", estimate=1, decision="ALLOW")
    with pytest.raises(ValueError) as info:
        context.actual = value  # type: ignore[assignment]
    assert str(info.value) == expected
    assert context.actual is None
    context.actual = 5
    context.actual = None


def test_limits_at_boundaries_are_accepted() -> None:
    Subject(tenant="t" * 128, dimensions={str(i): "v" * 256 for i in range(16)})
    Action(kind="k" * 64, name="n" * 256, tags=["t" * 64] * 10)
    PolicyKeys(
        host="h" * 253,
        recipient_domain="d" * 253,
        resource_type="r" * 128,
        path_prefix="p" * 512,
        custom={str(i): "v" * 256 for i in range(8)},
    )
    CyclesMetrics(tokens_input=0, model_version="m" * 128)
    ReleaseRequest(idempotency_key="k" * 256, reason="r" * 256)
    Amount(unit=Unit.TOKENS, amount=2**63 - 1)
    SignedAmount(unit=Unit.TOKENS, amount=-(2**63))


# ---------------------------------------------------------------------------------------------------------
# Model conveniences
# ---------------------------------------------------------------------------------------------------------


def test_converters_accept_strings_and_lists() -> None:
    request = reserve(overage_policy="REJECT", observe_mode="OBSERVE")
    assert request.overage_policy is CommitOveragePolicy.REJECT
    assert request.observe_mode is ObserveMode.OBSERVE
    assert Amount(unit="CREDITS", amount=1).unit is Unit.CREDITS
    assert Action(kind="k", name="n", tags=["a", "b"]).tags == ("a", "b")
    assert Caps(tool_allowlist=["x"]).tool_allowlist == ("x",)


def test_sequence_fields_accept_lists_and_store_tuples() -> None:
    balance = Balance(scope="s", scope_path="s", remaining=SignedAmount(unit=Unit.TOKENS, amount=1))
    result = DryRunResult(decision=Decision.ALLOW, affected_scopes=["tenant:a"], balances=[balance])
    assert result.affected_scopes == ("tenant:a",) and result.balances == (balance,)
    assert DryRunResult(decision=Decision.ALLOW).affected_scopes == ()
    response = ReservationCreateResponse(decision=Decision.ALLOW, affected_scopes=["tenant:a"])
    assert response.affected_scopes == ("tenant:a",)
    assert mappers.to_wire(response) == {"decision": "ALLOW", "affected_scopes": ["tenant:a"]}


def test_models_are_frozen_and_keyword_only() -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        EST.amount = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        Amount(Unit.TOKENS, 5)  # type: ignore[misc]


def test_standard_metrics_alias_and_empty() -> None:
    assert StandardMetrics is CyclesMetrics
    assert is_metrics_empty(None)
    assert is_metrics_empty(CyclesMetrics())
    assert is_metrics_empty(CyclesMetrics(custom={}))
    assert not is_metrics_empty(CyclesMetrics(tokens_output=0))
    assert not is_metrics_empty(CyclesMetrics(custom={"a": 1}))
    assert not CyclesMetrics(model_version="v").is_empty()


def test_subject_has_standard_field() -> None:
    assert Subject(workflow="w").has_standard_field()


def test_dry_run_result_from_response() -> None:
    response = mappers.reservation_create_response_from_wire(
        {
            "decision": "ALLOW_WITH_CAPS",
            "affected_scopes": ["tenant:a"],
            "scope_path": "tenant:a",
            "reserved": {"unit": "TOKENS", "amount": 5},
            "caps": {"max_tokens": 100},
            "retry_after_ms": 10,
        }
    )
    result = DryRunResult.from_response(response)
    assert result == DryRunResult(
        decision=Decision.ALLOW_WITH_CAPS,
        caps=Caps(max_tokens=100),
        affected_scopes=("tenant:a",),
        scope_path="tenant:a",
        reserved=Amount(unit=Unit.TOKENS, amount=5),
        retry_after_ms=10,
    )


# ---------------------------------------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------------------------------------


def test_writer_omits_none_and_writes_values() -> None:
    body = mappers.reservation_create_request_to_wire(
        reserve(ttl_ms=60_000, overage_policy=CommitOveragePolicy.ALLOW_IF_AVAILABLE, dry_run=False)
    )
    assert body == {
        "idempotency_key": "k1",
        "subject": {"tenant": "acme"},
        "action": {"kind": "llm.completion", "name": "gpt"},
        "estimate": {"unit": "TOKENS", "amount": 10},
        "ttl_ms": 60_000,
        "overage_policy": "ALLOW_IF_AVAILABLE",
        "dry_run": False,
    }
    assert type(body["overage_policy"]) is str
    assert type(body["estimate"]["unit"]) is str


def test_writer_never_writes_extra() -> None:
    read = mappers.commit_request_from_wire(
        {"idempotency_key": "k", "actual": {"unit": "TOKENS", "amount": 1, "junk": 1}, "overage_policy": "X"}
    )
    assert read.extra == {"overage_policy": "X"}
    assert read.actual.extra == {"junk": 1}
    assert mappers.commit_request_to_wire(read) == {
        "idempotency_key": "k",
        "actual": {"unit": "TOKENS", "amount": 1},
    }


def test_typed_writers_check_their_model() -> None:
    with pytest.raises(TypeError, match="commit_request_to_wire expects a CommitRequest, got ReleaseRequest"):
        mappers.commit_request_to_wire(ReleaseRequest(idempotency_key="k"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got dict"):
        mappers.to_wire({"a": 1})


def test_request_body() -> None:
    raw = {"idempotency_key": "k", "anything": None}
    assert mappers.request_body(raw) is raw
    assert mappers.request_body(ReleaseRequest(idempotency_key="k", reason="r")) == {
        "idempotency_key": "k",
        "reason": "r",
    }
    with pytest.raises(TypeError, match="got list"):
        mappers.request_body([("idempotency_key", "k")])
    with pytest.raises(TypeError, match="got str"):
        mappers.request_body('{"idempotency_key": "k"}')


# ---------------------------------------------------------------------------------------------------------
# Reader
# ---------------------------------------------------------------------------------------------------------


def test_unknown_fields_are_kept_aside() -> None:
    parsed = mappers.commit_response_from_wire(
        {
            "status": "COMMITTED",
            "charged": {"unit": "TOKENS", "amount": 3},
            "balances": [
                {
                    "scope": "tenant:a",
                    "scope_path": "tenant:a",
                    "remaining": {"unit": "TOKENS", "amount": -2},
                    "future": [1],
                }
            ],
            "new_top_level": {"x": 1},
        }
    )
    assert parsed.status is CommitStatus.COMMITTED
    assert parsed.extra == {"new_top_level": {"x": 1}}
    assert parsed.balances is not None
    assert parsed.balances[0].extra == {"future": [1]}
    assert parsed.balances[0].remaining == SignedAmount(unit=Unit.TOKENS, amount=-2)


def test_unknown_enum_values_stay_raw() -> None:
    create = mappers.reservation_create_response_from_wire(
        {
            "decision": "ALLOW_LATER",
            "affected_scopes": [],
            "reserved": {"unit": "GPU_SECONDS", "amount": 1},
            "reason_code": "SOMETHING_NEW",
        }
    )
    assert create.decision == "ALLOW_LATER"
    assert not isinstance(create.decision, Decision)
    assert create.reserved is not None and create.reserved.unit == "GPU_SECONDS"
    assert create.reason_code == "SOMETHING_NEW"
    assert not is_allowed(create.decision) and not is_denied(create.decision)
    commit = mappers.commit_response_from_wire(
        {"status": "PENDING", "charged": {"unit": "TOKENS", "amount": 1}}
    )
    assert commit.status == "PENDING"
    detail = mappers.reservation_summary_from_wire(
        {
            "reservation_id": "r",
            "status": "ARCHIVED",
            "subject": {"tenant": "a"},
            "action": {"kind": "k", "name": "n"},
            "reserved": {"unit": "TOKENS", "amount": 1},
            "created_at_ms": 1,
            "expires_at_ms": 2,
            "scope_path": "tenant:a",
            "affected_scopes": ["tenant:a"],
        }
    )
    assert detail.status == "ARCHIVED"
    ok = mappers.reservation_summary_from_wire({**mappers.to_wire(detail), "status": "ACTIVE"})
    assert ok.status is ReservationStatus.ACTIVE


def test_unknown_error_code_maps_to_unknown_and_keeps_raw() -> None:
    body = {"error": "QUOTA_MELTDOWN", "message": "m", "request_id": "r"}
    parsed = mappers.error_response_from_wire(body)
    assert parsed.error is ErrorCode.UNKNOWN
    assert parsed.error_raw == "QUOTA_MELTDOWN"
    assert parsed.error_string == "QUOTA_MELTDOWN"
    assert mappers.to_wire(parsed) == body  # the raw code is written back, not "UNKNOWN"
    known = mappers.error_response_from_wire({**body, "error": "ACTION_KIND_DENIED"})
    assert known.error is ErrorCode.ACTION_KIND_DENIED
    assert known.error_raw is None
    assert known.error_string == "ACTION_KIND_DENIED"


def test_error_response_deny_detail() -> None:
    parsed = mappers.error_response_from_wire(
        {
            "error": "BUDGET_EXCEEDED",
            "message": "m",
            "request_id": "r",
            "trace_id": "0" * 31 + "1",
            "details": {"deny_detail": {"reason_code": "BUDGET_EXCEEDED", "budget_remaining": -5}},
        }
    )
    assert parsed.deny_detail == DenyDetail(reason_code="BUDGET_EXCEEDED", budget_remaining=-5)
    broken = mappers.error_response_from_wire(
        {"error": "BUDGET_EXCEEDED", "message": "m", "request_id": "r", "details": {"deny_detail": [1]}}
    )
    assert broken.deny_detail is None
    assert ErrorResponse(error=ErrorCode.NOT_FOUND, message="m", request_id="r").deny_detail is None


def test_object_shaped_affected_scopes() -> None:
    parsed = mappers.reservation_create_response_from_wire(
        {
            "decision": "DENY",
            "affected_scopes": [
                {"scope": "tenant:a", "remaining": {"unit": "TOKENS", "amount": 0}},
                "tenant:a/app:b",
            ],
            "reason_code": "ACTION_QUOTA_EXCEEDED",
            "deny_detail": {
                "reason_code": "ACTION_QUOTA_EXCEEDED",
                "quota_violation": {
                    "action_kind": "email.send",
                    "window": "per_run",
                    "used": 5,
                    "limit": 5,
                    "scope": "tenant:a",
                },
            },
        }
    )
    assert parsed.affected_scopes == ("tenant:a", "tenant:a/app:b")
    assert parsed.deny_detail is not None and parsed.deny_detail.quota_violation is not None
    assert parsed.deny_detail.quota_violation.used == 5
    with pytest.raises(ResponseFormatError, match=r"affected_scopes\[0\]\.scope must be a string, got null"):
        mappers.decision_response_from_wire({"decision": "ALLOW", "affected_scopes": [{"remaining": 1}]})


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (
            {"status": "COMMITTED", "charged": {"unit": "TOKENS", "amount": True}},
            "CommitResponse.charged.amount must be an integer, got boolean",
        ),
        (
            {"status": "COMMITTED", "charged": {"unit": "TOKENS", "amount": 1.0}},
            "CommitResponse.charged.amount must be an integer, got number",
        ),
        (
            {"status": "COMMITTED", "charged": {"unit": "TOKENS", "amount": "1"}},
            "CommitResponse.charged.amount must be an integer, got string",
        ),
        ({"status": "COMMITTED", "charged": [1]}, "CommitResponse.charged must be an object, got array"),
        ({"status": "COMMITTED"}, "CommitResponse.charged is required"),
        ({"status": "COMMITTED", "charged": None}, "CommitResponse.charged must not be null"),
        ({"status": 1, "charged": {"unit": "TOKENS", "amount": 1}}, "CommitResponse.status must be a string"),
        ([], "CommitResponse must be an object, got array"),
        ("COMMITTED", "CommitResponse must be an object, got string"),
        (None, "CommitResponse must be an object, got null"),
    ],
)
def test_reader_type_errors_name_the_field(body: Any, fragment: str) -> None:
    with pytest.raises(ResponseFormatError) as info:
        mappers.commit_response_from_wire(body)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


def test_null_optional_fields_read_as_absent() -> None:
    parsed = mappers.reservation_extend_response_from_wire(
        {"status": "ACTIVE", "expires_at_ms": 5, "remaining_ttl_ms": None, "balances": None}
    )
    assert parsed.remaining_ttl_ms is None and parsed.balances is None
    assert parsed.extra == {}


def test_readers_do_not_enforce_request_limits() -> None:
    # A server's answer is taken as sent: over-long strings, negative amounts, subject without standard field.
    detail = mappers.reservation_detail_from_wire(
        {
            "reservation_id": "r",
            "status": "COMMITTED",
            "subject": {"dimensions": {"k": "v"}},
            "action": {"kind": "k" * 100, "name": "n", "tags": ["t"] * 20},
            "reserved": {"unit": "TOKENS", "amount": -1},
            "created_at_ms": 1,
            "expires_at_ms": 2,
            "finalized_at_ms": 3,
            "scope_path": "tenant:a",
            "affected_scopes": [],
            "committed_metadata": {"a": 1},
            "evidence": {"commit": {"evidence_id": "e", "cycles_evidence_url": "u"}},
        }
    )
    assert detail.reserved.amount == -1
    assert detail.finalized_at_ms == 3
    assert detail.committed_metadata == {"a": 1}
    assert detail.evidence is not None and detail.evidence.commit is not None
    with pytest.raises(ValueError, match="Subject must have at least one standard field"):
        validate_model(detail)


def test_validate_model_applies_request_rules_to_read_requests() -> None:
    read = mappers.reservation_create_request_from_wire(
        {
            "idempotency_key": "k",
            "subject": {"tenant": "a"},
            "action": {"kind": "k", "name": "n"},
            "estimate": {"unit": "TOKENS", "amount": 1},
            "ttl_ms": 5,
        }
    )
    assert read.ttl_ms == 5
    with pytest.raises(ValueError, match="^ttl_ms must be between 1000 and 86400000$"):
        validate_model(read)
    nested = mappers.decision_request_from_wire(
        {
            "idempotency_key": "k",
            "subject": {"tenant": "a" * 129},
            "action": {"kind": "k", "name": "n"},
            "estimate": {"unit": "TOKENS", "amount": 1},
        }
    )
    with pytest.raises(ValueError, match="^subject.tenant must be at most 128 characters$"):
        validate_model(nested)
    with pytest.raises(TypeError):
        validate_model({"a": 1})


def test_request_round_trip_with_every_field() -> None:
    event = EventCreateRequest(
        idempotency_key="evt-1",
        subject=Subject(tenant="a", app="b", dimensions={"run_id": "r1"}),
        action=Action(
            kind="tool.search", name="web", tags=["prod"], policy_keys=PolicyKeys(host="example.com")
        ),
        actual=Amount(unit=Unit.USD_MICROCENTS, amount=42),
        overage_policy=CommitOveragePolicy.REJECT,
        metrics=CyclesMetrics(
            tokens_input=1, tokens_output=2, latency_ms=3, model_version="m", custom={"x": [1]}
        ),
        client_time_ms=1_700_000_000_000,
        metadata={"k": None},
    )
    body = mappers.event_create_request_to_wire(event)
    assert body["action"]["policy_keys"] == {"host": "example.com"}
    assert body["metadata"] == {"k": None}  # user metadata is passed through verbatim
    assert mappers.event_create_request_from_wire(body) == event
    decision = DecisionRequest(idempotency_key="d", subject=SUBJECT, action=ACTION, estimate=EST, metadata={})
    assert mappers.decision_request_from_wire(mappers.decision_request_to_wire(decision)) == decision


def test_balance_response_and_list_readers() -> None:
    balances = mappers.balance_response_from_wire(
        {
            "balances": [
                {
                    "scope": "tenant:a",
                    "scope_path": "tenant:a",
                    "remaining": {"unit": "TOKENS", "amount": 5},
                    "is_over_limit": False,
                }
            ],
            "next_cursor": "c",
            "has_more": True,
        }
    )
    assert balances.balances == (
        Balance(
            scope="tenant:a",
            scope_path="tenant:a",
            remaining=SignedAmount(unit=Unit.TOKENS, amount=5),
            is_over_limit=False,
        ),
    )
    assert balances.has_more is True and balances.next_cursor == "c"
    with pytest.raises(ResponseFormatError, match="has_more must be a boolean, got integer"):
        mappers.balance_response_from_wire({"balances": [], "has_more": 1})
    listing = mappers.reservation_list_response_from_wire({"reservations": []})
    assert listing.reservations == () and listing.next_cursor is None


def test_response_models_constructible_for_servers() -> None:
    response = ReservationCreateResponse(
        decision=Decision.ALLOW,
        affected_scopes=("tenant:a",),
        reservation_id="r1",
        expires_at_ms=10,
        remaining_ttl_ms=5,
    )
    body = mappers.to_wire(response)
    assert body == {
        "decision": "ALLOW",
        "affected_scopes": ["tenant:a"],
        "reservation_id": "r1",
        "expires_at_ms": 10,
        "remaining_ttl_ms": 5,
    }
    assert mappers.reservation_create_response_from_wire(body) == response
    commit = CommitResponse(status=CommitStatus.COMMITTED, charged=EST)
    assert mappers.commit_response_from_wire(mappers.to_wire(commit)) == commit


# ---------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------


def test_decision_predicates() -> None:
    assert is_allowed(Decision.ALLOW) and is_allowed(Decision.ALLOW_WITH_CAPS) and is_allowed("ALLOW")
    assert not is_allowed(Decision.DENY) and not is_allowed(None)
    assert is_denied(Decision.DENY) and is_denied("DENY")
    assert not is_denied(Decision.ALLOW) and not is_denied(None)


def test_error_code_helpers() -> None:
    assert error_code_from_string(None) is None
    assert error_code_from_string("BUDGET_EXCEEDED") is ErrorCode.BUDGET_EXCEEDED
    assert error_code_from_string("ACTION_QUOTA_EXCEEDED") is ErrorCode.ACTION_QUOTA_EXCEEDED
    assert error_code_from_string("nope") is ErrorCode.UNKNOWN
    assert error_code_from_string(ErrorCode.NOT_FOUND) is ErrorCode.NOT_FOUND
    retryable = {c for c in ErrorCode if is_retryable_error_code(c)}
    assert retryable == {ErrorCode.INTERNAL_ERROR, ErrorCode.UNKNOWN, ErrorCode.LIMIT_EXCEEDED}
    assert is_retryable_error_code("INTERNAL_ERROR")
    assert is_retryable_error_code("SOMETHING_NEW")  # unknown -> UNKNOWN -> retryable
    assert not is_retryable_error_code("BUDGET_EXCEEDED")
    assert not is_retryable_error_code(None)


def test_error_code_has_twenty_protocol_codes_and_unknown() -> None:
    assert len(ErrorCode) == 21
    assert ErrorCode.UNKNOWN.value == "UNKNOWN"


@pytest.mark.parametrize(
    ("caps", "tool", "allowed"),
    [
        (None, "anything", True),
        (Caps(), "anything", True),
        (Caps(tool_allowlist=["search"]), "search", True),
        (Caps(tool_allowlist=["search"]), "Search", False),  # case-sensitive
        (Caps(tool_allowlist=["search"], tool_denylist=["search"]), "search", True),  # denylist ignored
        (Caps(tool_allowlist=["search"], tool_denylist=["calc"]), "calc", False),
        (Caps(tool_denylist=["calc"]), "calc", False),
        (Caps(tool_denylist=["calc"]), "search", True),
        (Caps(tool_allowlist=[], tool_denylist=["calc"]), "calc", False),  # empty allowlist falls through
        (Caps(tool_allowlist=[], tool_denylist=["calc"]), "search", True),
        (Caps(tool_allowlist=[], tool_denylist=[]), "x", True),
    ],
)
def test_is_tool_allowed(caps: Caps | None, tool: str, allowed: bool) -> None:
    assert is_tool_allowed(caps, tool) is allowed
