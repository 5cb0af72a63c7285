"""The lifecycle's own cost per call: a guarded call against the raw create + commit, in memory (prints figures).

    python bench/bench_overhead.py [--flavour sync|async] [--batches 300] [--batch 50]
                                   [--journal [--journal-sync full|process]]

Both run against canned answers from an in-memory httpx transport (`profile_call._Mock`: no socket, no server),
in batches of ``--batch`` calls, guarded and raw alternating; prints the minimum, 10th percentile and median of
the batch means (µs per call) and the difference at the 10th percentile, which is the steadiest figure on a
shared machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from profile_call import _commit_body, _create_body, _Mock


def _report(results: dict[str, list[float]]) -> None:
    for label, values in results.items():
        values.sort()
        print(f"{label}: min {values[0]:.1f} p10 {values[len(values) // 10]:.1f} p50 {values[len(values) // 2]:.1f}")
    tenth = len(results["guarded"]) // 10
    print(f"guarded - raw at p10: {results['guarded'][tenth] - results['raw'][tenth]:.1f} us per call")


def _sync(args: argparse.Namespace, config: Any) -> dict[str, list[float]]:
    import runcycles

    client = runcycles.CyclesClient(config, transport=_Mock().transport())

    @runcycles.with_cycles(estimate=1000, actual=700, action_kind="llm.completion", action_name="bench", client=client)
    def guarded() -> None:
        return None

    def raw() -> None:
        rid = client.create_reservation(_create_body()).body["reservation_id"]
        client.commit_reservation(rid, _commit_body())

    calls: dict[str, Callable[[], None]] = {"guarded": guarded, "raw": raw}
    for _ in range(500):
        guarded()
        raw()
    results: dict[str, list[float]] = {"guarded": [], "raw": []}
    for _ in range(args.batches):
        for label, call in calls.items():
            start = time.perf_counter()
            for _ in range(args.batch):
                call()
            results[label].append((time.perf_counter() - start) / args.batch * 1e6)
    client.close()
    return results


async def _async(args: argparse.Namespace, config: Any) -> dict[str, list[float]]:
    import runcycles

    client = runcycles.AsyncCyclesClient(config, transport=_Mock().async_transport())

    @runcycles.with_cycles(estimate=1000, actual=700, action_kind="llm.completion", action_name="bench", client=client)
    async def guarded() -> None:
        return None

    async def raw() -> None:
        rid = (await client.create_reservation(_create_body())).body["reservation_id"]
        await client.commit_reservation(rid, _commit_body())

    calls: dict[str, Callable[[], Awaitable[None]]] = {"guarded": guarded, "raw": raw}
    for _ in range(500):
        await guarded()
        await raw()
    results: dict[str, list[float]] = {"guarded": [], "raw": []}
    for _ in range(args.batches):
        for label, call in calls.items():
            start = time.perf_counter()
            for _ in range(args.batch):
                await call()
            results[label].append((time.perf_counter() - start) / args.batch * 1e6)
    await client.aclose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--flavour", choices=["sync", "async"], default="sync")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--journal", action="store_true", help="journal on (default sync mode) for the guarded call")
    parser.add_argument("--journal-sync", choices=["full", "process"], default="full", help="the journal's sync mode")
    args = parser.parse_args()

    import anyio

    import runcycles

    config = runcycles.CyclesConfig(
        base_url="http://mock", api_key="bench-key", tenant="bench", journal_enabled=args.journal,
        journal_sync=args.journal_sync,
        journal_dir=tempfile.mkdtemp(prefix="runcycles-overhead-"),
    )
    sync = args.flavour == "sync"
    results = _sync(args, config) if sync else anyio.run(_async, args, config, backend=args.backend)
    journal = f"on ({args.journal_sync})" if args.journal else "off"
    print(f"{args.flavour}, journal {journal}, {args.batches} batches of {args.batch} calls:")
    _report(results)


if __name__ == "__main__":
    main()
