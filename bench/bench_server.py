"""Throughput of the embedded Cycles server: reserve -> commit cycles per second with concurrent clients.

Runs three bounded phases (``--seconds`` each): in process on an in-memory database and on a SQLite file (WAL),
each of ``--threads`` client threads owning an ``httpx.Client`` over the in-process transport; then over
loopback HTTP: ``python -m runcycles serve`` in a child process on a file database, driven by a raw asyncio
HTTP/1.1 keep-alive load generator (``_rawhttp.py load``, ``--threads`` connections) in another process, so the
load generator is light and does not share the server's interpreter lock. It prints the server's CPU per
request (Linux ``/proc``) and the load generator's CPU use, to show which side is the bottleneck.

    python bench/bench_server.py [--threads 32] [--seconds 3] [--quick]

For comparison, the reference Java + Redis server is reported at ~456 reserve->commit cycles/s at 32 threads.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from runcycles.local import LocalCyclesServer

USD = "USD_MICROCENTS"


def seed(server: LocalCyclesServer) -> str:
    server.create_tenant("bench")
    server.create_budget("tenant:bench", USD, 10**15)
    return server.create_api_key("bench")


def run_phase(make_client: Callable[[], httpx.Client], threads: int, seconds: float) -> dict[str, Any]:
    """Loop reserve -> commit on ``threads`` threads for ``seconds``; returns counts and latencies."""
    start = threading.Barrier(threads + 1)
    stop_at = [0.0]
    counts = [0] * threads
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[str] = []

    def worker(index: int) -> None:
        with make_client() as client:
            start.wait()
            n = 0
            while time.perf_counter() < stop_at[0]:
                began = time.perf_counter()
                created = client.post(
                    "/v1/reservations",
                    json={
                        "idempotency_key": f"w{index}-{n}-r",
                        "subject": {"tenant": "bench", "agent": f"a{index}"},
                        "action": {"kind": "llm.completion", "name": "bench"},
                        "estimate": {"unit": USD, "amount": 1000},
                    },
                )
                if created.status_code != 200:
                    errors.append(created.text)
                    return
                rid = created.json()["reservation_id"]
                committed = client.post(
                    f"/v1/reservations/{rid}/commit",
                    json={"idempotency_key": f"w{index}-{n}-c", "actual": {"unit": USD, "amount": 900}},
                )
                if committed.status_code != 200:
                    errors.append(committed.text)
                    return
                latencies[index].append(time.perf_counter() - began)
                n += 1
            counts[index] = n

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    stop_at[0] = time.perf_counter() + seconds
    began = time.perf_counter()
    start.wait()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - began
    flat = sorted(x for per in latencies for x in per)
    return {
        "cycles": sum(counts),
        "elapsed": elapsed,
        "cycles_per_s": sum(counts) / elapsed,
        "p50_ms": 1000 * statistics.median(flat) if flat else float("nan"),
        "p99_ms": 1000 * flat[int(len(flat) * 0.99)] if flat else float("nan"),
        "errors": errors[:3],
    }


def start_server_process(db: str) -> tuple[subprocess.Popen[str], str, str]:
    """``python -m runcycles serve`` on a free loopback port in a child process (its own GIL, like a real server).

    Returns the process, the base URL and the seeded tenant's API key (read from the command's output).
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "runcycles",
        "serve",
        "--db",
        db,
        "--port",
        str(port),
        "--tenant",
        "bench",
        "--budget",
        str(10**15),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    key = ""
    for line in process.stdout:
        if "X-Cycles-API-Key):" in line:
            key = line.split("X-Cycles-API-Key):")[1].strip()
            break
    deadline = time.monotonic() + 10
    while True:  # wait until uvicorn accepts connections
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("server did not start") from None
            time.sleep(0.05)
    return process, f"http://127.0.0.1:{port}", key


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux ``/proc``; ``None`` elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report(name: str, result: dict[str, Any], threads: int) -> None:
    print(
        f"{name:<34} {result['cycles_per_s']:9.0f} cycles/s  ({result['cycles']} cycles in {result['elapsed']:.1f} s, "
        f"{threads} threads, cycle p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms)"
    )
    if result["errors"]:
        print("   errors:", result["errors"])


def http_phase(base_url: str, key: str, pid: int, clients: int, seconds: float) -> None:
    """The raw load generator against the server process; prints cycles/s and CPU per request."""
    server_cpu = process_cpu_seconds(pid)
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("_rawhttp.py")), "load", "--base-url", base_url,
         "--key", key, "--clients", str(clients), "--seconds", str(seconds)],
        capture_output=True, text=True, timeout=seconds + 120, check=True,
    )
    used = None if server_cpu is None else (process_cpu_seconds(pid) or 0.0) - server_cpu
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["cycles_per_s"] = result["cycles"] / result["elapsed"]
    for name in ("p50_ms", "p99_ms"):
        result[name] = float("nan") if result[name] is None else result[name]
    report("loopback HTTP (raw asyncio load gen)", result, clients)
    requests = 2 * result["cycles"]
    if used is not None and requests:
        print(
            f"   server CPU: {1000 * used / requests:.2f} ms per request ({used / result['elapsed']:.0%} of a core); "
            f"load generator {result['loadgen_cpu'] / result['elapsed']:.0%} of a core"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=32, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--quick", action="store_true", help="0.5 s phases with 4 clients (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.threads, args.seconds = 4, 0.5
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in (("in process, in-memory SQLite", None), ("in process, SQLite file (WAL)", "inproc.db")):
            server = LocalCyclesServer(str(Path(tmp) / path) if path else None)
            key = seed(server)
            transport = server.transport()

            def make(transport: httpx.BaseTransport = transport, key: str = key) -> httpx.Client:
                return httpx.Client(transport=transport, base_url="http://local", headers={"X-Cycles-API-Key": key})

            report(name, run_phase(make, args.threads, args.seconds), args.threads)
            server.close()

        process, base_url, key = start_server_process(str(Path(tmp) / "http.db"))
        try:
            http_phase(base_url, key, process.pid, args.threads, args.seconds)
        finally:
            process.terminate()
            process.wait(10)
    print("reference Java + Redis server: ~456 cycles/s at 32 threads")


if __name__ == "__main__":
    main()
