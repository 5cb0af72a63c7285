"""The async client's default transport answers "did the server close this idle connection?" from the socket it
kept at connect (one poll, no other system call), with the same answers httpcore's own check gives."""

from __future__ import annotations

import socket

import pytest
from raw_http import Reply, raw_server

from runcycles import AsyncCyclesClient, CyclesConfig, _idle_check
from runcycles._idle_check import default_async_transport, is_readable

pytestmark = pytest.mark.timeout(60)


def test_a_socket_is_readable_once_data_or_end_of_file_waits_and_when_closed() -> None:
    left, right = socket.socketpair()
    try:
        assert not is_readable(left)
        right.sendall(b"x")
        assert is_readable(left)
        left.recv(1)
        assert not is_readable(left)
        right.close()
        assert is_readable(left)  # end of file: the peer is gone
    finally:
        left.close()
        right.close()
    assert is_readable(left)  # closed here: never reused


@pytest.mark.anyio
async def test_a_connection_the_server_closed_is_not_reused(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks = [0]
    real = _idle_check.is_readable

    def counting(sock: object) -> bool:
        checks[0] += 1
        return real(sock)  # type: ignore[arg-type]

    monkeypatch.setattr(_idle_check, "is_readable", counting)
    # Each request is answered on a connection the server then closes, without saying so in a header.
    with raw_server(lambda method, path: Reply(body=b'{"balances":[]}', hang_up=True)) as server:
        config = CyclesConfig(base_url=server.url, api_key="k", tenant="acme", journal_enabled=False)
        async with AsyncCyclesClient(config) as client:
            for _ in range(3):
                response = await client.get_balances(tenant="acme")
                assert response.is_success, response.error_message
                assert server.hung_up.acquire(timeout=10)  # its end of file is now waiting on our socket
        assert server.connections == 3
    assert checks[0] >= 2  # each later request looked at the idle connection first


def test_the_default_async_transport_keeps_httpx_pool_settings() -> None:
    transport = default_async_transport()
    pool = transport._pool
    assert pool._max_connections == 100
    assert pool._max_keepalive_connections == 100
    assert pool._keepalive_expiry == 5.0
    assert isinstance(pool._network_backend, _idle_check._Backend)
