"""`Guard.plan` / `plan_create`: constant options are validated (and serialised) once per config; every call still
gets its own key."""

from __future__ import annotations

import attrs

from runcycles import CyclesConfig
from runcycles._guard import Guard, options_from
from runcycles._protocol import requests as rq
from runcycles.mappers import to_wire


def _config(tenant: str) -> CyclesConfig:
    return CyclesConfig(base_url="http://local", api_key="k" * 20, tenant=tenant)


def test_constant_options_reuse_the_validated_parts_with_a_fresh_key() -> None:
    guard = Guard(options_from({"estimate": 10, "action_kind": "llm", "metadata": {"a": 1}, "workspace": "ws"}))
    config = _config("acme")
    first = guard.plan(config, (), {})
    second = guard.plan(config, (), {})
    assert first.idempotency_key != second.idempotency_key
    assert first.subject is second.subject and first.action is second.action
    assert (second.subject.tenant, second.subject.workspace, second.action.kind) == ("acme", "ws", "llm")
    assert second.metadata == {"a": 1} and second.metadata is not first.metadata
    other = guard.plan(_config("globex"), (), {})
    assert other.subject.tenant == "globex"


def test_callable_options_are_evaluated_on_every_call() -> None:
    guard = Guard(options_from({"estimate": lambda n: n * 10, "tenant": lambda n: f"t{n}"}))
    config = _config("acme")
    one, two = guard.plan(config, (1,), {}), guard.plan(config, (2,), {})
    assert (one.estimate.amount, one.subject.tenant) == (10, "t1")
    assert (two.estimate.amount, two.subject.tenant) == (20, "t2")


def test_plan_create_gives_what_the_generic_path_builds_for_the_same_request() -> None:
    options = {"estimate": 10, "action_kind": "llm", "action_tags": ["a"], "metadata": {"m": "é"}, "ttl_ms": 5000}
    guard = Guard(options_from({**options, "dimensions": {"region": "eu"}, "grace_period_ms": 100}))
    config = _config("acme")
    for _ in range(3):
        request, http = guard.plan_create(config, (), {})
        assert http is not None
        expected = rq.create_reservation(to_wire(request))
        assert http == expected  # method, path, headers (the key too), body and the exact bytes
        assert http.content == expected.content and http.headers["X-Idempotency-Key"] == request.idempotency_key
        assert request == attrs.evolve(request)  # the re-keyed copy is a valid request, equal to a rebuilt one
    one, _ = guard.plan_create(config, (), {})
    two, _ = guard.plan_create(config, (), {})
    assert one.idempotency_key != two.idempotency_key and one.metadata is not two.metadata


def test_plan_create_leaves_callable_options_to_the_steps() -> None:
    guard = Guard(options_from({"estimate": lambda n: n}))
    request, http = guard.plan_create(_config("acme"), (7,), {})
    assert http is None and request.estimate.amount == 7
