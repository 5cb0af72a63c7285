"""Per-call cost of a guarded call against the in-process embedded server (prints figures, asserts nothing).

    python bench/bench_lifecycle.py [--calls 300]

Measures raw create+commit through the wire client (sync and async: the floors), `with_cycles` with the
journal off and on (sync and async), and 200 concurrent async guarded calls; also counts threads started on the
async path.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Callable

import anyio

from runcycles import AsyncCyclesClient, CyclesClient, CyclesConfig, with_cycles
from runcycles.local import LocalCyclesServer


def setup() -> tuple[LocalCyclesServer, str]:
    server = LocalCyclesServer()
    server.create_tenant("bench")
    key = server.create_api_key("bench")
    server.create_budget("tenant:bench", "USD_MICROCENTS", allocated=10**15)
    return server, key


def per_call(fn: Callable[[], object], calls: int) -> str:
    for _ in range(20):
        fn()
    samples = []
    cpu0 = time.process_time()
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return figures(samples, time.process_time() - cpu0)


def figures(samples: list[float], cpu_s: float) -> str:
    """Median wall time per call, and CPU per call (all threads of the process: steadier on a busy machine)."""
    return f"{statistics.median(samples) * 1000:6.3f} ms/call (cpu {cpu_s / len(samples) * 1000:6.3f} ms/call)"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    calls = parser.parse_args().calls
    server, key = setup()
    journal_dir = tempfile.mkdtemp(prefix="runcycles-bench-")

    def config(journal: bool) -> CyclesConfig:
        return CyclesConfig(
            base_url="http://local", api_key=key, tenant="bench", journal_enabled=journal, journal_dir=journal_dir
        )

    with CyclesClient(config(False), transport=server.transport()) as raw:
        n = [0]

        def raw_call() -> None:
            n[0] += 1
            r = raw.create_reservation(
                {
                    "idempotency_key": f"b-{n[0]}",
                    "subject": {"tenant": "bench"},
                    "action": {"kind": "k", "name": "n"},
                    "estimate": {"unit": "USD_MICROCENTS", "amount": 10},
                }
            )
            rid = r.body["reservation_id"]
            raw.commit_reservation(
                rid, {"idempotency_key": f"c-{n[0]}", "actual": {"unit": "USD_MICROCENTS", "amount": 5}}
            )

        print(f"raw create+commit (sync wire client):      {per_call(raw_call, calls)}")

    for journal in (False, True):
        with CyclesClient(config(journal), transport=server.transport()) as client:

            @with_cycles(estimate=10, actual=5, client=client)
            def guarded() -> int:
                return 1

            label = "on " if journal else "off"
            print(f"with_cycles sync, journal {label}:              {per_call(guarded, calls)}")

    async def async_part() -> None:
        async with AsyncCyclesClient(config(False), transport=server.async_transport()) as raw_async:
            m = [0]

            async def raw_async_call() -> None:
                m[0] += 1
                r = await raw_async.create_reservation(
                    {
                        "idempotency_key": f"ab-{m[0]}",
                        "subject": {"tenant": "bench"},
                        "action": {"kind": "k", "name": "n"},
                        "estimate": {"unit": "USD_MICROCENTS", "amount": 10},
                    }
                )
                await raw_async.commit_reservation(
                    r.body["reservation_id"],
                    {"idempotency_key": f"ac-{m[0]}", "actual": {"unit": "USD_MICROCENTS", "amount": 5}},
                )

            for _ in range(20):
                await raw_async_call()
            samples = []
            cpu0 = time.process_time()
            for _ in range(calls):
                t0 = time.perf_counter()
                await raw_async_call()
                samples.append(time.perf_counter() - t0)
            print(f"raw create+commit (async wire client):     {figures(samples, time.process_time() - cpu0)}")

        for journal in (False, True):
            async with AsyncCyclesClient(config(journal), transport=server.async_transport()) as client:

                @with_cycles(estimate=10, actual=5, client=client)
                async def guarded() -> int:
                    return 1

                for _ in range(20):
                    await guarded()
                samples = []
                cpu0 = time.process_time()
                for _ in range(calls):
                    t0 = time.perf_counter()
                    await guarded()
                    samples.append(time.perf_counter() - t0)
                label = "on " if journal else "off"
                print(f"with_cycles async, journal {label}:             {figures(samples, time.process_time() - cpu0)}")

        async with AsyncCyclesClient(config(False), transport=server.async_transport()) as client:

            @with_cycles(estimate=10, actual=5, client=client)
            async def slow() -> int:
                await anyio.sleep(0.2)
                return 1

            before = threading.active_count()
            t0 = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for _ in range(200):
                    tg.start_soon(slow)
            elapsed = time.perf_counter() - t0
            print(f"200 concurrent 0.2 s async calls:           {elapsed:6.3f} s wall, "
                  f"threads started: {threading.active_count() - before}")

    for backend in ("asyncio", "trio"):
        print(f"-- async on {backend}")
        anyio.run(async_part, backend=backend)
    server.close()


if __name__ == "__main__":
    main()
