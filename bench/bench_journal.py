"""What the settlement journal costs per guarded call, by sync mode (prints figures, asserts nothing).

    python bench/bench_journal.py [--calls 300] [--concurrent 100]

Against the in-process embedded server: one guarded call at a time, sync and async (asyncio), with the
journal off, ``journal_sync="process"`` and ``"full"`` (the default), with the fsyncs per call; then
``--concurrent`` async 0.2 s guarded calls at once, against the raw floor (the same number of concurrent
create → 0.2 s sleep → commit through the async wire client), with the threads started during the burst.
The journal lives in a temp directory on the disk that holds ``$TMPDIR``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import attrs

from runcycles import AsyncCyclesClient, CyclesClient, CyclesConfig, with_cycles
from runcycles.local import LocalCyclesServer

MODES: list[tuple[str, dict[str, Any]]] = [
    ("off", {"journal_enabled": False}),
    ("process", {"journal_sync": "process"}),
    ("full", {"journal_sync": "full"}),
]
if "journal_sync" not in attrs.fields_dict(CyclesConfig):  # an older runcycles: only its (full) default
    MODES = [("off", {"journal_enabled": False}), ("full", {})]


class FsyncCounter:
    """Counts os.fsync calls (any thread) while installed."""

    def __init__(self) -> None:
        self.count = 0
        self._real = os.fsync

    def __enter__(self) -> FsyncCounter:
        def counting(fd: int) -> None:
            self.count += 1
            self._real(fd)

        os.fsync = counting
        return self

    def __exit__(self, *exc: object) -> None:
        os.fsync = self._real


def setup() -> tuple[LocalCyclesServer, str]:
    server = LocalCyclesServer()
    server.create_tenant("bench")
    key = server.create_api_key("bench")
    server.create_budget("tenant:bench", "USD_MICROCENTS", allocated=10**15)
    return server, key


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--concurrent", type=int, default=100)
    args = parser.parse_args()
    calls, concurrent = args.calls, args.concurrent
    server, key = setup()
    journal_dir = tempfile.mkdtemp(prefix="runcycles-bench-journal-")

    def config(**options: Any) -> CyclesConfig:
        return CyclesConfig(base_url="http://local", api_key=key, tenant="bench", journal_dir=journal_dir, **options)

    print(f"journal under {journal_dir}")
    for label, options in MODES:
        with CyclesClient(config(**options), transport=server.transport()) as client:

            @with_cycles(estimate=10, actual=5, client=client)
            def guarded() -> int:
                return 1

            for _ in range(20):
                guarded()
            samples = []
            with FsyncCounter() as fsyncs:
                for _ in range(calls):
                    t0 = time.perf_counter()
                    guarded()
                    samples.append(time.perf_counter() - t0)
            print(f"sync  guarded call, journal {label:7}: {median_ms(samples):6.3f} ms/call, "
                  f"{fsyncs.count / calls:.2f} fsyncs/call")

    async def async_part() -> None:
        for label, options in MODES:
            async with AsyncCyclesClient(config(**options), transport=server.async_transport()) as client:

                @with_cycles(estimate=10, actual=5, client=client)
                async def guarded() -> int:
                    return 1

                for _ in range(20):
                    await guarded()
                samples = []
                with FsyncCounter() as fsyncs:
                    for _ in range(calls):
                        t0 = time.perf_counter()
                        await guarded()
                        samples.append(time.perf_counter() - t0)
                print(f"async guarded call, journal {label:7}: {median_ms(samples):6.3f} ms/call, "
                      f"{fsyncs.count / calls:.2f} fsyncs/call")

        async def burst(make: Callable[[], Awaitable[object]]) -> tuple[float, int, int]:
            """Run ``concurrent`` calls at once: wall time to the last one, peak extra threads, fsyncs."""
            before = threading.active_count()
            peak = before
            done = 0
            finished = 0.0

            async def one() -> None:
                nonlocal done, finished
                await make()
                done += 1
                if done == concurrent:
                    finished = time.perf_counter()

            with FsyncCounter() as fsyncs:
                t0 = time.perf_counter()
                async with anyio.create_task_group() as tg:
                    for _ in range(concurrent):
                        tg.start_soon(one)
                    while done < concurrent:
                        peak = max(peak, threading.active_count())
                        await anyio.sleep(0.005)
            return finished - t0, peak - before, fsyncs.count

        async with AsyncCyclesClient(config(journal_enabled=False), transport=server.async_transport()) as raw:
            n = [0]

            async def raw_call() -> None:
                n[0] += 1
                i = n[0]
                r = await raw.create_reservation({
                    "idempotency_key": f"rb-{i}-{time.time_ns()}",
                    "subject": {"tenant": "bench"},
                    "action": {"kind": "k", "name": "n"},
                    "estimate": {"unit": "USD_MICROCENTS", "amount": 10},
                })
                await anyio.sleep(0.2)
                await raw.commit_reservation(
                    r.body["reservation_id"],
                    {"idempotency_key": f"rc-{i}-{time.time_ns()}", "actual": {"unit": "USD_MICROCENTS", "amount": 5}},
                )

            await burst(raw_call)  # warm-up
            floor, threads, _ = await burst(raw_call)
            print(f"{concurrent} concurrent 0.2 s calls, raw floor     : {floor:6.3f} s wall, "
                  f"threads started {threads}")

        for label, options in MODES:
            async with AsyncCyclesClient(config(**options), transport=server.async_transport()) as client:

                @with_cycles(estimate=10, actual=5, client=client)
                async def slow() -> int:
                    await anyio.sleep(0.2)
                    return 1

                await burst(slow)  # warm-up (worker threads of earlier bursts stay idle in anyio's pool)
                elapsed, threads, fsyncs = await burst(slow)
                print(f"{concurrent} concurrent 0.2 s calls, journal {label:7}: {elapsed:6.3f} s wall "
                      f"({elapsed / floor:.2f}x floor), threads started {threads}, {fsyncs} fsyncs")

    for backend in ("asyncio", "trio"):
        print(f"-- async on {backend}")
        anyio.run(async_part, backend=backend)
    server.close()


if __name__ == "__main__":
    main()
