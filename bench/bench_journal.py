"""What the settlement journal costs per guarded call, by sync mode (prints figures, asserts nothing).

    python bench/bench_journal.py [--calls 300] [--concurrent 100] [--reps 3] [--writes 200] [--journal-only]

Against the in-process embedded server: one guarded call at a time, sync and async (asyncio), with the
journal off, ``journal_sync="process"``, ``"full"`` (the default: a fresh record goes into a pre-synced spare
file, one barrier) and ``full-2b`` (``full`` with no spare ready: the two-barrier path, which is what ``full``
did before spare files), with the fsyncs per call on the critical path (``bg``: those of the background thread
that prepares spares); then ``--concurrent`` async 0.2 s guarded calls at once, against the raw floor (the same
number of concurrent create → 0.2 s sleep → commit through the async wire client), with the threads started
during the burst. Last, the journal alone: µs per fresh record written (then deleted), one writer and
``--concurrent`` writer threads sharing the group commit. Modes alternate within each of ``--reps`` rounds;
figures are medians over rounds. The journal lives in a temp directory on the disk that holds ``$TMPDIR``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import attrs

from runcycles import AsyncCyclesClient, CyclesClient, CyclesConfig, with_cycles
from runcycles.local import LocalCyclesServer

MODES: list[tuple[str, dict[str, Any]]] = [
    ("off", {"journal_enabled": False}),
    ("process", {"journal_sync": "process"}),
    ("full", {"journal_sync": "full"}),
    ("full-2b", {"journal_sync": "full"}),
]
if "journal_sync" not in attrs.fields_dict(CyclesConfig):  # an older runcycles: only its (full) default
    MODES = [("off", {"journal_enabled": False}), ("full", {})]

try:
    from runcycles._journal.spares import SparePool
except ImportError:  # before spare files
    SparePool = None  # type: ignore[assignment,misc]
    MODES = [m for m in MODES if m[0] != "full-2b"]

_SPARES_THREAD = "runcycles-journal-spares"  # before the refill moved to the journal's I/O threads


def _refilling() -> bool:
    try:
        from runcycles._journal.spares import refilling
    except ImportError:
        return threading.current_thread().name == _SPARES_THREAD
    return refilling()


@contextlib.contextmanager
def spares(label: str) -> Iterator[None]:
    """In ``full-2b`` mode no spare is ever handed out (fresh records take the two-barrier path)."""
    if label != "full-2b" or SparePool is None:
        yield
        return
    real = SparePool.take
    SparePool.take = lambda self: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        SparePool.take = real  # type: ignore[method-assign]


class FsyncCounter:
    """Counts os.fsync/os.fdatasync calls while installed: ``count`` on the critical path (any thread but the
    spare-preparing one), ``background`` on that thread."""

    def __init__(self) -> None:
        self.count = 0
        self.background = 0
        self._real = os.fsync
        self._real_data = getattr(os, "fdatasync", None)

    def __enter__(self) -> FsyncCounter:
        def wrap(real: Callable[[int], None]) -> Callable[[int], None]:
            def counting(fd: int) -> None:
                if _refilling():
                    self.background += 1
                else:
                    self.count += 1
                real(fd)

            return counting

        os.fsync = wrap(self._real)
        if self._real_data is not None:
            os.fdatasync = wrap(self._real_data)
        return self

    def __exit__(self, *exc: object) -> None:
        os.fsync = self._real
        if self._real_data is not None:
            os.fdatasync = self._real_data


def setup() -> tuple[LocalCyclesServer, str]:
    server = LocalCyclesServer()
    server.create_tenant("bench")
    key = server.create_api_key("bench")
    server.create_budget("tenant:bench", "USD_MICROCENTS", allocated=10**15)
    return server, key


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


@attrs.define
class Figures:
    """Per-round medians of one case and mode, and the fsyncs counted."""

    ms: list[float] = attrs.field(factory=list)
    fsyncs: int = 0
    background: int = 0
    n: int = 0

    def add(self, samples: list[float], counter: FsyncCounter) -> None:
        self.ms.append(median_ms(samples))
        self.fsyncs += counter.count
        self.background += counter.background
        self.n += len(samples)

    def line(self, what: str, label: str, unit: str = "ms/call", scale: float = 1.0) -> str:
        return (
            f"{what} {label:7}: {statistics.median(self.ms) * scale:8.3f} {unit}, "
            f"{self.fsyncs / max(1, self.n):.2f} fsyncs/call on the critical path, "
            f"{self.background / max(1, self.n):.2f} in the background "
            f"(rounds {', '.join(f'{m * scale:.3f}' for m in self.ms)})"
        )


def journal_writes(journal_dir: str, writes: int, concurrent: int) -> None:
    """µs per fresh record written (and deleted), one writer and ``concurrent`` writer threads."""
    from runcycles._journal import GROUP, Journal, JournalRecord

    def record(i: int) -> JournalRecord:
        key = f"k-{i}-{time.time_ns()}"
        return JournalRecord(reservation_id=f"r-{i}-{time.time_ns()}", idempotency_key=key,
                             commit_body={"idempotency_key": key, "actual": {"unit": "USD_MICROCENTS", "amount": 5}},
                             base_url="http://local")

    labels = [label for label, _ in MODES if label != "off"]
    single = {label: Figures() for label in labels}
    group = {label: Figures() for label in labels}
    for _ in range(REPS):
        for label in labels:
            sync = "process" if label == "process" else "full"
            journal = Journal(journal_dir, base_url="http://local", tenant="bench", api_key="k", sync=sync)  # type: ignore[arg-type]
            if SparePool is not None:
                from runcycles._journal.spares import pool_for

                pool_for(journal.directory).refill(concurrent)  # the steady state of a busy process
            with spares(label):
                samples = []
                with FsyncCounter() as fsyncs:
                    for i in range(writes):
                        rec = record(i)
                        t0 = time.perf_counter()
                        journal.write(rec, owned=True)
                        samples.append(time.perf_counter() - t0)
                        journal.delete(rec.reservation_id)
                single[label].add(samples, fsyncs)
                samples = []
                with FsyncCounter() as fsyncs:
                    for _ in range(max(1, writes // concurrent)):
                        recs = [record(i) for i in range(concurrent)]
                        go = threading.Barrier(concurrent + 1)
                        times: list[float] = []

                        def writer(rec: JournalRecord, go: threading.Barrier, job: Any, times: list[float]) -> None:
                            go.wait()
                            t0 = time.perf_counter()
                            GROUP.run_one(job)
                            times.append(time.perf_counter() - t0)

                        threads = [
                            threading.Thread(target=writer, args=(r, go, journal.write_job(r, owned=True), times))
                            for r in recs
                        ]
                        for t in threads:
                            t.start()
                        go.wait()
                        for t in threads:
                            t.join()
                        samples.extend(times)
                        for rec in recs:
                            journal.delete(rec.reservation_id)
                group[label].add(samples, fsyncs)
    for label in labels:
        print(single[label].line("journal write, 1 writer       ", label, "us/write", 1000))
    for label in labels:
        print(group[label].line(f"journal write, {concurrent} writers    ", label, "us/write", 1000))


REPS = 3


def main() -> None:
    global REPS
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--concurrent", type=int, default=100)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--journal-only", action="store_true", help="only the journal-alone part")
    args = parser.parse_args()
    calls, concurrent, REPS = args.calls, args.concurrent, args.reps
    journal_dir = tempfile.mkdtemp(prefix="runcycles-bench-journal-")
    if args.journal_only:
        print(f"journal under {journal_dir}; modes alternate in each of {REPS} rounds, medians over rounds")
        journal_writes(journal_dir, args.writes, concurrent)
        return
    server, key = setup()

    def config(**options: Any) -> CyclesConfig:
        return CyclesConfig(base_url="http://local", api_key=key, tenant="bench", journal_dir=journal_dir, **options)

    print(f"journal under {journal_dir}; modes alternate in each of {REPS} rounds, medians over rounds")
    figures = {label: Figures() for label, _ in MODES}
    for _ in range(REPS):
        for label, options in MODES:
            with spares(label), CyclesClient(config(**options), transport=server.transport()) as client:

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
                figures[label].add(samples, fsyncs)
    for label, _ in MODES:
        print(figures[label].line("sync  guarded call, journal", label))

    async def async_part() -> None:
        figures = {label: Figures() for label, _ in MODES}
        for _ in range(REPS):
            for label, options in MODES:
                with spares(label):
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
                        figures[label].add(samples, fsyncs)
        for label, _ in MODES:
            print(figures[label].line("async guarded call, journal", label))

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
            with spares(label):
                async with AsyncCyclesClient(config(**options), transport=server.async_transport()) as client:

                    @with_cycles(estimate=10, actual=5, client=client)
                    async def slow() -> int:
                        await anyio.sleep(0.2)
                        return 1

                    await burst(slow)  # warm-up (worker threads of earlier bursts stay idle in anyio's pool)
                    elapsed, threads, fsyncs = await burst(slow)
                    print(f"{concurrent} concurrent 0.2 s calls, journal {label:7}: {elapsed:6.3f} s wall "
                          f"({elapsed / floor:.2f}x floor), threads started {threads}, "
                          f"{fsyncs / concurrent:.2f} fsyncs/call on the critical path")

    for backend in ("asyncio", "trio"):
        print(f"-- async on {backend}")
        anyio.run(async_part, backend=backend)
    print("-- the journal alone")
    journal_writes(journal_dir, args.writes, concurrent)
    server.close()


if __name__ == "__main__":
    main()
