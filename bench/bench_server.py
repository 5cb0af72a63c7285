"""Throughput of the embedded Cycles server: reserve -> commit cycles per second with concurrent clients.

Runs bounded phases (``--seconds`` each): in process, the server core alone (``LocalCyclesServer.handle`` on
an in-memory database, one thread: no HTTP client at all); then on an in-memory database and on a SQLite
file (WAL), each of ``--threads`` client threads owning an ``httpx.Client`` over the in-process transport;
then over loopback HTTP: ``python -m runcycles serve`` in a child process on a file database, driven by a raw
asyncio HTTP/1.1 keep-alive load generator (``_rawhttp.py load``, ``--threads`` connections) in another
process, so the load generator is light and does not share the server's interpreter lock. It prints CPU per
request (in process: this process; over HTTP: the server's, Linux ``/proc``) and the load generator's CPU
use, to show which side is the bottleneck.

``--core-only`` runs just the first phase (the server core). ``--baseline DIR`` compares with another
checkout (its own ``DIR/.venv``), alternating baseline and this checkout ``--reps`` times on the same
machine, and prints medians and ratios: on a shared machine only such side-by-side ratios mean much. It
compares the HTTP phase, or with ``--core-only`` the core phase, or with ``--in-process`` the three in-process
phases (each run in a fresh child process of that checkout's interpreter, this file driving its code).

    python bench/bench_server.py [--threads 32] [--seconds 3] [--quick] [--core-only] [--http builtin|uvicorn]
    python bench/bench_server.py --baseline /work/main --reps 3 [--core-only | --in-process]
                                 [--http builtin|uvicorn] [--baseline-http builtin|uvicorn]

``--http`` picks this checkout's HTTP front (``runcycles serve --http``), ``--baseline-http`` the baseline's
(``--baseline . --baseline-http uvicorn`` compares the two fronts of this checkout). The server's CPU is also
split into its event-loop thread (the HTTP front) and its worker threads (the core).

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


def core_phase(seconds: float) -> dict[str, Any]:
    """reserve -> commit straight through ``LocalCyclesServer.handle`` (in memory, one thread, no client).

    The request bodies are formatted from templates and the reservation id is cut out of the response, so
    that the driver's own JSON work (about a tenth of the time of a cycle when done with ``json``) is not
    counted as the server's.
    """
    server = LocalCyclesServer()
    headers = {"X-Cycles-API-Key": seed(server), "Content-Type": "application/json"}
    reserve = (
        b'{"idempotency_key":"core-%d-r","subject":{"tenant":"bench","agent":"a0"},'
        b'"action":{"kind":"llm.completion","name":"bench"},"estimate":{"unit":"' + USD.encode() + b'","amount":1000}}'
    )
    commit = b'{"idempotency_key":"core-%d-c","actual":{"unit":"' + USD.encode() + b'","amount":900}}'
    marker = b'"reservation_id":"'
    latencies: list[float] = []
    n = 0
    began, cpu = time.perf_counter(), time.process_time()
    stop_at = began + seconds
    while time.perf_counter() < stop_at:
        started = time.perf_counter()
        status, _, body = server.handle("POST", "/v1/reservations", "", headers, reserve % n)
        if status != 200:
            raise RuntimeError(body.decode())
        at = body.index(marker) + len(marker)
        path = "/v1/reservations/" + body[at : body.index(b'"', at)].decode() + "/commit"
        status, _, body = server.handle("POST", path, "", headers, commit % n)
        if status != 200:
            raise RuntimeError(body.decode())
        latencies.append(time.perf_counter() - started)
        n += 1
    elapsed = time.perf_counter() - began
    used = time.process_time() - cpu
    server.close()
    latencies.sort()
    return {
        "cycles": n,
        "elapsed": elapsed,
        "cycles_per_s": n / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
        "errors": [],
        "cpu_ms_per_request": 1000 * used / (2 * n),
    }


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
    began, cpu = time.perf_counter(), time.process_time()
    start.wait()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - began
    used = time.process_time() - cpu
    flat = sorted(x for per in latencies for x in per)
    return {
        "cycles": sum(counts),
        "elapsed": elapsed,
        "cycles_per_s": sum(counts) / elapsed,
        "p50_ms": 1000 * statistics.median(flat) if flat else float("nan"),
        "p99_ms": 1000 * flat[int(len(flat) * 0.99)] if flat else float("nan"),
        "errors": errors[:3],
        "cpu_ms_per_request": 1000 * used / (2 * sum(counts)) if sum(counts) else float("nan"),
    }


def start_server_process(
    db: str, python: str = sys.executable, cwd: str | None = None, extra: tuple[str, ...] = ()
) -> tuple[subprocess.Popen[str], str, str]:
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
        *extra,
    ]
    command[0] = python
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=cwd)
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


def process_cpu_seconds(pid: int, task: int | None = None) -> float | None:
    """User + system CPU seconds of a process, or of its thread ``task`` (Linux ``/proc``; ``None`` elsewhere)."""
    try:
        path = f"/proc/{pid}/stat" if task is None else f"/proc/{pid}/task/{task}/stat"
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report(name: str, result: dict[str, Any], threads: int) -> None:
    print(
        f"{name:<34} {result['cycles_per_s']:9.0f} cycles/s  ({result['cycles']} cycles in {result['elapsed']:.1f} s, "
        f"{threads} threads, cycle p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms)"
    )
    if "cpu_ms_per_request" in result:
        print(f"   CPU (client and server, this process): {result['cpu_ms_per_request']:.3f} ms per request")
    if result["errors"]:
        print("   errors:", result["errors"])


def http_phase(base_url: str, key: str, pid: int, clients: int, seconds: float, name: str = "") -> dict[str, Any]:
    """The raw load generator against the server process; prints and returns cycles/s and CPU per request."""
    server_cpu = process_cpu_seconds(pid)
    loop_cpu = process_cpu_seconds(pid, pid)  # the main thread: the event loop (HTTP, parsing, answering)
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("_rawhttp.py")), "load", "--base-url", base_url,
         "--key", key, "--clients", str(clients), "--seconds", str(seconds)],
        capture_output=True, text=True, timeout=seconds + 120, check=True,
    )
    used = None if server_cpu is None else (process_cpu_seconds(pid) or 0.0) - server_cpu
    loop_used = None if loop_cpu is None else (process_cpu_seconds(pid, pid) or 0.0) - loop_cpu
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["cycles_per_s"] = result["cycles"] / result["elapsed"]
    for field in ("p50_ms", "p99_ms"):
        result[field] = float("nan") if result[field] is None else result[field]
    report(name or "loopback HTTP (raw asyncio load gen)", result, clients)
    requests = 2 * result["cycles"]
    result["server_cpu_ms"] = float("nan")
    if used is not None and requests:
        result["server_cpu_ms"] = 1000 * used / requests
        print(
            f"   server CPU: {1000 * used / requests:.2f} ms per request ({used / result['elapsed']:.0%} of a core); "
            f"load generator {result['loadgen_cpu'] / result['elapsed']:.0%} of a core"
        )
        if loop_used is not None:
            result["loop_cpu_ms"] = 1000 * loop_used / requests
            print(
                f"   of which the event-loop thread {1000 * loop_used / requests:.2f} ms, worker threads "
                f"{1000 * (used - loop_used) / requests:.2f} ms per request"
            )
    return result


def serve_and_load(tmp: str, args: argparse.Namespace, label: str, checkout: str | None) -> dict[str, Any]:
    """One HTTP phase against ``runcycles serve`` from this checkout, or from ``checkout`` (its ``.venv``)."""
    python = sys.executable if checkout is None else str(Path(checkout) / ".venv" / "bin" / "python")
    db = str(Path(tmp) / f"http-{label}-{time.monotonic_ns()}.db")
    http = args.http if checkout is None else args.baseline_http
    extra = ("--http", http) if http else ()
    process, base_url, key = start_server_process(db, python, checkout, extra)
    try:
        name = f"loopback HTTP, {label}" if args.baseline else ""  # "" keeps the usual label
        return http_phase(base_url, key, process.pid, args.threads, args.seconds, name)
    finally:
        process.terminate()
        process.wait(10)


IN_PROCESS = {
    "core": "in process, server core only",
    "memory": "in process, in-memory SQLite",
    "file": "in process, SQLite file (WAL)",
}


def in_process_phase(phase: str, tmp: str, threads: int, seconds: float) -> dict[str, Any]:
    """One in-process phase (``core``, ``memory`` or ``file``) on a fresh server; returns its figures."""
    if phase == "core":
        return core_phase(seconds)
    server = LocalCyclesServer(str(Path(tmp) / f"inproc-{time.monotonic_ns()}.db") if phase == "file" else None)
    key = seed(server)
    transport = server.transport()

    def make() -> httpx.Client:
        return httpx.Client(transport=transport, base_url="http://local", headers={"X-Cycles-API-Key": key})

    try:
        return run_phase(make, threads, seconds)
    finally:
        server.close()


def phase_in_child(phase: str, args: argparse.Namespace, checkout: str | None) -> dict[str, Any]:
    """Run one in-process phase in a child interpreter: this checkout's, or ``checkout``'s ``.venv`` (its code)."""
    python = sys.executable if checkout is None else str(Path(checkout) / ".venv" / "bin" / "python")
    done = subprocess.run(
        [python, str(Path(__file__).resolve()), "--phase-json", phase, "--threads", str(args.threads),
         "--seconds", str(args.seconds)],
        capture_output=True, text=True, timeout=args.seconds + 120, check=True, cwd=checkout,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def compare_in_process(args: argparse.Namespace, phases: list[str]) -> None:
    """Alternate in-process phases between ``--baseline`` and this checkout; print medians and ratios."""
    print(f"{'in process, ' + str(args.reps) + ' alternating runs':<34} {'baseline':>9} {'this':>9}  cycles/s"
          "  ratio (pairs)                 CPU ms/request base -> this")
    for phase in phases:
        runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "this": []}
        for _ in range(args.reps):
            runs["baseline"].append(phase_in_child(phase, args, args.baseline))
            runs["this"].append(phase_in_child(phase, args, None))
        rate = {k: statistics.median(r["cycles_per_s"] for r in v) for k, v in runs.items()}
        cpu = {k: statistics.median(r["cpu_ms_per_request"] for r in v) for k, v in runs.items()}
        pairs = [t["cycles_per_s"] / b["cycles_per_s"] for b, t in zip(runs["baseline"], runs["this"], strict=True)]
        threads = 1 if phase == "core" else args.threads
        print(
            f"{IN_PROCESS[phase] + f' ({threads} t)':<34} {rate['baseline']:9.0f} {rate['this']:9.0f}  "
            f"x{rate['this'] / rate['baseline']:.2f} ({', '.join(f'{p:.2f}' for p in pairs)})  "
            f"{cpu['baseline']:.3f} -> {cpu['this']:.3f}"
        )


def compare(tmp: str, args: argparse.Namespace) -> None:
    """Alternate the HTTP phase between ``--baseline`` and this checkout; print medians and ratios."""
    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "this": []}
    for _ in range(args.reps):
        for label, checkout in (("baseline", args.baseline), ("this", None)):
            runs[label].append(serve_and_load(tmp, args, label, checkout))
    medians = {
        label: (
            statistics.median(r["cycles_per_s"] for r in results),
            statistics.median(r["server_cpu_ms"] for r in results),
            statistics.median(r.get("loop_cpu_ms", float("nan")) for r in results),
        )
        for label, results in runs.items()
    }
    pairs = [t["cycles_per_s"] / b["cycles_per_s"] for b, t in zip(runs["baseline"], runs["this"], strict=True)]
    print(
        f"\n{'HTTP, ' + str(args.reps) + ' alternating runs':<34} {'cycles/s':>9}  server CPU ms/request "
        "(event-loop thread)"
    )
    for label, (rate, cpu, loop) in medians.items():
        print(f"{label:<34} {rate:9.0f}  {cpu:.3f} ({loop:.3f})")
    print(
        f"this / baseline: cycles/s x{medians['this'][0] / medians['baseline'][0]:.2f} (pairs: "
        f"{', '.join(f'{p:.2f}' for p in pairs)}); CPU per request x{medians['this'][1] / medians['baseline'][1]:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=32, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--quick", action="store_true", help="0.5 s phases with 4 clients (a smoke run)")
    parser.add_argument("--baseline", help="another checkout (with its .venv) to compare the HTTP phase with")
    parser.add_argument("--reps", type=int, default=3, help="alternating runs per side with --baseline")
    parser.add_argument(
        "--http", choices=("builtin", "uvicorn"), help="this checkout's `serve --http` (default: its default)"
    )
    parser.add_argument(
        "--baseline-http",
        choices=("builtin", "uvicorn"),
        help="the baseline's `serve --http` (a checkout that has the option; e.g. this one, to compare fronts)",
    )
    parser.add_argument("--core-only", action="store_true", help="only the server-core phase")
    parser.add_argument("--in-process", action="store_true", help="with --baseline: compare the in-process phases")
    parser.add_argument("--phase-json", choices=sorted(IN_PROCESS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.threads, args.seconds = 4, 0.5
    with tempfile.TemporaryDirectory() as tmp:
        if args.phase_json:
            print(json.dumps(in_process_phase(args.phase_json, tmp, args.threads, args.seconds)))
            return
        if args.baseline:
            if args.core_only or args.in_process:
                compare_in_process(args, ["core"] if args.core_only else list(IN_PROCESS))
            else:
                compare(tmp, args)
            return
        report(IN_PROCESS["core"], core_phase(args.seconds), 1)
        if args.core_only:
            return
        for phase in ("memory", "file"):
            report(IN_PROCESS[phase], in_process_phase(phase, tmp, args.threads, args.seconds), args.threads)

        serve_and_load(tmp, args, "this checkout", None)
    print("reference Java + Redis server: ~456 cycles/s at 32 threads")


if __name__ == "__main__":
    main()
