# ruff: noqa: F811  (pytest fixtures imported from fixtures_local)
"""`with_cycles` end to end against the embedded server: in process and over real HTTP (uvicorn), asserting the
exact requests (through the fault layer's log) and the ledger the server ends up with."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest
from fixtures_local import FUNDS, TENANT_SCOPE, USD, Harness, harness, mode, uvicorn_switch  # noqa: F401

from runcycles import (
    BudgetExceededError,
    CommitOveragePolicy,
    CyclesMetrics,
    CyclesTransportError,
    Decision,
    DryRunResult,
    get_cycles_context,
    is_tool_allowed,
    with_cycles,
)

pytestmark = pytest.mark.timeout(60)

INPROC = pytest.mark.parametrize("mode", ["inproc"])


# --------------------------------------------------------------------------- success, failure, dry run, denial


@pytest.mark.anyio
async def test_success_commits_the_actual(harness: Harness) -> None:
    client, faults = harness.async_client()
    seen: list[Any] = []
    async with client:

        @with_cycles(estimate=1000, actual=lambda result: result["cost"], action_kind="llm.completion",
                     action_name="gpt", client=client)
        async def work(prompt: str) -> dict[str, Any]:
            ctx = get_cycles_context()
            assert ctx is not None
            seen.append(ctx)
            budget = harness.budget()
            assert budget["reserved"] == 1000  # held while the function runs
            return {"cost": 700, "prompt": prompt}

        assert await work("hi") == {"cost": 700, "prompt": "hi"}
        assert await client.flush() == 0
    assert get_cycles_context() is None
    harness.assert_ledger(spent=700)
    assert harness.budget()["remaining"] == FUNDS - 700
    assert faults.sequence() == ["create", "commit"]
    create, commit = faults.log
    assert create.body["estimate"] == {"unit": USD, "amount": 1000}
    assert create.body["subject"] == {"tenant": "acme"}
    assert create.body["action"] == {"kind": "llm.completion", "name": "gpt"}
    assert create.body["ttl_ms"] == 60000 and create.body["overage_policy"] == "ALLOW_IF_AVAILABLE"
    assert commit.reservation_id == seen[0].reservation_id
    assert commit.body["actual"] == {"unit": USD, "amount": 700}
    assert "actual_source" not in (commit.body.get("metadata") or {})
    assert commit.headers["x-idempotency-key"] == commit.body["idempotency_key"]
    detail = harness.reservation(seen[0].reservation_id)
    assert detail["status"] == "COMMITTED" and detail["committed"]["amount"] == 700


@pytest.mark.anyio
async def test_failure_releases_and_reraises(harness: Harness) -> None:
    client, faults = harness.async_client()
    boom = ValueError("boom")
    rid: list[str] = []
    async with client:

        @with_cycles(estimate=1000, client=client)
        async def work() -> None:
            ctx = get_cycles_context()
            assert ctx is not None
            rid.append(ctx.reservation_id)
            raise boom

        with pytest.raises(ValueError) as caught:
            await work()
        assert caught.value is boom
    harness.assert_ledger(spent=0)
    assert harness.budget()["remaining"] == FUNDS
    assert faults.sequence() == ["create", "release"]
    assert faults.log[1].body["reason"] == "guarded_method_failed"
    assert harness.reservation(rid[0])["status"] == "RELEASED"


@pytest.mark.anyio
async def test_dry_run_returns_result_without_calling(harness: Harness) -> None:
    client, faults = harness.async_client()
    called = False
    async with client:

        @with_cycles(estimate=1000, dry_run=True, client=client)
        async def work() -> str:
            nonlocal called
            called = True
            return "ran"

        result = await work()
    assert isinstance(result, DryRunResult)
    assert result.decision is Decision.ALLOW
    assert TENANT_SCOPE in result.affected_scopes
    assert not called
    harness.assert_ledger(spent=0)
    assert faults.sequence() == ["create"]
    assert faults.log[0].body["dry_run"] is True
    assert harness.reservations() == []


@pytest.mark.anyio
async def test_denial_raises_and_never_calls(harness: Harness) -> None:
    client, faults = harness.async_client()
    called = False
    async with client:

        @with_cycles(estimate=FUNDS + 1, client=client)
        async def work() -> None:
            nonlocal called
            called = True

        with pytest.raises(BudgetExceededError) as caught:
            await work()

        @with_cycles(estimate=FUNDS + 1, dry_run=True, client=client)
        async def shadow() -> None:
            nonlocal called
            called = True

        with pytest.raises(BudgetExceededError) as denied:
            await shadow()
    assert not called
    assert caught.value.status == 409 and caught.value.is_budget_exceeded()
    assert caught.value.request_id
    assert denied.value.reason_code == "BUDGET_EXCEEDED"
    harness.assert_ledger(spent=0)
    assert faults.sequence() == ["create", "create"]


@INPROC
@pytest.mark.anyio
async def test_transport_failure_at_reserve_raises_chained(harness: Harness) -> None:
    import httpx

    client, faults = harness.async_client()
    faults.on("create", times=2).connect_error()
    async with client:

        @with_cycles(estimate=10, client=client)
        async def work() -> None:
            raise AssertionError("must not run")

        with pytest.raises(CyclesTransportError) as caught:
            await work()
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert faults.sequence() == ["create", "create_same_key"]
    harness.assert_ledger(spent=0)


def test_sync_def_with_sync_client(harness: Harness) -> None:
    client, faults = harness.sync_client()

    @with_cycles(estimate=500, actual=lambda n: n, client=client)
    def work(n: int) -> int:
        ctx = get_cycles_context()
        assert ctx is not None and ctx.estimate == 500
        return n

    @with_cycles(estimate=500, client=client)
    def broken() -> None:
        raise KeyError("nope")

    assert work(321) == 321
    with pytest.raises(KeyError):
        broken()
    assert client.flush() == 0
    harness.assert_ledger(spent=321)
    assert faults.sequence() == ["create", "commit", "create", "release"]
    assert faults.log[3].body["reason"] == "guarded_method_failed"


# --------------------------------------------------------------------------- caps


@pytest.mark.anyio
async def test_caps_reach_the_context(harness: Harness) -> None:
    harness.server.create_budget(
        "tenant:acme/workspace:capped", USD, 100_000, caps={"max_tokens": 128, "tool_allowlist": ["search"]}
    )
    client, _ = harness.async_client()
    seen: dict[str, Any] = {}
    async with client:

        @with_cycles(estimate=100, workspace="capped", client=client)
        async def work() -> None:
            ctx = get_cycles_context()
            assert ctx is not None and ctx.caps is not None
            seen.update(decision=ctx.decision, has_caps=ctx.has_caps(), max_tokens=ctx.caps.max_tokens,
                        search=is_tool_allowed(ctx.caps, "search"), shell=is_tool_allowed(ctx.caps, "shell"))

        await work()
    assert seen == {"decision": Decision.ALLOW_WITH_CAPS, "has_caps": True, "max_tokens": 128,
                    "search": True, "shell": False}
    harness.assert_ledger(spent=100, scope="tenant:acme/workspace:capped")


# --------------------------------------------------------------------------- overage


TIGHT = "tenant:acme/workspace:tight"


@INPROC
@pytest.mark.anyio
@pytest.mark.parametrize(
    ("policy", "charged", "tight"),
    [
        # 1200 allocated: 200 left after the 1000 hold can cover only 200 of the 500 overage.
        (CommitOveragePolicy.ALLOW_IF_AVAILABLE, 1200, {"spent": 1200, "debt": 0, "is_over_limit": True}),
        # The 200 it can still fund is spent; only the unfunded 300 becomes debt (as the reference ledger).
        (CommitOveragePolicy.ALLOW_WITH_OVERDRAFT, 1500, {"spent": 1200, "debt": 300, "is_over_limit": False}),
        (CommitOveragePolicy.REJECT, None, {"spent": 0, "debt": 0, "is_over_limit": False, "reserved": 1000}),
    ],
)
async def test_overage_policies(
    harness: Harness, policy: CommitOveragePolicy, charged: int | None, tight: dict[str, Any]
) -> None:
    harness.server.create_budget(TIGHT, USD, 1200, overdraft_limit=1000)
    client, faults = harness.async_client()
    async with client:

        @with_cycles(estimate=1000, actual=1500, workspace="tight", overage_policy=policy, client=client)
        async def work() -> str:
            return "done"

        assert await work() == "done"  # a rejected commit never raises into the caller
        assert await client.flush() == 0
    assert faults.log[0].body["overage_policy"] == policy.value
    assert faults.sequence() == ["create", "commit"]  # a rejection is final: no retry
    budget = harness.budget(TIGHT)
    assert {k: budget[k] for k in tight} == tight
    if "reserved" not in tight:
        assert budget["reserved"] == 0
    tenant = harness.budget()
    assert tenant["spent"] == (charged or 0)


# --------------------------------------------------------------------------- actual, metrics, metadata


@INPROC
@pytest.mark.anyio
async def test_failing_actual_commits_the_estimate_marked(harness: Harness) -> None:
    client, faults = harness.async_client()
    rid: list[str] = []

    def broken_actual(result: Any) -> int:
        raise RuntimeError("cannot price")

    async with client:

        @with_cycles(estimate=800, actual=broken_actual, client=client)
        async def work() -> str:
            ctx = get_cycles_context()
            assert ctx is not None
            rid.append(ctx.reservation_id)
            return "result"

        assert await work() == "result"
    harness.assert_ledger(spent=800)
    assert faults.log[1].body["actual"]["amount"] == 800
    assert harness.reservation(rid[0])["committed_metadata"] == {"actual_source": "estimate"}


@pytest.mark.anyio
async def test_metrics_metadata_and_latency(harness: Harness) -> None:
    client, faults = harness.async_client()
    rid: list[str] = []
    async with client:

        @with_cycles(estimate=100, actual=90, metadata={"run": "r1"}, client=client)
        async def with_metrics() -> None:
            ctx = get_cycles_context()
            assert ctx is not None
            rid.append(ctx.reservation_id)
            ctx.metrics = CyclesMetrics(tokens_input=11, tokens_output=7, latency_ms=42)
            ctx.commit_metadata = {"model": "m-1"}

        @with_cycles(estimate=100, client=client)
        async def plain() -> None:
            ctx = get_cycles_context()
            assert ctx is not None
            rid.append(ctx.reservation_id)
            await anyio.sleep(0.01)

        await with_metrics()
        await plain()
    first, second = faults.entries("commit")
    assert first.body["metrics"] == {"tokens_input": 11, "tokens_output": 7, "latency_ms": 42}
    assert first.body["metadata"] == {"model": "m-1"}
    assert faults.entries("create")[0].body["metadata"] == {"run": "r1"}
    assert second.body["metrics"]["latency_ms"] >= 10  # filled in from the measured duration
    assert second.body["metadata"] == {"actual_source": "estimate"}
    detail = harness.reservation(rid[0])
    assert detail["metadata"] == {"run": "r1"}
    assert detail["committed_metadata"] == {"model": "m-1"}
    harness.assert_ledger(spent=190)


# --------------------------------------------------------------------------- context


@INPROC
@pytest.mark.anyio
async def test_nested_calls_restore_the_outer_context(harness: Harness) -> None:
    client, faults = harness.async_client()
    ids: dict[str, Any] = {}
    async with client:

        @with_cycles(estimate=10, actual=10, client=client)
        async def inner() -> None:
            ctx = get_cycles_context()
            assert ctx is not None
            ids["inner"] = ctx.reservation_id

        @with_cycles(estimate=20, actual=20, client=client)
        async def outer() -> None:
            ctx = get_cycles_context()
            assert ctx is not None
            ids["outer"] = ctx.reservation_id
            await inner()
            after = get_cycles_context()
            ids["after"] = after.reservation_id if after else None

        assert get_cycles_context() is None
        await outer()
        assert get_cycles_context() is None
    assert ids["inner"] != ids["outer"]
    assert ids["after"] == ids["outer"]
    assert faults.sequence() == ["create", "create", "commit", "commit"]
    assert [e.reservation_id for e in faults.entries("commit")] == [ids["inner"], ids["outer"]]
    harness.assert_ledger(spent=30)


@INPROC
@pytest.mark.anyio
async def test_context_visible_in_spawned_tasks(harness: Harness) -> None:
    client, _ = harness.async_client()
    seen: list[str | None] = []
    async with client:

        @with_cycles(estimate=10, client=client)
        async def work() -> str:
            ctx = get_cycles_context()
            assert ctx is not None

            async def child() -> None:
                await anyio.sleep(0)
                c = get_cycles_context()
                seen.append(c.reservation_id if c else None)

            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(child)
            return ctx.reservation_id

        rid = await work()
    assert seen == [rid] * 3


@INPROC
@pytest.mark.anyio
async def test_methods_get_self(harness: Harness) -> None:
    client, faults = harness.async_client()

    class Agent:
        def __init__(self) -> None:
            self.calls = 0

        @with_cycles(estimate=lambda self, n: n * 10, actual=lambda result: result, agent=lambda self, n: "bot",
                     client=client)
        async def run(self, n: int) -> int:
            self.calls += 1
            return n * 7

    agent = Agent()
    async with client:
        assert await agent.run(3) == 21
    assert agent.calls == 1
    assert Agent.run.__name__ == "run"
    create, commit = faults.log
    assert create.body["estimate"]["amount"] == 30
    assert create.body["subject"] == {"tenant": "acme", "agent": "bot"}
    assert commit.body["actual"]["amount"] == 21


# --------------------------------------------------------------------------- decoration-time checks


def test_generators_are_refused() -> None:
    def gen() -> Any:
        yield 1

    async def agen() -> Any:
        yield 1

    for fn in (gen, agen):
        with pytest.raises(TypeError, match="reserve_for_stream"):
            with_cycles(estimate=1)(fn)


def test_actual_required_when_estimate_fallback_disabled() -> None:
    with pytest.raises(ValueError, match="actual"):
        with_cycles(estimate=1, use_estimate_if_actual_not_provided=False)
    with_cycles(estimate=1, actual=1, use_estimate_if_actual_not_provided=False)  # fine with an actual


def test_wraps_keeps_metadata() -> None:
    async def documented(x: int) -> int:
        """Docs."""
        return x

    wrapped = with_cycles(estimate=1)(documented)
    assert wrapped.__name__ == "documented" and wrapped.__doc__ == "Docs."
    assert wrapped.__wrapped__ is documented  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- scale and threads


@INPROC
@pytest.mark.anyio
async def test_thousand_concurrent_calls(harness: Harness) -> None:
    client, faults = harness.async_client(journal_enabled=False)
    done = 0
    async with client:

        @with_cycles(estimate=10, actual=lambda r: r, client=client)
        async def work(i: int) -> int:
            nonlocal done
            await anyio.sleep(0)
            ctx = get_cycles_context()
            assert ctx is not None
            done += 1
            return 1 + i % 2

        async with anyio.create_task_group() as tg:
            for i in range(1000):
                tg.start_soon(work, i)
        assert await client.flush() == 0
    assert done == 1000
    assert faults.count("create") == 1000 and faults.count("commit") == 1000
    assert len({e.reservation_id for e in faults.entries("commit")}) == 1000
    harness.assert_ledger(spent=1500)


@INPROC
@pytest.mark.anyio
async def test_no_thread_on_the_async_happy_path(harness: Harness) -> None:
    client, faults = harness.async_client(journal_enabled=False)
    before = set(threading.enumerate())  # identities: threads that end meanwhile (idle pools) do not matter
    started: list[set[threading.Thread]] = []
    async with client:

        @with_cycles(estimate=10, client=client)
        async def work() -> None:
            started.append(set(threading.enumerate()) - before)

        for _ in range(5):
            await work()
        assert await client.flush() == 0
        assert set(threading.enumerate()) - before == set()
    assert started == [set()] * 5
    assert faults.count("commit") == 5
    assert not client.pending_settlements


# --------------------------------------------------------------------------- cancellation, validation, defaults


@INPROC
@pytest.mark.anyio
async def test_cancelled_call_releases(harness: Harness) -> None:
    client, faults = harness.async_client()
    started = anyio.Event()
    async with client:

        @with_cycles(estimate=100, client=client)
        async def work() -> None:
            started.set()
            await anyio.sleep_forever()

        async with anyio.create_task_group() as tg:
            tg.start_soon(work)
            await started.wait()
            tg.cancel_scope.cancel()
    assert faults.sequence() == ["create", "release"]
    assert faults.log[1].status == 200
    harness.assert_ledger(spent=0)


@INPROC
@pytest.mark.anyio
async def test_invalid_estimate_sends_nothing(harness: Harness) -> None:
    client, faults = harness.async_client()
    async with client:

        @with_cycles(estimate=lambda n: n, client=client)
        async def work(n: int) -> None:
            raise AssertionError("must not run")

        with pytest.raises(ValueError, match="estimate must be non-negative"):
            await work(-1)
    assert faults.log == []
    with pytest.raises(ValueError, match="ttl_ms"):
        with_cycles(estimate=1, ttl_ms=500)


@INPROC
@pytest.mark.anyio
async def test_dry_run_with_caps(harness: Harness) -> None:
    harness.server.create_budget("tenant:acme/workspace:capped", USD, 100_000, caps={"max_tokens": 64})
    client, _ = harness.async_client()
    async with client:

        @with_cycles(estimate=100, workspace="capped", dry_run=True, client=client)
        async def work() -> Any:
            raise AssertionError("must not run")

        result = await work()
    assert isinstance(result, DryRunResult)
    assert result.decision is Decision.ALLOW_WITH_CAPS
    assert result.caps is not None and result.caps.max_tokens == 64
    harness.assert_ledger(spent=0, scope="tenant:acme/workspace:capped")


@INPROC
@pytest.mark.anyio
async def test_default_client_is_used_and_cached(harness: Harness) -> None:
    from runcycles import set_default_client

    client, faults = harness.async_client()

    @with_cycles(estimate=10, actual=5)
    async def work() -> str:
        return "ok"

    async with client:
        set_default_client(client)
        try:
            assert await work() == "ok"
        finally:
            set_default_client(None)
        assert await work() == "ok"  # resolved at the first call, then kept by the wrapper
    assert faults.sequence() == ["create", "commit", "create", "commit"]
    harness.assert_ledger(spent=10)

    @with_cycles(estimate=10)
    async def orphan() -> None:
        raise AssertionError("must not run")

    with pytest.raises(RuntimeError, match="No Cycles client available"):
        await orphan()


# --------------------------------------------------------------------------- short leases survive


def _extends_ok(n: int) -> Any:
    return lambda f: sum(1 for e in f.entries("extend") if e.status == 200) >= n


@INPROC
@pytest.mark.anyio
async def test_short_lease_survives_a_longer_call(harness: Harness) -> None:
    """ttl 2 s, no grace: the call outlives the first expiry; the heartbeat keeps it alive to the commit."""
    client, faults = harness.async_client()
    async with client:

        @with_cycles(estimate=100, actual=100, ttl_ms=2000, grace_period_ms=0, client=client)
        async def work() -> None:
            await faults.wait_for(_extends_ok(3), timeout=20)

        await work()
        assert await client.flush() == 0
    create, commit = faults.entries("create")[0], faults.entries("commit")[0]
    assert commit.at - create.at > 2.0  # past the lease the create granted
    assert commit.status == 200
    assert faults.count("event") == 0
    keys = faults.keys("extend")
    assert len(set(keys)) == len(keys)  # a fresh key per beat
    harness.assert_ledger(spent=100)


def test_short_lease_survives_sync(harness: Harness) -> None:
    client, faults = harness.sync_client()

    @with_cycles(estimate=100, actual=100, ttl_ms=2000, grace_period_ms=0, client=client)
    def work() -> None:
        faults.wait_for_sync(_extends_ok(3), timeout=20)

    work()
    assert client.flush() == 0
    create, commit = faults.entries("create")[0], faults.entries("commit")[0]
    assert commit.at - create.at > 2.0 and commit.status == 200
    harness.assert_ledger(spent=100)


@INPROC
@pytest.mark.anyio
async def test_short_lease_survives_without_remaining_ttl(harness: Harness) -> None:
    """A server that omits ``remaining_ttl_ms``: the fallback schedule keeps a 2 s lease alive too."""
    client, faults = harness.async_client()
    strip = lambda real: {k: v for k, v in real.items() if k != "remaining_ttl_ms"}  # noqa: E731
    faults.on(["create", "extend"], times=None).body(200, strip)
    async with client:

        @with_cycles(estimate=100, actual=100, ttl_ms=2000, grace_period_ms=0, client=client)
        async def work() -> None:
            await faults.wait_for(_extends_ok(3), timeout=20)

        await work()
    create, commit = faults.entries("create")[0], faults.entries("commit")[0]
    assert commit.at - create.at > 2.0 and commit.status == 200
    assert all("remaining_ttl_ms" not in (e.body or {}) for e in faults.entries("extend"))
    harness.assert_ledger(spent=100)


@INPROC
def test_sync_calls_from_many_threads(harness: Harness) -> None:
    client, faults = harness.sync_client()
    errors: list[BaseException] = []

    @with_cycles(estimate=20, actual=lambda r: r, client=client)
    def work(n: int) -> int:
        ctx = get_cycles_context()
        assert ctx is not None
        return n

    def run(t: int) -> None:
        try:
            for i in range(5):
                assert work(t + i) == t + i
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert client.flush() == 0
    assert faults.count("create") == 100 and faults.count("commit") == 100
    harness.assert_ledger(spent=sum(t + i for t in range(20) for i in range(5)))
