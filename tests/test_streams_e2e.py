# ruff: noqa: F811  (pytest fixtures imported from fixtures_local)
"""`reserve_for_stream` end to end against the embedded server: explicit and implicit settlement, once-only
terminal calls under concurrency, and background settlement of a stream commit."""

from __future__ import annotations

import anyio
import pytest
from fixtures_local import USD, Harness, harness, mode, uvicorn_switch  # noqa: F401

from runcycles import (
    BudgetExceededError,
    CommitOveragePolicy,
    CyclesError,
    CyclesMetrics,
    Decision,
    get_cycles_context,
    reserve_for_stream,
)

pytestmark = pytest.mark.timeout(60)

INPROC = pytest.mark.parametrize("mode", ["inproc"])


class Boom(Exception):
    pass


@pytest.mark.anyio
async def test_explicit_commit(harness: Harness) -> None:
    client, faults = harness.async_client()
    async with client:
        async with reserve_for_stream(client=client, estimate=1000, action_kind="llm.stream", action_name="m") as s:
            assert s.decision is Decision.ALLOW
            assert s.expires_at_ms is not None and not s.finalized
            ctx = get_cycles_context()
            assert ctx is not None and ctx.reservation_id == s.reservation_id
            assert harness.budget()["reserved"] == 1000
            await s.commit(640, metrics=CyclesMetrics(tokens_output=64), metadata={"chunks": 3})
            assert s.finalized
        assert get_cycles_context() is None
        assert await client.flush() == 0
    harness.assert_ledger(spent=640)
    assert faults.sequence() == ["create", "commit"]
    commit = faults.log[1].body
    assert commit["actual"] == {"unit": USD, "amount": 640}
    assert commit["metrics"]["tokens_output"] == 64 and commit["metrics"]["latency_ms"] >= 0
    assert harness.reservation(s.reservation_id)["committed_metadata"] == {"chunks": 3}


@pytest.mark.anyio
async def test_exit_without_commit_commits_the_estimate_marked(harness: Harness) -> None:
    client, faults = harness.async_client()
    async with client, reserve_for_stream(client=client, estimate=900) as s:
        pass
    harness.assert_ledger(spent=900)
    assert faults.sequence() == ["create", "commit"]
    assert harness.reservation(s.reservation_id)["committed_metadata"] == {"actual_source": "estimate"}


@INPROC
@pytest.mark.anyio
async def test_exit_without_commit_commits_recorded_actual(harness: Harness) -> None:
    client, faults = harness.async_client()
    async with client, reserve_for_stream(client=client, estimate=900) as s:
        s.actual = 250
        s.metrics = CyclesMetrics(tokens_input=5)
    harness.assert_ledger(spent=250)
    body = faults.log[1].body
    assert body["actual"]["amount"] == 250 and "metadata" not in body
    assert body["metrics"]["tokens_input"] == 5


@pytest.mark.anyio
async def test_exception_with_actual_commits_it_and_propagates(harness: Harness) -> None:
    client, faults = harness.async_client()
    async with client:
        with pytest.raises(Boom):
            async with reserve_for_stream(client=client, estimate=900) as s:
                s.actual = 300
                raise Boom
    harness.assert_ledger(spent=300)  # known spend is never released
    assert faults.sequence() == ["create", "commit"]
    assert harness.reservation(s.reservation_id)["status"] == "COMMITTED"


@pytest.mark.anyio
async def test_exception_without_actual_releases(harness: Harness) -> None:
    client, faults = harness.async_client()
    async with client:
        with pytest.raises(Boom):
            async with reserve_for_stream(client=client, estimate=900) as s:
                raise Boom
    harness.assert_ledger(spent=0)
    assert faults.sequence() == ["create", "release"]
    assert faults.log[1].body["reason"] == "stream_failed"
    assert harness.reservation(s.reservation_id)["status"] == "RELEASED"


@INPROC
@pytest.mark.anyio
async def test_release_then_commit_raises_and_release_is_noop(harness: Harness) -> None:
    client, faults = harness.async_client()
    async with client, reserve_for_stream(client=client, estimate=900) as s:
        await s.release("user_cancelled")
        assert s.finalized
        with pytest.raises(CyclesError, match="finalized"):
            await s.commit(10)
        await s.release()
        s.dispose()
    harness.assert_ledger(spent=0)
    assert faults.sequence() == ["create", "release"]
    assert faults.log[1].body["reason"] == "user_cancelled"


@INPROC
@pytest.mark.anyio
async def test_commit_after_commit_raises(harness: Harness) -> None:
    client, faults = harness.async_client()
    async with client, reserve_for_stream(client=client, estimate=900) as s:
        await s.commit(100)
        with pytest.raises(CyclesError):
            await s.commit(100)
    harness.assert_ledger(spent=100)
    assert faults.sequence() == ["create", "commit"]


@INPROC
@pytest.mark.anyio
async def test_dispose_stops_without_settling(harness: Harness) -> None:
    client, faults = harness.async_client()
    async with client, reserve_for_stream(client=client, estimate=900) as s:
        s.dispose()
        assert s.finalized
        await s.release()  # no-op
    assert faults.sequence() == ["create"]
    harness.assert_ledger(spent=0, reserved=900)  # held until the reservation expires on its own
    assert harness.reservation(s.reservation_id)["status"] == "ACTIVE"


@INPROC
@pytest.mark.anyio
@pytest.mark.parametrize("rounds", range(3))
async def test_concurrent_terminal_calls_exactly_one_wins(harness: Harness, rounds: int) -> None:
    client, faults = harness.async_client()
    results: list[str] = []
    async with client:
        s = await reserve_for_stream(client=client, estimate=900)

        async def commit(amount: int) -> None:
            try:
                await s.commit(amount)
                results.append(f"commit:{amount}")
            except CyclesError:
                results.append("refused")

        async def release() -> None:
            await s.release()
            results.append("release")

        async with anyio.create_task_group() as tg:
            for i in range(4):
                tg.start_soon(commit, 100 + i)
                tg.start_soon(release)
        assert await client.flush() == 0
    settle = [e for e in faults.log if e.operation in ("commit", "release")]
    assert len(settle) == 1  # one server call, whoever won
    winner = settle[0]
    if winner.operation == "commit":
        amount = winner.body["actual"]["amount"]
        assert results.count(f"commit:{amount}") == 1
        assert results.count("refused") == 3
        harness.assert_ledger(spent=amount)
    else:
        assert results.count("refused") == 4
        harness.assert_ledger(spent=0)
    assert results.count("release") == 4  # releases after finalization are no-ops, never errors


@INPROC
@pytest.mark.anyio
async def test_awaited_handle_with_background_heartbeat(harness: Harness) -> None:
    client, faults = harness.async_client()
    async with client:
        s = await reserve_for_stream(client=client, estimate=500)
        assert harness.budget()["reserved"] == 500
        await s.commit(123)
        assert await client.flush() == 0
    harness.assert_ledger(spent=123)
    assert faults.sequence() == ["create", "commit"]


@INPROC
@pytest.mark.anyio
async def test_transient_stream_commit_settles_in_background(harness: Harness) -> None:
    client, faults = harness.async_client()
    faults.on("commit").status(500)
    faults.on("commit").connect_error()
    async with client:
        async with reserve_for_stream(client=client, estimate=500) as s:
            await s.commit(400)  # returns normally; retried in the background
            assert s.finalized
        assert await client.flush() == 0
    assert faults.sequence() == ["create", "commit", "commit_same_key", "commit_same_key"]
    assert len({e.body["idempotency_key"] for e in faults.entries("commit")}) == 1
    harness.assert_ledger(spent=400)


@INPROC
@pytest.mark.anyio
async def test_rejected_stream_commit_raises_typed(harness: Harness) -> None:
    client, faults = harness.async_client()
    async with client, reserve_for_stream(
        client=client, estimate=500, overage_policy=CommitOveragePolicy.REJECT
    ) as s:
        with pytest.raises(BudgetExceededError):
            await s.commit(900)
        assert s.finalized
    assert faults.sequence() == ["create", "commit"]
    harness.assert_ledger(spent=0, reserved=500)


def test_sync_stream(harness: Harness) -> None:
    client, faults = harness.sync_client()
    with reserve_for_stream(client=client, estimate=700) as s:
        ctx = get_cycles_context()
        assert ctx is not None and ctx.reservation_id == s.reservation_id
        s.commit(650)
    with pytest.raises(Boom), reserve_for_stream(client=client, estimate=700):
        raise Boom
    with reserve_for_stream(client=client, estimate=700) as implicit:
        implicit.actual = 20
    assert client.flush() == 0
    harness.assert_ledger(spent=670)
    assert faults.sequence() == ["create", "commit", "create", "release", "create", "commit"]


def test_sync_stream_transient_commit(harness: Harness) -> None:
    client, faults = harness.sync_client()
    faults.on("commit").lost_response()
    with reserve_for_stream(client=client, estimate=700) as s:
        s.commit(333)
    assert client.flush() == 0
    assert faults.sequence() == ["create", "commit", "commit_same_key"]
    harness.assert_ledger(spent=333)


@INPROC
def test_sync_concurrent_terminal_calls_from_threads(harness: Harness) -> None:
    import threading

    client, faults = harness.sync_client()
    barrier = threading.Barrier(8)
    outcomes: list[str] = []
    lock = threading.Lock()

    def commit(amount: int) -> None:
        barrier.wait()
        try:
            handle.commit(amount)
            result = "commit"
        except CyclesError:
            result = "refused"
        with lock:
            outcomes.append(result)

    def release() -> None:
        barrier.wait()
        handle.release()
        with lock:
            outcomes.append("release")

    with reserve_for_stream(client=client, estimate=900) as handle:
        threads = [threading.Thread(target=commit, args=(100 + i,)) for i in range(4)]
        threads += [threading.Thread(target=release) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert get_cycles_context() is None
    assert client.flush() == 0
    settle = [e for e in faults.log if e.operation in ("commit", "release")]
    assert len(settle) == 1
    assert outcomes.count("refused") == (3 if settle[0].operation == "commit" else 4)
    harness.assert_ledger(spent=settle[0].body["actual"]["amount"] if settle[0].operation == "commit" else 0)


@INPROC
@pytest.mark.anyio
async def test_invalid_commit_amount_raises_and_keeps_the_handle_open(harness: Harness) -> None:
    client, faults = harness.async_client()
    async with client, reserve_for_stream(client=client, estimate=900) as s:
        for bad in (-5, 1.5, True):
            with pytest.raises(ValueError, match="actual"):
                await s.commit(bad)
        assert not s.finalized
        await s.commit(5)
    assert faults.sequence() == ["create", "commit"]
    assert faults.log[1].body["actual"]["amount"] == 5
    harness.assert_ledger(spent=5)


@INPROC
def test_invalid_commit_amount_sync(harness: Harness) -> None:
    client, faults = harness.sync_client()
    with reserve_for_stream(client=client, estimate=900) as s:
        with pytest.raises(ValueError, match="actual must be non-negative"):
            s.commit(-1)
        assert not s.finalized
    assert faults.sequence() == ["create", "commit"]  # the exit committed the estimate
    harness.assert_ledger(spent=900)


@INPROC
@pytest.mark.anyio
async def test_cancelled_stream_releases(harness: Harness) -> None:
    client, faults = harness.async_client()
    entered = anyio.Event()
    async with client:

        async def stream() -> None:
            async with reserve_for_stream(client=client, estimate=900):
                entered.set()
                await anyio.sleep_forever()

        async with anyio.create_task_group() as tg:
            tg.start_soon(stream)
            await entered.wait()
            tg.cancel_scope.cancel()
    assert faults.sequence() == ["create", "release"]
    assert faults.log[1].status == 200 and faults.log[1].body["reason"] == "stream_failed"
    harness.assert_ledger(spent=0)


@INPROC
@pytest.mark.anyio
async def test_cancelled_stream_with_usage_commits_it(harness: Harness) -> None:
    client, faults = harness.async_client()
    entered = anyio.Event()
    async with client:

        async def stream() -> None:
            async with reserve_for_stream(client=client, estimate=900) as s:
                s.actual = 120
                entered.set()
                await anyio.sleep_forever()

        async with anyio.create_task_group() as tg:
            tg.start_soon(stream)
            await entered.wait()
            tg.cancel_scope.cancel()
    assert faults.sequence() == ["create", "commit"]
    assert faults.log[1].status == 200
    harness.assert_ledger(spent=120)
