"""Type-checked by tests/test_typing.py with ``mypy --strict`` (never run): the public surface is typed."""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from typing_extensions import assert_type

from runcycles import (
    AsyncCyclesClient,
    AsyncStreamReservation,
    AsyncStreamStarter,
    BalanceResponse,
    Caps,
    CommitResponse,
    CyclesClient,
    CyclesContext,
    CyclesMetrics,
    Decision,
    DryRunResult,
    ReservationCreateRequest,
    ReservationCreateResponse,
    StreamReservation,
    SyncStreamStarter,
    TypedCyclesResponse,
    get_cycles_context,
    require_cycles_context,
    reserve_for_stream,
    with_cycles,
)


@dataclass
class Reply:
    text: str
    cost: int


def reply_cost(reply: Reply) -> int:
    return reply.cost


@with_cycles(estimate=1, actual=reply_cost)
def typed_sync(prompt: str) -> Reply:
    return Reply(prompt, 1)


@with_cycles(estimate=1, actual=reply_cost)
async def typed_async(prompt: str) -> Reply:
    return Reply(prompt, 1)


@with_cycles(estimate=1, actual=lambda reply: reply.cost)
async def with_lambda(prompt: str) -> Reply:
    return Reply(prompt, 1)


@with_cycles(estimate=lambda prompt: len(prompt))
def plain(prompt: str) -> int:
    caps = require_cycles_context().caps
    return caps.max_tokens or 0 if caps is not None else 0


@with_cycles(estimate=1, dry_run=True)
def dry_sync(prompt: str) -> Reply:
    return Reply(prompt, 1)


@with_cycles(estimate=1, dry_run=True)
async def dry_async(prompt: str) -> Reply:
    return Reply(prompt, 1)


def per_tenant(tenant: str, prompt: str) -> CyclesClient:
    return CyclesClient()


@with_cycles(estimate=1, client=per_tenant)
def multi_tenant(tenant: str, prompt: str) -> str:
    return prompt


async def check_decorators() -> None:
    assert_type(typed_sync("x"), Reply)
    pending = typed_async("x")
    _ = assert_type(pending, Coroutine[Any, Any, Reply])
    assert_type(await pending, Reply)
    assert_type(await with_lambda("x"), Reply)
    assert_type(plain("x"), int)
    assert_type(dry_sync("x"), DryRunResult)
    assert_type(await dry_async("x"), DryRunResult)
    assert_type(multi_tenant("acme", "x"), str)


def check_context() -> None:
    assert_type(get_cycles_context(), CyclesContext | None)
    context = require_cycles_context()
    assert_type(context, CyclesContext)
    assert_type(context.caps, Caps | None)
    assert_type(context.actual, int | None)
    context.actual = 5


async def check_async_streams(client: AsyncCyclesClient) -> None:
    async with reserve_for_stream(client=client, estimate=1) as stream:
        assert_type(stream, AsyncStreamReservation)
        assert_type(stream.actual, int | None)
        assert_type(stream.reservation_id, str)
        assert_type(stream.decision, Decision | str)
        assert_type(stream.metrics, CyclesMetrics | None)
        assert_type(stream.finalized, bool)
        stream.actual = 3
        assert_type(await stream.commit(3), None)
    handle = await reserve_for_stream(client=client, estimate=1)
    assert_type(handle, AsyncStreamReservation)
    await handle.release("done")


def check_sync_streams(client: CyclesClient) -> None:
    with reserve_for_stream(client=client, estimate=1) as stream:
        assert_type(stream, StreamReservation)
        assert_type(stream.commit(3), None)


async def check_default_client_streams() -> None:
    async with reserve_for_stream(estimate=1) as a:
        assert_type(a, AsyncStreamReservation)
    with reserve_for_stream(estimate=1) as s:
        assert_type(s, StreamReservation)


async def check_wire(client: CyclesClient, aclient: AsyncCyclesClient, request: ReservationCreateRequest) -> None:
    created = client.create_reservation(request)
    assert_type(created, TypedCyclesResponse[ReservationCreateResponse])
    assert_type(created.parsed, ReservationCreateResponse)
    assert_type(client.create_reservation({"idempotency_key": "k"}).parsed, ReservationCreateResponse)
    committed = await aclient.commit_reservation("r", {"idempotency_key": "k"})
    assert_type(committed.parsed, CommitResponse)
    assert_type((await aclient.get_balances(tenant="t")).parsed, BalanceResponse)


async def check_either_client(client: CyclesClient | AsyncCyclesClient) -> None:
    assert_type(reserve_for_stream(client=client, estimate=1), AsyncStreamStarter | SyncStreamStarter)
