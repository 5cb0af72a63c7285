"""The built-in HTTP front (``runcycles serve``'s default) on a free 127.0.0.1 port in a thread, and a raw
HTTP/1.1 client that reads responses exactly as framed (to check framing, pipelining and closes)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from runcycles.cli import listen
from runcycles.local import LocalCyclesServer
from runcycles.local._front import Front, FrontLimits, StopRequest, run

USD = "USD_MICROCENTS"


@attrs.define
class Served:
    """A front serving ``server`` on ``port`` (stopped when the ``front`` context ends)."""

    server: LocalCyclesServer
    front: Front
    port: int
    key: str
    stop: StopRequest
    thread: threading.Thread

    def connect(self, timeout: float = 10) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def shutdown(self) -> None:
        self.stop.request()
        self.thread.join(20)
        assert not self.thread.is_alive(), "the front did not stop"


@contextlib.contextmanager
def front(db: Path | None = None, **limits: Any) -> Iterator[Served]:
    """A seeded server (tenant ``acme``, in memory or on ``db``) behind the built-in front."""
    server = LocalCyclesServer(None if db is None else str(db), max_body_bytes=limits.pop("max_body_bytes", 4096))
    server.create_tenant("acme")
    server.create_budget("tenant:acme", USD, 10**9)
    key = server.create_api_key("acme")
    sock = listen("127.0.0.1", 0)
    the_front = Front(server, FrontLimits(**limits))
    stop = StopRequest()
    thread = threading.Thread(target=run, args=(the_front, sock, stop), daemon=True)
    thread.start()
    served = Served(server, the_front, sock.getsockname()[1], key, stop, thread)
    try:
        yield served
    finally:
        served.shutdown()
        server.close()


@attrs.define
class Response:
    """One response as read off the wire."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Reader:
    """Reads framed HTTP/1.1 responses from a socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def response(self, head_only: bool = False) -> Response:
        """The next response (``head_only``: a response to HEAD, whose content-length has no body)."""
        while b"\r\n\r\n" not in self.buffer:
            assert self._fill(), f"connection closed before a response: {self.buffer!r}"
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            assert name.lower() not in headers, f"duplicate header {name}"
            headers[name.lower()] = value.strip()
        length = 0 if head_only else int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            assert self._fill(), "connection closed inside a body"
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return Response(int(status_line.split()[1]), headers, body)

    def closed(self) -> bool:
        """Whether the server closed the connection (waits for it, up to the socket timeout)."""
        try:
            return not self._fill() and not self.buffer
        except ConnectionResetError:
            return True


def request(method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    """A request with a Content-Length (when it has a body) and a Host header."""
    lines = [f"{method} {target} HTTP/1.1", "Host: test"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def decide_body(key: str = "d1") -> bytes:
    return json.dumps(
        {
            "idempotency_key": key,
            "subject": {"tenant": "acme"},
            "action": {"kind": "k", "name": "n"},
            "estimate": {"unit": USD, "amount": 1},
        }
    ).encode()


def count_batches(ledger: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], list[int]]:
    """Count ``ledger``'s write groups and syncs from now on: one entry appended per call to each."""
    groups: list[int] = []
    syncs: list[int] = []
    real_group, real_sync = ledger.group, ledger.sync

    def counting_group() -> Any:
        groups.append(1)
        return real_group()

    def counting_sync() -> None:
        syncs.append(1)
        real_sync()

    monkeypatch.setattr(ledger, "group", counting_group)
    monkeypatch.setattr(ledger, "sync", counting_sync)
    return groups, syncs
