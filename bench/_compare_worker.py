"""One rep of one workload for `compare_official.py`, in a fresh process of either library's venv.

Both libraries are imported as ``runcycles``; ``--lib`` says which API to drive. Prints one JSON line:
``seconds`` (the timed phase's wall time), ``calls``, ``threads`` (threads started during the timed phase),
``cpu`` (process CPU seconds during it), ``errors``, ``hung``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

_started = [0]
_real_start = threading.Thread.start


def _counting_start(self: threading.Thread) -> None:
    _started[0] += 1
    _real_start(self)


threading.Thread.start = _counting_start  # type: ignore[method-assign]

import runcycles  # noqa: E402  (after the thread counter is in place)

USD = "USD_MICROCENTS"


def _config(base_url: str, journal: bool, journal_dir: str, journal_sync: str | None = None) -> Any:
    # The same keyword arguments in both libraries (journal_sync: ours only).
    more = {"journal_sync": journal_sync} if journal_sync else {}
    return runcycles.CyclesConfig(
        base_url=base_url, api_key="bench-key", tenant="bench", journal_enabled=journal, journal_dir=journal_dir,
        **more,
    )


def _guard(lib: str, client: Any) -> Callable[[Callable[..., Any]], Any]:
    if lib == "official":
        return runcycles.cycles(estimate=1000, actual=700, action_kind="llm.completion", action_name="bench",
                                client=client)
    return runcycles.with_cycles(estimate=1000, actual=700, action_kind="llm.completion", action_name="bench",
                                 client=client)


def _create_body() -> dict[str, Any]:
    return {
        "idempotency_key": str(uuid.uuid4()),
        "subject": {"tenant": "bench"},
        "action": {"kind": "llm.completion", "name": "bench"},
        "estimate": {"unit": USD, "amount": 1000},
        "ttl_ms": 60000,
    }


def _commit_body() -> dict[str, Any]:
    return {"idempotency_key": str(uuid.uuid4()), "actual": {"unit": USD, "amount": 700}}


def _rid(response: Any) -> str:
    rid = response.get_body_attribute("reservation_id")
    if not response.is_success or not isinstance(rid, str):
        raise RuntimeError(f"create failed: {response.status} {response.error_message}")
    return rid


class Timer:
    def __enter__(self) -> Timer:
        self.threads0 = _started[0]
        self.cpu0 = time.process_time()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
        self.cpu = time.process_time() - self.cpu0
        self.threads = _started[0] - self.threads0


def run_sync(args: argparse.Namespace, journal_dir: str) -> dict[str, Any]:
    client = runcycles.CyclesClient(_config(args.base_url, args.journal, journal_dir, args.journal_sync))
    if args.raw:

        def call() -> None:
            rid = _rid(client.create_reservation(_create_body()))
            response = client.commit_reservation(rid, _commit_body())
            if not response.is_success:
                raise RuntimeError(f"commit failed: {response.status}")
    else:

        @_guard(args.lib, client)
        def call() -> None:
            return None

    for _ in range(args.warmup):
        call()
    errors = 0
    samples = []
    with Timer() as timer:
        for _ in range(args.calls):
            t0 = time.perf_counter()
            try:
                call()
            except Exception:
                errors += 1
            samples.append(time.perf_counter() - t0)
    client.close()
    return {"seconds": timer.seconds, "cpu": timer.cpu, "threads": timer.threads, "errors": errors, "hung": 0,
            "median_call": statistics.median(samples)}


async def run_async(args: argparse.Namespace, journal_dir: str) -> dict[str, Any]:
    client = runcycles.AsyncCyclesClient(_config(args.base_url, args.journal, journal_dir, args.journal_sync))
    sleep_s = args.sleep_ms / 1000
    if args.raw:

        async def call() -> None:
            rid = _rid(await client.create_reservation(_create_body()))
            if sleep_s:
                await asyncio.sleep(sleep_s)
            response = await client.commit_reservation(rid, _commit_body())
            if not response.is_success:
                raise RuntimeError(f"commit failed: {response.status}")
    else:

        @_guard(args.lib, client)
        async def call() -> None:
            if sleep_s:
                await asyncio.sleep(sleep_s)

    for _ in range(args.warmup):
        await call()
    errors = hung = 0
    samples = []
    with Timer() as timer:
        if args.concurrency <= 1:
            for _ in range(args.calls):
                t0 = time.perf_counter()
                try:
                    await call()
                except Exception:
                    errors += 1
                samples.append(time.perf_counter() - t0)
        else:
            tasks = [asyncio.ensure_future(call()) for _ in range(args.concurrency)]
            done, pending = await asyncio.wait(tasks, timeout=args.cap)
            hung = len(pending)
            for task in pending:
                task.cancel()
            errors = sum(1 for task in done if task.exception() is not None)
    await client.aclose()
    calls = args.concurrency if args.concurrency > 1 else args.calls
    return {"seconds": timer.seconds, "cpu": timer.cpu, "threads": timer.threads, "errors": errors, "hung": hung,
            "calls": calls, "median_call": statistics.median(samples) if samples else None}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lib", choices=["ours", "official"], required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--flavour", choices=["sync", "async"], required=True)
    parser.add_argument("--journal", action="store_true")
    parser.add_argument("--journal-sync", choices=["full", "process"], default=None, help="ours only")
    parser.add_argument("--raw", action="store_true", help="create+commit with the raw wire client")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--sleep-ms", type=int, default=0)
    parser.add_argument("--cap", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as journal_dir:
        sync = args.flavour == "sync"
        result = run_sync(args, journal_dir) if sync else asyncio.run(run_async(args, journal_dir))
    result.setdefault("calls", args.calls)
    result["python"] = sys.executable
    result["pid"] = os.getpid()
    print(json.dumps(result), flush=True)
    # Exit without waiting for stuck background work of either library (a hung call must not hang the rep).
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
