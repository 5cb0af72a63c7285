"""Contract tests: the models and mappers against the spec's schemas (tests/spec/runtime_schemas.json).

* every request body the mappers can emit, for a broad generated set of valid models, validates against
  the request schema (JSON Schema 2020-12, refs resolved within the extract);
* the models define exactly the spec's properties and required fields, and the enums exactly its values;
* every example in the extract parses through the matching reader;
* ``from_wire(to_wire(x)) == x`` for request models.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from runcycles import mappers, models
from runcycles._wire import wire_spec
from runcycles.models import (
    Action,
    Amount,
    CommitOveragePolicy,
    CommitRequest,
    CyclesMetrics,
    DecisionRequest,
    EventCreateRequest,
    ObserveMode,
    PolicyKeys,
    ReleaseRequest,
    ReservationCreateRequest,
    ReservationExtendRequest,
    Subject,
    Unit,
)
from runcycles.validation import MAX_INT64, STANDARD_SUBJECT_FIELDS, validate_model

EXTRACT_PATH = Path(__file__).parent / "spec" / "runtime_schemas.json"
EXTRACT: dict[str, Any] = json.loads(EXTRACT_PATH.read_text(encoding="utf-8"))
SCHEMAS: dict[str, Any] = EXTRACT["components"]["schemas"]
BASE_URI = "urn:cycles:runtime"


def _extended_schemas() -> dict[str, Any]:
    """The base schemas with the v0.1.26 ``<Name>Extension`` schemas folded in (additive properties and
    the extended ErrorCode enum)."""
    schemas = copy.deepcopy(SCHEMAS)
    for name, ext in SCHEMAS.items():
        if not name.endswith("Extension"):
            continue
        target = schemas.get(name[: -len("Extension")])
        if target is None:
            continue
        if "enum" in ext:
            target["enum"] = list(ext["enum"])
        for prop, sub in ext.get("properties", {}).items():
            target.setdefault("properties", {})[prop] = copy.deepcopy(sub)
    return schemas


def _validator_factory(schemas: dict[str, Any]) -> Any:
    document = {"components": {"schemas": schemas}}
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(BASE_URI, resource)

    def validator(name: str) -> Draft202012Validator:
        return Draft202012Validator(
            {"$ref": f"{BASE_URI}#/components/schemas/{name}"},
            registry=registry,
            format_checker=Draft202012Validator.FORMAT_CHECKER,
        )

    return validator


EXTENDED_SCHEMAS = _extended_schemas()
base_validator = _validator_factory(SCHEMAS)
extended_validator = _validator_factory(EXTENDED_SCHEMAS)


def assert_valid(schema_name: str, body: dict[str, Any], *, extension_fields: bool) -> None:
    errors = sorted(extended_validator(schema_name).iter_errors(body), key=str)
    assert not errors, f"{schema_name}: {[e.message for e in errors]} in {body!r}"
    if not extension_fields:
        # Without v0.1.26 fields the body must satisfy the strict v0.1.25 schema too.
        errors = sorted(base_validator(schema_name).iter_errors(body), key=str)
        assert not errors, f"{schema_name} (base): {[e.message for e in errors]} in {body!r}"


# ---------------------------------------------------------------------------------------------------------
# Strategies for valid request models
# ---------------------------------------------------------------------------------------------------------

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=12), json_values, max_size=5)


def text(max_size: int, min_size: int = 0) -> st.SearchStrategy[str]:
    """Unicode text, biased towards the boundary lengths."""
    return st.one_of(
        st.text(min_size=min_size, max_size=max_size),
        st.text(alphabet="ab_.-", min_size=max_size, max_size=max_size),
        st.text(alphabet=st.characters(min_codepoint=0x80), min_size=max_size, max_size=max_size),
    )


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


amounts_int = st.one_of(st.just(0), st.just(MAX_INT64), st.integers(min_value=0, max_value=MAX_INT64))
units = st.sampled_from(list(Unit))
amount_models = st.builds(Amount, unit=units, amount=amounts_int)


@st.composite
def subjects(draw: st.DrawFn) -> Subject:
    required = draw(st.sampled_from(STANDARD_SUBJECT_FIELDS))
    values: dict[str, Any] = {required: draw(text(128, min_size=1))}
    for name in STANDARD_SUBJECT_FIELDS:
        if name != required:
            values[name] = draw(optional(text(128)))
    values["dimensions"] = draw(
        optional(
            st.one_of(
                st.dictionaries(st.text(max_size=20), text(256), max_size=16),
                st.dictionaries(
                    st.text(min_size=1, max_size=4), st.text(max_size=3), min_size=16, max_size=16
                ),
            )
        )
    )
    return Subject(**values)


policy_keys_models = st.builds(
    PolicyKeys,
    host=optional(text(253)),
    recipient_domain=optional(text(253)),
    resource_type=optional(text(128)),
    path_prefix=optional(text(512)),
    custom=optional(st.dictionaries(st.text(max_size=10), text(256), max_size=8)),
)

action_models = st.builds(
    Action,
    kind=text(64),
    name=text(256),
    tags=optional(
        st.one_of(st.lists(text(64), max_size=10), st.lists(st.text(max_size=4), min_size=10, max_size=10))
    ),
    policy_keys=optional(policy_keys_models),
)

metrics_ints = optional(amounts_int)
metrics_models = st.builds(
    CyclesMetrics,
    tokens_input=metrics_ints,
    tokens_output=metrics_ints,
    latency_ms=metrics_ints,
    model_version=optional(text(128)),
    custom=optional(json_objects),
)

idempotency_keys = text(256, min_size=1)
metadata = optional(json_objects)
policies = optional(st.sampled_from(list(CommitOveragePolicy)))

reservation_create_requests = st.builds(
    ReservationCreateRequest,
    idempotency_key=idempotency_keys,
    subject=subjects(),
    action=action_models,
    estimate=amount_models,
    ttl_ms=optional(st.one_of(st.just(1000), st.just(86_400_000), st.integers(1000, 86_400_000))),
    grace_period_ms=optional(st.one_of(st.just(0), st.just(60_000), st.integers(0, 60_000))),
    overage_policy=policies,
    dry_run=optional(st.booleans()),
    metadata=metadata,
    observe_mode=optional(st.sampled_from(list(ObserveMode))),
)
commit_requests = st.builds(
    CommitRequest,
    idempotency_key=idempotency_keys,
    actual=amount_models,
    metrics=optional(metrics_models),
    metadata=metadata,
)
release_requests = st.builds(ReleaseRequest, idempotency_key=idempotency_keys, reason=optional(text(256)))
extend_requests = st.builds(
    ReservationExtendRequest,
    idempotency_key=idempotency_keys,
    extend_by_ms=st.one_of(st.just(1), st.just(86_400_000), st.integers(1, 86_400_000)),
    metadata=metadata,
)
decision_requests = st.builds(
    DecisionRequest,
    idempotency_key=idempotency_keys,
    subject=subjects(),
    action=action_models,
    estimate=amount_models,
    metadata=metadata,
)
event_requests = st.builds(
    EventCreateRequest,
    idempotency_key=idempotency_keys,
    subject=subjects(),
    action=action_models,
    actual=amount_models,
    overage_policy=policies,
    metrics=optional(metrics_models),
    client_time_ms=optional(st.one_of(st.just(0), st.just(MAX_INT64), st.integers(0, MAX_INT64))),
    metadata=metadata,
)

REQUEST_CASES = [
    (
        "ReservationCreateRequest",
        reservation_create_requests,
        mappers.reservation_create_request_to_wire,
        mappers.reservation_create_request_from_wire,
    ),
    ("CommitRequest", commit_requests, mappers.commit_request_to_wire, mappers.commit_request_from_wire),
    ("ReleaseRequest", release_requests, mappers.release_request_to_wire, mappers.release_request_from_wire),
    (
        "ReservationExtendRequest",
        extend_requests,
        mappers.reservation_extend_request_to_wire,
        mappers.reservation_extend_request_from_wire,
    ),
    (
        "DecisionRequest",
        decision_requests,
        mappers.decision_request_to_wire,
        mappers.decision_request_from_wire,
    ),
    (
        "EventCreateRequest",
        event_requests,
        mappers.event_create_request_to_wire,
        mappers.event_create_request_from_wire,
    ),
]

NESTED_CASES = [
    ("Amount", amount_models, mappers.amount_to_wire, mappers.amount_from_wire),
    ("Subject", subjects(), mappers.subject_to_wire, mappers.subject_from_wire),
    ("Action", action_models, mappers.action_to_wire, mappers.action_from_wire),
    ("StandardMetrics", metrics_models, mappers.metrics_to_wire, mappers.metrics_from_wire),
]


def _uses_extension(model: Any) -> bool:
    if isinstance(model, ReservationCreateRequest) and model.observe_mode is not None:
        return True
    action = getattr(model, "action", model if isinstance(model, Action) else None)
    return isinstance(action, Action) and action.policy_keys is not None


contract_settings = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


@pytest.mark.parametrize(
    ("schema_name", "strategy", "writer", "reader"),
    REQUEST_CASES + NESTED_CASES,
    ids=[case[0] for case in REQUEST_CASES + NESTED_CASES],
)
def test_emitted_bodies_validate_and_round_trip(
    schema_name: str, strategy: Any, writer: Any, reader: Any
) -> None:
    @contract_settings
    @given(strategy)
    def check(model: Any) -> None:
        body = writer(model)
        assert body == mappers.to_wire(model) == mappers.request_body(model)
        # JSON-clean: survives a serialisation round trip unchanged (ints exact, no tuples, no enums).
        assert json.loads(json.dumps(body)) == body
        assert_valid(schema_name, body, extension_fields=_uses_extension(model))
        again = reader(body)
        assert again == model
        validate_model(again)  # what the reader rebuilt still satisfies the construction rules

    check()


def test_boundary_request_validates() -> None:
    request = ReservationCreateRequest(
        idempotency_key="k" * 256,
        subject=Subject(
            tenant="t" * 128,
            workspace="w",
            app="a",
            workflow="f",
            agent="g",
            toolset="s",
            dimensions={f"d{i}": "v" * 256 for i in range(16)},
        ),
        action=Action(kind="k" * 64, name="n" * 256, tags=["x" * 64] * 10),
        estimate=Amount(unit=Unit.USD_MICROCENTS, amount=2**63 - 1),
        ttl_ms=86_400_000,
        grace_period_ms=60_000,
        overage_policy=CommitOveragePolicy.ALLOW_WITH_OVERDRAFT,
        dry_run=False,
        metadata={"nested": {"list": [1, 2.5, None, "x"]}},
    )
    body = mappers.reservation_create_request_to_wire(request)
    assert body["estimate"]["amount"] == 9223372036854775807
    assert type(body["estimate"]["amount"]) is int
    assert len(body["subject"]["dimensions"]) == 16
    assert len(body["action"]["tags"]) == 10
    assert body["dry_run"] is False  # False is a value, not an absent field
    assert_valid("ReservationCreateRequest", body, extension_fields=False)
    # One past any of those limits is rejected by the schema, so the limits are the spec's.
    over = copy.deepcopy(body)
    over["action"]["tags"].append("y")
    assert list(base_validator("ReservationCreateRequest").iter_errors(over))


# ---------------------------------------------------------------------------------------------------------
# Models mirror the schemas
# ---------------------------------------------------------------------------------------------------------

MODEL_FOR_SCHEMA: dict[str, type] = {
    "Amount": models.Amount,
    "SignedAmount": models.SignedAmount,
    "Subject": models.Subject,
    "Action": models.Action,
    "Caps": models.Caps,
    "StandardMetrics": models.CyclesMetrics,
    "Balance": models.Balance,
    "CyclesEvidenceRef": models.CyclesEvidenceRef,
    "ReservationEvidence": models.ReservationEvidence,
    "ReservationCreateRequest": models.ReservationCreateRequest,
    "ReservationCreateResponse": models.ReservationCreateResponse,
    "CommitRequest": models.CommitRequest,
    "CommitResponse": models.CommitResponse,
    "ReleaseRequest": models.ReleaseRequest,
    "ReleaseResponse": models.ReleaseResponse,
    "ReservationExtendRequest": models.ReservationExtendRequest,
    "ReservationExtendResponse": models.ReservationExtendResponse,
    "DecisionRequest": models.DecisionRequest,
    "DecisionResponse": models.DecisionResponse,
    "EventCreateRequest": models.EventCreateRequest,
    "EventCreateResponse": models.EventCreateResponse,
    "ReservationDetail": models.ReservationDetail,
    "ReservationSummary": models.ReservationSummary,
    "ReservationListResponse": models.ReservationListResponse,
    "BalanceResponse": models.BalanceResponse,
    "ErrorResponse": models.ErrorResponse,
    "DenyDetail": models.DenyDetail,
    "ActionQuotaViolation": models.ActionQuotaViolation,
}

READER_FOR_SCHEMA: dict[str, Any] = {
    "Amount": mappers.amount_from_wire,
    "SignedAmount": mappers.signed_amount_from_wire,
    "Subject": mappers.subject_from_wire,
    "Action": mappers.action_from_wire,
    "Caps": mappers.caps_from_wire,
    "StandardMetrics": mappers.metrics_from_wire,
    "Balance": mappers.balance_from_wire,
    "CyclesEvidenceRef": mappers.cycles_evidence_ref_from_wire,
    "ReservationEvidence": mappers.reservation_evidence_from_wire,
    "ReservationCreateRequest": mappers.reservation_create_request_from_wire,
    "ReservationCreateResponse": mappers.reservation_create_response_from_wire,
    "CommitRequest": mappers.commit_request_from_wire,
    "CommitResponse": mappers.commit_response_from_wire,
    "ReleaseRequest": mappers.release_request_from_wire,
    "ReleaseResponse": mappers.release_response_from_wire,
    "ReservationExtendRequest": mappers.reservation_extend_request_from_wire,
    "ReservationExtendResponse": mappers.reservation_extend_response_from_wire,
    "DecisionRequest": mappers.decision_request_from_wire,
    "DecisionResponse": mappers.decision_response_from_wire,
    "EventCreateRequest": mappers.event_create_request_from_wire,
    "EventCreateResponse": mappers.event_create_response_from_wire,
    "ReservationDetail": mappers.reservation_detail_from_wire,
    "ReservationSummary": mappers.reservation_summary_from_wire,
    "ReservationListResponse": mappers.reservation_list_response_from_wire,
    "BalanceResponse": mappers.balance_response_from_wire,
    "ErrorResponse": mappers.error_response_from_wire,
    "DenyDetail": mappers.deny_detail_from_wire,
    "ActionQuotaViolation": mappers.action_quota_violation_from_wire,
}


def _wire_fields(cls: type) -> dict[str, attrs.Attribute[Any]]:
    out = {}
    for field in attrs.fields(cls):  # type: ignore[arg-type]
        spec = wire_spec(field)
        if spec is not None:
            out[spec.name or field.name] = field
    return out


@pytest.mark.parametrize("schema_name", sorted(MODEL_FOR_SCHEMA))
def test_model_fields_match_schema(schema_name: str) -> None:
    schema = EXTENDED_SCHEMAS[schema_name]
    fields = _wire_fields(MODEL_FOR_SCHEMA[schema_name])
    assert set(fields) == set(schema["properties"]), schema_name
    required = {name for name, f in fields.items() if f.default is attrs.NOTHING}
    assert required == set(schema.get("required", [])), schema_name


def test_every_runtime_object_schema_has_a_model() -> None:
    not_modelled = {
        # Evidence envelopes are fetched from the public evidence surface, not by this client.
        "CyclesEvidenceEnvelope",
        "CyclesEvidenceJwk",
        "CyclesEvidenceJwks",
        # v0.1.26 event-stream payloads (admin/event plane), not runtime request/response bodies.
        "EventDataObservedAllowed",
        "EventDataObservedDenied",
        "EventDataQuotaCounterReset",
        "EventDataQuotaThresholdApproaching",
    }
    objects = {
        name
        for name, schema in SCHEMAS.items()
        if schema.get("type") == "object" and not name.endswith("Extension")
    }
    assert objects - not_modelled == set(MODEL_FOR_SCHEMA)
    assert set(MODEL_FOR_SCHEMA) == set(READER_FOR_SCHEMA)


@pytest.mark.parametrize(
    ("enum_cls", "values"),
    [
        (models.Unit, SCHEMAS["UnitEnum"]["enum"]),
        (models.Decision, SCHEMAS["DecisionEnum"]["enum"]),
        (models.CommitOveragePolicy, SCHEMAS["CommitOveragePolicy"]["enum"]),
        (models.ReservationStatus, SCHEMAS["ReservationStatus"]["enum"]),
        (models.ObserveMode, SCHEMAS["ObserveModeEnum"]["enum"]),
        (models.CommitStatus, SCHEMAS["CommitResponse"]["properties"]["status"]["enum"]),
        (models.ReleaseStatus, SCHEMAS["ReleaseResponse"]["properties"]["status"]["enum"]),
        (models.ExtendStatus, SCHEMAS["ReservationExtendResponse"]["properties"]["status"]["enum"]),
        (models.EventStatus, SCHEMAS["EventCreateResponse"]["properties"]["status"]["enum"]),
        (models.ErrorCode, [*SCHEMAS["ErrorCodeExtension"]["enum"], "UNKNOWN"]),
    ],
    ids=lambda x: getattr(x, "__name__", "values"),
)
def test_enums_match_schema(enum_cls: Any, values: list[str]) -> None:
    assert [m.value for m in enum_cls] == values


def test_error_code_extension_is_base_plus_three() -> None:
    base = SCHEMAS["ErrorCode"]["enum"]
    assert len(base) == 17
    assert SCHEMAS["ErrorCodeExtension"]["enum"] == [
        *base,
        "ACTION_QUOTA_EXCEEDED",
        "ACTION_KIND_NOT_ALLOWED",
        "ACTION_KIND_DENIED",
    ]


# ---------------------------------------------------------------------------------------------------------
# Examples in the extract
# ---------------------------------------------------------------------------------------------------------


def _examples() -> list[tuple[str, Any]]:
    out = []
    for name, schema in sorted(SCHEMAS.items()):
        if "example" in schema:
            out.append((name, schema["example"]))
        for example in schema.get("examples", []) or []:
            out.append((name, example))
    return out


EXAMPLES = _examples()


def test_extract_has_examples_for_responses() -> None:
    names = {name for name, _ in EXAMPLES}
    assert {"ErrorResponse", "DecisionResponse", "ReservationCreateResponse", "Balance"} <= names


@pytest.mark.parametrize(("schema_name", "example"), EXAMPLES, ids=[n for n, _ in EXAMPLES])
def test_example_parses(schema_name: str, example: Any) -> None:
    model = READER_FOR_SCHEMA[schema_name](example)
    assert isinstance(model, MODEL_FOR_SCHEMA[schema_name])
    assert model.extra == {}  # examples use only defined fields
    # Nothing is lost: writing the parsed example gives the example back.
    assert mappers.to_wire(model) == example
    if schema_name.endswith("Request"):
        validate_model(model)


def test_reservation_create_response_example_values() -> None:
    example = SCHEMAS["ReservationCreateResponse"]["example"]
    parsed = mappers.reservation_create_response_from_wire(example)
    assert parsed.decision is models.Decision.ALLOW
    assert parsed.reserved == Amount(unit=Unit.USD_MICROCENTS, amount=example["reserved"]["amount"])
    assert parsed.remaining_ttl_ms == example["remaining_ttl_ms"]
    assert parsed.affected_scopes == tuple(example["affected_scopes"])


def test_error_response_example_values() -> None:
    parsed = mappers.error_response_from_wire(SCHEMAS["ErrorResponse"]["example"])
    assert parsed.error is models.ErrorCode.BUDGET_EXCEEDED
    assert parsed.error_raw is None
    assert parsed.trace_id == SCHEMAS["ErrorResponse"]["example"]["trace_id"]


# ---------------------------------------------------------------------------------------------------------
# The extract script (tested on a tiny spec in a temp dir; never reads ../shared)
# ---------------------------------------------------------------------------------------------------------


def _load_extract_script() -> Any:
    path = Path(__file__).resolve().parents[1] / "scripts" / "extract_spec.py"
    spec = importlib.util.spec_from_file_location("extract_spec", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["extract_spec"] = module
    spec.loader.exec_module(module)
    return module


def test_extract_keeps_structure_and_examples_only(tmp_path: Path) -> None:
    script = _load_extract_script()
    (tmp_path / "cycles-protocol-v0.yaml").write_text(
        """
info: {version: 9.9}
components:
  schemas:
    Thing:
      type: object
      description: prose that must go
      x-internal: also prose
      required: [a]
      additionalProperties: false
      example: {a: 1, description: data stays}
      properties:
        a: {type: integer, minimum: 0, description: gone}
        description: {type: string, maxLength: 3}
        items: {type: array, items: {$ref: '#/components/schemas/Other', description: gone}}
""",
        encoding="utf-8",
    )
    (tmp_path / "cycles-protocol-extensions-v0.1.26.yaml").write_text(
        "components: {schemas: {Other: {type: string, enum: [X], summary: gone}}}\n", encoding="utf-8"
    )
    extract = script.build_extract(tmp_path)
    assert extract["components"]["schemas"] == {
        "Thing": {
            "type": "object",
            "required": ["a"],
            "additionalProperties": False,
            "example": {"a": 1, "description": "data stays"},
            "properties": {
                "a": {"type": "integer", "minimum": 0},
                "description": {"type": "string", "maxLength": 3},
                "items": {"type": "array", "items": {"$ref": "#/components/schemas/Other"}},
            },
        },
        "Other": {"type": "string", "enum": ["X"]},
    }
    text_out = script.render(extract)
    assert text_out == script.render(json.loads(text_out))  # deterministic
    # --check against the committed extract fails for a different spec, without writing anything.
    before = EXTRACT_PATH.read_text(encoding="utf-8")
    assert script.main(["--spec-dir", str(tmp_path), "--check"]) == 1
    assert EXTRACT_PATH.read_text(encoding="utf-8") == before


def test_committed_extract_has_no_prose() -> None:
    def walk(node: Any, in_data: bool) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if not in_data:
                    assert key not in ("description", "summary", "title") and not key.startswith("x-"), key
                walk(value, in_data or key in ("example", "examples", "default", "enum", "const"))
        elif isinstance(node, list):
            for item in node:
                walk(item, in_data)

    for name, schema in SCHEMAS.items():
        for prop in schema.get("properties", {}).values():
            walk(prop, False)
        walk({k: v for k, v in schema.items() if k != "properties"}, False)
        assert name
