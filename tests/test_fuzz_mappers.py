"""Fuzz: any JSON into any ``*_from_wire`` either parses or raises ResponseFormatError -- nothing else.

Two input families: arbitrary JSON documents, and spec-shaped documents (valid bodies) with one value
somewhere inside replaced by arbitrary JSON, so the deep paths of the readers are exercised too.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runcycles import mappers
from runcycles.errors import ResponseFormatError

READERS = sorted(name for name in mappers.__all__ if name.endswith("_from_wire"))

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()  # NaN and infinities included: json.loads accepts them too
    | st.text()
)
json_documents = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=6)
    ),
    max_leaves=30,
)

_AMOUNT = {"unit": "TOKENS", "amount": 5}
_SUBJECT = {"tenant": "a", "dimensions": {"k": "v"}}
_ACTION = {"kind": "k", "name": "n", "tags": ["t"], "policy_keys": {"host": "h", "custom": {"c": "d"}}}
_BALANCE = {
    "scope": "tenant:a",
    "scope_path": "tenant:a",
    "remaining": {"unit": "TOKENS", "amount": -1},
    "reserved": _AMOUNT,
    "is_over_limit": False,
}
_EVIDENCE = {"evidence_id": "e" * 64, "cycles_evidence_url": "https://x/v1/evidence/e"}
_DENY = {
    "reason_code": "ACTION_QUOTA_EXCEEDED",
    "quota_violation": {"action_kind": "k", "window": "per_run", "used": 1, "limit": 1, "scope": "tenant:a"},
    "budget_remaining": -3,
}
_SUMMARY = {
    "reservation_id": "r",
    "status": "COMMITTED",
    "subject": _SUBJECT,
    "action": _ACTION,
    "reserved": _AMOUNT,
    "committed": _AMOUNT,
    "created_at_ms": 1,
    "expires_at_ms": 2,
    "finalized_at_ms": 3,
    "scope_path": "tenant:a",
    "affected_scopes": ["tenant:a", {"scope": "tenant:a/app:b"}],
    "metadata": {"m": 1},
    "evidence": {"reserve": _EVIDENCE, "commit": _EVIDENCE},
}
_METRICS = {"tokens_input": 1, "latency_ms": 2, "model_version": "m", "custom": {"x": 1}}
_CAPS = {"max_tokens": 1, "tool_allowlist": ["a"], "tool_denylist": ["b"], "cooldown_ms": 0}

SHAPED: dict[str, Any] = {
    "amount_from_wire": _AMOUNT,
    "signed_amount_from_wire": {"unit": "TOKENS", "amount": -5},
    "subject_from_wire": _SUBJECT,
    "action_from_wire": _ACTION,
    "policy_keys_from_wire": _ACTION["policy_keys"],
    "caps_from_wire": _CAPS,
    "metrics_from_wire": _METRICS,
    "standard_metrics_from_wire": _METRICS,
    "balance_from_wire": _BALANCE,
    "cycles_evidence_ref_from_wire": _EVIDENCE,
    "reservation_evidence_from_wire": {"reserve": _EVIDENCE, "release": _EVIDENCE},
    "action_quota_violation_from_wire": _DENY["quota_violation"],
    "deny_detail_from_wire": _DENY,
    "reservation_create_response_from_wire": {
        "decision": "ALLOW_WITH_CAPS",
        "reservation_id": "r",
        "reserved": _AMOUNT,
        "expires_at_ms": 1,
        "remaining_ttl_ms": 1,
        "scope_path": "tenant:a",
        "affected_scopes": ["tenant:a"],
        "caps": _CAPS,
        "balances": [_BALANCE],
        "cycles_evidence": _EVIDENCE,
        "deny_detail": _DENY,
    },
    "commit_response_from_wire": {
        "status": "COMMITTED",
        "charged": _AMOUNT,
        "released": _AMOUNT,
        "balances": [_BALANCE],
    },
    "release_response_from_wire": {"status": "RELEASED", "released": _AMOUNT, "cycles_evidence": _EVIDENCE},
    "reservation_extend_response_from_wire": {
        "status": "ACTIVE",
        "expires_at_ms": 1,
        "remaining_ttl_ms": 0,
        "balances": [_BALANCE],
    },
    "decision_response_from_wire": {
        "decision": "DENY",
        "reason_code": "X",
        "retry_after_ms": 1,
        "affected_scopes": ["tenant:a"],
        "deny_detail": _DENY,
        "caps": _CAPS,
    },
    "event_create_response_from_wire": {
        "status": "APPLIED",
        "event_id": "e",
        "charged": _AMOUNT,
        "balances": [_BALANCE],
    },
    "reservation_detail_from_wire": {**_SUMMARY, "committed_metadata": {"c": 2}},
    "reservation_summary_from_wire": _SUMMARY,
    "reservation_list_response_from_wire": {"reservations": [_SUMMARY], "next_cursor": "c", "has_more": True},
    "balance_response_from_wire": {"balances": [_BALANCE, _BALANCE], "has_more": False},
    "error_response_from_wire": {
        "error": "BUDGET_EXCEEDED",
        "message": "m",
        "request_id": "r",
        "trace_id": "0" * 32,
        "details": {"deny_detail": _DENY},
        "cycles_evidence": _EVIDENCE,
    },
    "reservation_create_request_from_wire": {
        "idempotency_key": "k",
        "subject": _SUBJECT,
        "action": _ACTION,
        "estimate": _AMOUNT,
        "ttl_ms": 1000,
        "grace_period_ms": 0,
        "overage_policy": "REJECT",
        "dry_run": True,
        "metadata": {},
        "observe_mode": "OBSERVE",
    },
    "commit_request_from_wire": {
        "idempotency_key": "k",
        "actual": _AMOUNT,
        "metrics": _METRICS,
        "metadata": {},
    },
    "release_request_from_wire": {"idempotency_key": "k", "reason": "r"},
    "reservation_extend_request_from_wire": {"idempotency_key": "k", "extend_by_ms": 1, "metadata": {}},
    "decision_request_from_wire": {
        "idempotency_key": "k",
        "subject": _SUBJECT,
        "action": _ACTION,
        "estimate": _AMOUNT,
    },
    "event_create_request_from_wire": {
        "idempotency_key": "k",
        "subject": _SUBJECT,
        "action": _ACTION,
        "actual": _AMOUNT,
        "overage_policy": "ALLOW_WITH_OVERDRAFT",
        "metrics": _METRICS,
        "client_time_ms": 0,
        "metadata": {},
    },
}


def test_every_reader_has_a_shaped_seed() -> None:
    assert set(READERS) == set(SHAPED)
    for name in READERS:
        getattr(mappers, name)(SHAPED[name])  # every seed is itself a readable body


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.extend(_paths(value, (*prefix, i)))
    return out


def _replace(node: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(node, dict):
        return {**node, head: _replace(node[head], rest, value)}
    copy = list(node)
    copy[head] = _replace(copy[head], rest, value)
    return copy


@st.composite
def mutated(draw: st.DrawFn, seed: Any) -> Any:
    doc = seed
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(_paths(doc)))
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "delete" and path:
            parent = _get(doc, path[:-1])
            if isinstance(parent, dict):
                doc = _replace(doc, path[:-1], {k: v for k, v in parent.items() if k != path[-1]})
                continue
        if action == "add":
            target = _get(doc, path)
            if isinstance(target, dict):
                doc = _replace(doc, path, {**target, draw(st.text(max_size=8)): draw(json_documents)})
                continue
        doc = _replace(doc, path, draw(json_documents))
    return doc


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        node = node[key]
    return node


def _read_or_format_error(reader_name: str, doc: Any) -> None:
    reader = getattr(mappers, reader_name)
    try:
        reader(doc)
    except ResponseFormatError as exc:
        assert str(exc)  # it says something (the field)
        # Raised by the reader's own checks, not by the last-resort wrapper around an unexpected exception.
        assert exc.__cause__ is None, repr(exc.__cause__)


fuzz_settings = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


@pytest.mark.parametrize("reader_name", READERS)
def test_arbitrary_json_parses_or_raises_format_error(reader_name: str) -> None:
    @fuzz_settings
    @given(json_documents)
    def check(doc: Any) -> None:
        _read_or_format_error(reader_name, doc)

    check()


@pytest.mark.parametrize("reader_name", READERS)
def test_mutated_bodies_parse_or_raise_format_error(reader_name: str) -> None:
    @fuzz_settings
    @given(mutated(SHAPED[reader_name]))
    def check(doc: Any) -> None:
        _read_or_format_error(reader_name, doc)
        # The same document after a JSON round trip (what a transport would hand over) behaves the same.
        try:
            text = json.dumps(doc)
        except ValueError:
            return
        _read_or_format_error(reader_name, json.loads(text))

    check()
