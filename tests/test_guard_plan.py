"""`Guard.plan`: constant options are validated once per config; every call still gets its own key."""

from __future__ import annotations

from runcycles import CyclesConfig
from runcycles._guard import Guard, options_from


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
