"""Fixtures for the embedded-server tests: a fake clock, a seeded server, and clients that reach it either
in process or over real HTTP (uvicorn on a free loopback port), so every semantics test runs both ways."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from local_support import ADMIN_KEY, FakeClock, World, _Switch, check_response, start_uvicorn

from runcycles.local import LocalCyclesServer


@pytest.fixture(scope="session")
def http_switch() -> Iterator[tuple[str, _Switch]]:
    switch = _Switch()
    base_url, server, thread = start_uvicorn(switch)
    yield base_url, switch
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(clock: FakeClock) -> Iterator[LocalCyclesServer]:
    srv = LocalCyclesServer(admin_key=ADMIN_KEY, clock=clock)
    yield srv
    srv.close()


@pytest.fixture(params=["inproc", "http"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def world(server: LocalCyclesServer, clock: FakeClock, mode: str, request: pytest.FixtureRequest) -> Iterator[World]:
    hooks = {"response": [check_response]}
    if mode == "inproc":
        transport = server.transport()

        def factory(headers: dict[str, str]) -> httpx.Client:
            return httpx.Client(transport=transport, base_url="http://local", headers=headers, event_hooks=hooks)
    else:
        base_url, switch = request.getfixturevalue("http_switch")
        switch.target = server.asgi_app

        def factory(headers: dict[str, str]) -> httpx.Client:
            return httpx.Client(base_url=base_url, headers=headers, event_hooks=hooks)

    w = World(server, clock, factory)
    yield w
    w.close()
