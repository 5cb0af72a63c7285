"""Per-call cost of one guarded call, and where it goes (prints figures, asserts nothing).

    python bench/profile_call.py [--server fake|local] [--flavour sync|async] [--journal [--journal-sync full|process]]
                                 [--calls 2000]
                                 [--raw] [--cprofile 25] [--backend asyncio|trio]

One `with_cycles` call (estimate 1000, actual 700) in a loop, against either the fake server of
`_rawhttp.py` (started in its own process, over loopback HTTP) or the embedded server in process
(`LocalCyclesServer().transport()`); ``--raw`` measures the raw floor instead (create + commit with the wire
client). Prints the median, mean, minimum and 10th percentile per call (µs) and CPU per call;
``--cprofile N`` prints the N functions with the most own time over the timed calls. To compare two source
trees, see `ab_trees.py`.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _fake_server() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen([sys.executable, str(HERE / "_rawhttp.py"), "serve"], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline().split()
    if len(line) != 2 or line[0] != "PORT":
        raise RuntimeError(f"the fake server did not start: {line!r}")
    return process, f"http://127.0.0.1:{line[1]}"


def _create_body() -> dict[str, Any]:
    return {
        "idempotency_key": str(uuid.uuid4()),
        "subject": {"tenant": "bench"},
        "action": {"kind": "llm.completion", "name": "bench"},
        "estimate": {"unit": "USD_MICROCENTS", "amount": 1000},
        "ttl_ms": 60000,
    }


def _commit_body() -> dict[str, Any]:
    return {"idempotency_key": str(uuid.uuid4()), "actual": {"unit": "USD_MICROCENTS", "amount": 700}}


class _Mock:
    """Canned valid answers to create and commit, in memory (the fake server's answers, without a socket)."""

    def __init__(self) -> None:
        self.ids = 0

    def _answer(self, request: Any) -> Any:
        import httpx

        self.ids += 1
        now = time.time_ns() // 1_000_000 + 1
        if request.url.path == "/v1/reservations":
            body = json.loads(request.content)
            return httpx.Response(200, json={
                "decision": "ALLOW", "reservation_id": f"r-{self.ids}", "affected_scopes": ["tenant:bench"],
                "scope_path": "tenant:bench", "reserved": body["estimate"], "expires_at_ms": now + 60000,
                "remaining_ttl_ms": 60000,
            })
        if request.url.path.endswith("/commit"):
            return httpx.Response(200, json={"status": "COMMITTED", "charged": json.loads(request.content)["actual"]})
        return httpx.Response(404, json={"error": "NOT_FOUND", "message": "unknown route", "request_id": "x"})

    def transport(self) -> Any:
        import httpx

        return httpx.MockTransport(self._answer)

    def async_transport(self) -> Any:
        import httpx

        async def answer(request: Any) -> Any:
            return self._answer(request)

        return httpx.MockTransport(answer)


def _report(samples: list[float], cpu: float, profile: cProfile.Profile | None, top: int, dump: str | None) -> None:
    print(json.dumps({
        "median_us": round(statistics.median(samples) * 1e6, 1),
        "mean_us": round(statistics.fmean(samples) * 1e6, 1),
        "min_us": round(min(samples) * 1e6, 1),
        "p10_us": round(sorted(samples)[len(samples) // 10] * 1e6, 1),
        "cpu_us": round(cpu / len(samples) * 1e6, 1),
    }), flush=True)
    if profile is not None:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(top)
        print(out.getvalue())
        if dump:
            profile.dump_stats(dump)


def _timed(calls: int, profile: cProfile.Profile | None) -> Callable[[Callable[[], Any]], tuple[list[float], float]]:
    def run(call: Callable[[], Any]) -> tuple[list[float], float]:
        samples = []
        cpu0 = time.process_time()
        if profile is not None:
            profile.enable()
        for _ in range(calls):
            t0 = time.perf_counter()
            call()
            samples.append(time.perf_counter() - t0)
        if profile is not None:
            profile.disable()
        return samples, time.process_time() - cpu0

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--server", choices=["fake", "local", "mock"], default="fake",
                        help="fake: _rawhttp.py over loopback; local: the embedded server in process; "
                        "mock: canned answers from an in-memory httpx transport (no server cost at all)")
    parser.add_argument("--flavour", choices=["sync", "async"], default="sync")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--journal", action="store_true")
    parser.add_argument("--journal-sync", choices=["full", "process"], default="full",
                        help="with --journal: the journal's durability (default full)")
    parser.add_argument("--raw", action="store_true", help="create + commit with the wire client (the floor)")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--cprofile", type=int, default=0, metavar="N", help="print the top N functions by own time")
    parser.add_argument("--dump", metavar="PATH", help="with --cprofile: also write the pstats file here")
    args = parser.parse_args()

    import anyio

    import runcycles

    fake: subprocess.Popen[str] | None = None
    local: Any = None
    mock: Any = None
    if args.server == "mock":
        mock = _Mock()
        base_url, key = "http://mock", "bench-key"
    elif args.server == "fake":
        fake, base_url = _fake_server()
        key = "bench-key"
    else:
        from runcycles.local import LocalCyclesServer

        local = LocalCyclesServer()
        local.create_tenant("bench")
        key = local.create_api_key("bench")
        local.create_budget("tenant:bench", "USD_MICROCENTS", allocated=10**15)
        base_url = "http://local"
    profile = cProfile.Profile() if args.cprofile else None
    journal_dir = tempfile.mkdtemp(prefix="runcycles-profile-")
    config = runcycles.CyclesConfig(
        base_url=base_url, api_key=key, tenant="bench", journal_enabled=args.journal, journal_dir=journal_dir,
        journal_sync=args.journal_sync,
    )
    try:
        if args.flavour == "sync":
            client = runcycles.CyclesClient(
                config, transport=local.transport() if local else mock.transport() if mock else None
            )
            if args.raw:

                def call() -> None:
                    rid = client.create_reservation(_create_body()).body["reservation_id"]
                    client.commit_reservation(rid, _commit_body())
            else:

                @runcycles.with_cycles(estimate=1000, actual=700, action_kind="llm.completion",
                                       action_name="bench", client=client)
                def call() -> None:
                    return None

            for _ in range(args.warmup):
                call()
            samples, cpu = _timed(args.calls, profile)(call)
            client.close()
        else:

            async def run_async() -> tuple[list[float], float]:
                client = runcycles.AsyncCyclesClient(
                    config, transport=local.async_transport() if local else mock.async_transport() if mock else None
                )
                if args.raw:

                    async def call() -> None:
                        rid = (await client.create_reservation(_create_body())).body["reservation_id"]
                        await client.commit_reservation(rid, _commit_body())
                else:

                    @runcycles.with_cycles(estimate=1000, actual=700, action_kind="llm.completion",
                                           action_name="bench", client=client)
                    async def call() -> None:
                        return None

                for _ in range(args.warmup):
                    await call()
                samples = []
                cpu0 = time.process_time()
                if profile is not None:
                    profile.enable()
                for _ in range(args.calls):
                    t0 = time.perf_counter()
                    await call()
                    samples.append(time.perf_counter() - t0)
                if profile is not None:
                    profile.disable()
                cpu = time.process_time() - cpu0
                await client.aclose()
                return samples, cpu

            samples, cpu = anyio.run(run_async, backend=args.backend)
        _report(samples, cpu, profile, args.cprofile, args.dump)
    finally:
        if fake is not None:
            fake.terminate()
            fake.wait(10)
        if local is not None:
            local.close()


if __name__ == "__main__":
    main()
