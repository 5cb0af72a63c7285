"""Memory per live reservation: RSS at N live async guarded calls, each with its heartbeat scheduled.

    python bench/bench_memory.py [--reservations 10000] [--quick]

Two fresh processes against the embedded in-process server (in-memory database, ttl one hour so every
heartbeat is scheduled and sleeping):

- ``guarded``: N concurrent ``with_cycles`` async calls, each waiting on one event (reservation held, heartbeat
  task scheduled); RSS is read once all N are inside their function.
- ``raw``: N reservations created with the raw wire client and nothing else (the server's rows and the
  responses), to tell the server's share from the client's.

Prints RSS per live reservation for both and their difference: the client's cost per live reservation.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from runcycles import AsyncCyclesClient, CyclesConfig, with_cycles
from runcycles.local import LocalCyclesServer

TTL_MS = 3_600_000


def rss_bytes() -> int:
    """Resident set size of this process (Linux ``/proc``; peak RSS from ``resource`` elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _setup(journal_dir: str) -> tuple[LocalCyclesServer, AsyncCyclesClient]:
    server = LocalCyclesServer()
    server.create_tenant("bench")
    key = server.create_api_key("bench")
    server.create_budget("tenant:bench", "USD_MICROCENTS", 10**15)
    config = CyclesConfig(base_url="http://local", api_key=key, tenant="bench", journal_dir=journal_dir)
    return server, AsyncCyclesClient(config, transport=server.async_transport())


async def _measure(phase: str, n: int, journal_dir: str) -> dict[str, Any]:
    _server, client = _setup(journal_dir)  # the server must live as long as the client
    release = anyio.Event()
    inside = [0]
    all_inside = anyio.Event()

    @with_cycles(estimate=1, ttl_ms=TTL_MS, client=client)
    async def hold() -> None:
        inside[0] += 1
        if inside[0] == n:
            all_inside.set()
        await release.wait()

    async def warm() -> None:  # one call first, so that lazy imports and caches are not counted
        @with_cycles(estimate=1, ttl_ms=TTL_MS, client=client)
        async def once() -> None:
            return None

        await once()
        await client.create_reservation(_create_body(-1))

    await warm()
    gc.collect()
    before = rss_bytes()
    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        if phase == "guarded":
            for _ in range(n):
                tg.start_soon(hold)
            await all_inside.wait()
        else:
            for i in range(n):
                response = await client.create_reservation(_create_body(i))
                assert response.is_success, response.status
        elapsed = time.perf_counter() - t0
        gc.collect()
        after = rss_bytes()
        tg.cancel_scope.cancel()
    return {"phase": phase, "n": n, "before": before, "after": after, "seconds": elapsed}


def _create_body(i: int) -> dict[str, Any]:
    return {
        "idempotency_key": f"raw-{i}",
        "subject": {"tenant": "bench"},
        "action": {"kind": "bench", "name": "raw"},
        "estimate": {"unit": "USD_MICROCENTS", "amount": 1},
        "ttl_ms": TTL_MS,
    }


def child(phase: str, n: int) -> None:
    with tempfile.TemporaryDirectory() as journal_dir:
        result = anyio.run(_measure, phase, n, journal_dir)
    print(json.dumps(result), flush=True)
    os._exit(0)  # skip settling N reservations at exit: the figure is taken


def run_phase(phase: str, n: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", phase, "--reservations", str(n)],
        capture_output=True, text=True, timeout=900, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{phase} phase failed: {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reservations", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="200 reservations (a smoke run)")
    parser.add_argument("--child", choices=["guarded", "raw"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    n = 200 if args.quick else args.reservations
    if args.child:
        child(args.child, n)
        return
    guarded = run_phase("guarded", n)
    raw = run_phase("raw", n)
    per_guarded = (guarded["after"] - guarded["before"]) / n
    per_raw = (raw["after"] - raw["before"]) / n
    grown = (guarded["after"] - guarded["before"]) / 2**20
    print(
        f"{n:,} live async guarded reservations, heartbeats scheduled: RSS +{grown:.1f} MB "
        f"= {per_guarded / 1024:.1f} KB per reservation (reached in {guarded['seconds']:.1f} s)"
    )
    print(f"   of which the in-process server and raw wire responses: {per_raw / 1024:.1f} KB per reservation")
    print(f"   client side per live reservation: {(per_guarded - per_raw) / 1024:.1f} KB  (target <= 20 KB)")


if __name__ == "__main__":
    main()
