"""Minimal raw-asyncio HTTP/1.1 keep-alive pieces for the benchmarks (stdlib only, so that it runs in any venv).

- `serve_fake`: a fake Cycles server answering reserve / commit / release / extend / event / get with valid
  canned JSON. It does no bookkeeping, so it is never the bottleneck of a client benchmark.
- `RawConnection`: a keep-alive HTTP/1.1 client connection (one request in flight), a load generator much
  lighter than httpx; `load` loops reserve -> commit on N of them.

    python bench/_rawhttp.py serve [--port 0]     # prints "PORT <n>" once listening
    python bench/_rawhttp.py load --base-url URL --key KEY [--clients 32] [--seconds 3]   # prints one JSON line
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from typing import Any

_REASONS = {200: "OK", 201: "Created", 404: "Not Found"}


def _response(status: int, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


class _FakeCycles(asyncio.Protocol):
    ids = itertools.count(1)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            method, path = head.split(" ", 2)[:2]
            self.transport.write(self._answer(method, path.split("?", 1)[0], body))

    def _answer(self, method: str, path: str, body: bytes) -> bytes:
        # Rounded up: a lease that looks shorter than requested (by a truncated millisecond) is a "clamped" lease
        # to a client, which is not what this fake means to test.
        now = time.time_ns() // 1_000_000 + 1
        if method == "POST" and path == "/v1/reservations":
            request = json.loads(body)
            estimate = request.get("estimate") or {"unit": "USD_MICROCENTS", "amount": 0}
            ttl = int(request.get("ttl_ms") or 60000)
            answer: dict[str, Any] = {
                "decision": "ALLOW",
                "reservation_id": f"r-{next(self.ids)}",
                "affected_scopes": ["tenant:bench"],
                "scope_path": "tenant:bench",
                "reserved": estimate,
                "expires_at_ms": now + ttl,
                "remaining_ttl_ms": ttl,
            }
            return _response(200, json.dumps(answer).encode())
        if method == "POST" and path.endswith("/commit"):
            actual = json.loads(body).get("actual") or {"unit": "USD_MICROCENTS", "amount": 0}
            return _response(200, json.dumps({"status": "COMMITTED", "charged": actual}).encode())
        if method == "POST" and path.endswith("/release"):
            return _response(
                200, b'{"status":"RELEASED","released":{"unit":"USD_MICROCENTS","amount":0}}'
            )
        if method == "POST" and path.endswith("/extend"):
            extended = {"status": "ACTIVE", "expires_at_ms": now + 60000, "remaining_ttl_ms": 60000}
            return _response(200, json.dumps(extended).encode())
        if method == "POST" and path == "/v1/events":
            return _response(201, json.dumps({"status": "APPLIED", "event_id": f"e-{next(self.ids)}"}).encode())
        if method == "GET" and path.startswith("/v1/reservations/"):
            return _response(404, b'{"error":"NOT_FOUND","message":"no such reservation","request_id":"x"}')
        return _response(404, b'{"error":"NOT_FOUND","message":"unknown route","request_id":"x"}')


async def serve_fake(port: int = 0) -> None:
    """Serve the fake Cycles API on 127.0.0.1 until cancelled; prints ``PORT <n>`` once listening."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_FakeCycles, "127.0.0.1", port, backlog=4096)
    print("PORT", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


class RawConnection:
    """One keep-alive HTTP/1.1 connection; ``request`` sends and reads one exchange."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        assert self.reader is not None and self.writer is not None
        payload = json.dumps(body, separators=(",", ":")).encode() if body is not None else b""
        head = (
            f"{method} {path} HTTP/1.1\r\nhost: {self.host}\r\n{self.extra}"
            f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n"
        )
        self.writer.write(head.encode("latin-1") + payload)
        status_line = await self.reader.readline()
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        data = await self.reader.readexactly(length) if length else b""
        return status, json.loads(data) if data else None

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def load(base_url: str, key: str, clients: int, seconds: float, tenant: str = "bench") -> dict[str, Any]:
    """``clients`` connections looping reserve -> commit for ``seconds``; counts, latencies and own CPU."""
    host, port = base_url.split("//", 1)[1].rsplit(":", 1)
    connections = [RawConnection(host, int(port), {"x-cycles-api-key": key}) for _ in range(clients)]
    for connection in connections:
        await connection.open()
    latencies: list[float] = []
    errors: list[str] = []
    stop_at = time.perf_counter() + seconds

    async def worker(index: int, connection: RawConnection) -> None:
        n = 0
        while time.perf_counter() < stop_at:
            began = time.perf_counter()
            status, body = await connection.request("POST", "/v1/reservations", {
                "idempotency_key": f"w{index}-{n}-r",
                "subject": {"tenant": tenant, "agent": f"a{index}"},
                "action": {"kind": "llm.completion", "name": "bench"},
                "estimate": {"unit": "USD_MICROCENTS", "amount": 1000},
            })
            if status != 200:
                errors.append(f"create {status}: {body}")
                return
            status, body = await connection.request("POST", f"/v1/reservations/{body['reservation_id']}/commit", {
                "idempotency_key": f"w{index}-{n}-c", "actual": {"unit": "USD_MICROCENTS", "amount": 900},
            })
            if status != 200:
                errors.append(f"commit {status}: {body}")
                return
            latencies.append(time.perf_counter() - began)
            n += 1

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(i, c) for i, c in enumerate(connections)))
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    for connection in connections:
        await connection.close()
    latencies.sort()
    return {
        "cycles": len(latencies),
        "elapsed": elapsed,
        "loadgen_cpu": cpu,
        "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None,
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else None,
        "errors": errors[:3],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="the benchmarks' fake Cycles server and raw load generator")
    parser.add_argument("command", choices=["serve", "load"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--base-url")
    parser.add_argument("--key", default="")
    parser.add_argument("--tenant", default="bench")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    if args.command == "load":
        result = asyncio.run(load(args.base_url, args.key, args.clients, args.seconds, args.tenant))
        print(json.dumps(result), flush=True)
        return
    try:
        asyncio.run(serve_fake(args.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
