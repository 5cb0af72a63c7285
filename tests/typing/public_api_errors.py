"""Mistakes ``mypy --strict`` must report (tests/test_typing.py expects an error on each line marked E)."""

from __future__ import annotations

from dataclasses import dataclass

from runcycles import AsyncCyclesClient, CyclesClient, reserve_for_stream, with_cycles


@dataclass
class Reply:
    cost: int


def reply_cost(reply: Reply) -> int:
    return reply.cots  # E: wrong attribute on the result


@with_cycles(estimate=1, actual=reply_cost)  # E: actual= expects a Reply, the function returns a str
def returns_text() -> str:
    return "x"


async def wrong_flavour(client: AsyncCyclesClient, sync_client: CyclesClient) -> None:
    with reserve_for_stream(client=client, estimate=1):  # E: an async client needs `async with`
        pass
    async with reserve_for_stream(client=sync_client, estimate=1):  # E: a sync client needs `with`
        pass


def typo(client: CyclesClient) -> None:
    with reserve_for_stream(client=client, estimate=1) as stream:
        stream.actul = 5  # E: no such attribute


def wrong_request(client: CyclesClient) -> None:
    client.create_reservation(42)  # E: not a request model or a dict
