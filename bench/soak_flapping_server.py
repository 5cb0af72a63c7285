"""Soak: the server flaps while guarded calls continue; afterwards every call's spend is on the ledger once.

    python bench/soak_flapping_server.py [--seconds 75] [--threads 6] [--tasks 4] [--seed N]

An embedded server (file-backed SQLite) sits behind a flapping transport that alternates "up" periods with
periods where most requests meet one fault: connection refused (down), 503 before the server (a proxy), 500
after the server applied the request, 429 with ``Retry-After: 1``, or the response lost after the server
applied it. Sync threads (one `CyclesClient`) and async tasks (one `AsyncCyclesClient`) run ``with_cycles``
calls with random actuals throughout; reservations are short (TTL 2 s, no grace), so some settlements outlive
them and must fall back to events. At the end the server stays up, both clients flush and close, and a
fresh client replays whatever the journal retained.

The check reads the ledger file directly: for every call whose function returned, the spend recorded
against its reservation (commit, or event carrying ``recovered_reservation_id``) must equal its actual —
exactly once. Spend for a reservation whose function never returned is a phantom. Prints its figures;
exits 1 on any lost, double or phantom spend, or if the journal is not empty at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sqlite3
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import httpx

from runcycles import AsyncCyclesClient, CyclesClient, CyclesConfig, CyclesError, get_cycles_context, with_cycles
from runcycles.local import LocalCyclesServer

TENANT = "soak"
USD = "USD_MICROCENTS"
ESTIMATE = 1000
FAULTS = ("down", "proxy_503", "500_applied", "429", "lost")


def operation(method: str, path: str) -> str:
    """A request's protocol operation (create, commit, release, extend, event, get, other)."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["v1", "reservations"]:
        if len(parts) == 2:
            return "create" if method == "POST" else "list"
        if len(parts) == 3:
            return "get"
        return parts[3]
    if parts[:2] == ["v1", "events"]:
        return "event"
    return "other"


class Flapper:
    """The shared schedule: up periods and fault periods, and what each request meets."""

    def __init__(self, rng: random.Random, *, fault_share: float = 0.85) -> None:
        self._rng = rng
        self._lock = threading.Lock()
        self._fault_share = fault_share
        self._phase = "up"
        self._until: float = time.monotonic() + 0.5
        self._stopped = False
        self.requests: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self.phase_time: dict[str, float] = {}

    def stop(self) -> None:
        """Stay up from now on."""
        with self._lock:
            self._stopped = True

    def decide(self, op: str) -> str:
        """``pass`` or the fault for this request."""
        now = time.monotonic()
        with self._lock:
            self.requests[op] += 1
            if self._stopped:
                return "pass"
            while now >= self._until:
                if self._phase == "up":
                    # Mostly short blips; now and then an outage longer than a reservation's TTL, so that
                    # settlements exhaust their retries (kept in the journal) or outlive the reservation.
                    long = self._rng.random() < 0.12
                    self._phase = self._rng.choice(FAULTS)
                    length = self._rng.uniform(2.0, 4.0) if long else self._rng.uniform(0.1, 0.7)
                else:
                    self._phase, length = "up", self._rng.uniform(0.3, 1.5)
                self.phase_time[self._phase] = self.phase_time.get(self._phase, 0.0) + length
                self._until += length
            if self._phase == "up" or op == "other" or self._rng.random() > self._fault_share:
                return "pass"
            self.injected[f"{self._phase}:{op}"] += 1
            return self._phase


def _error(status: int, code: str) -> httpx.Response:
    return httpx.Response(status, json={"error": code, "message": "soak fault", "request_id": "soak"})


def _before(fault: str, request: httpx.Request) -> httpx.Response | None:
    if fault == "down":
        raise httpx.ConnectError("soak: connection refused", request=request)
    if fault == "proxy_503":
        return httpx.Response(503, text="<html>503 Service Unavailable</html>")
    if fault == "429":
        response = _error(429, "LIMIT_EXCEEDED")
        response.headers["Retry-After"] = "1"
        return response
    return None


def _after(fault: str, request: httpx.Request, response: httpx.Response) -> httpx.Response:
    if fault == "500_applied":
        return _error(500, "INTERNAL_ERROR")
    if fault == "lost":
        raise httpx.ReadTimeout("soak: response lost", request=request)
    return response


class FlappingTransport(httpx.BaseTransport):
    """The sync client's view of the flapping server."""

    def __init__(self, inner: httpx.BaseTransport, flapper: Flapper) -> None:
        self.inner, self.flapper = inner, flapper

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Apply the current phase's fault (or not) around the server."""
        fault = self.flapper.decide(operation(request.method, request.url.path))
        early = _before(fault, request)
        if early is not None:
            return early
        response = self.inner.handle_request(request)
        response.read()
        return _after(fault, request, response)


class AsyncFlappingTransport(httpx.AsyncBaseTransport):
    """The async client's view of the flapping server."""

    def __init__(self, inner: httpx.AsyncBaseTransport, flapper: Flapper) -> None:
        self.inner, self.flapper = inner, flapper

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Apply the current phase's fault (or not) around the server."""
        fault = self.flapper.decide(operation(request.method, request.url.path))
        early = _before(fault, request)
        if early is not None:
            return early
        response = await self.inner.handle_async_request(request)
        await response.aread()
        return _after(fault, request, response)


class Tally:
    """What the callers know: the actual of every call whose function returned, and the failures."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.known: dict[str, int] = {}
        self.ran: set[str] = set()
        self.failed: Counter[str] = Counter()
        self.latency_ms: list[float] = []

    def returned(self, rid: str, amount: int, started: float) -> None:
        with self.lock:
            assert rid not in self.known, f"reservation {rid} returned twice"
            self.known[rid] = amount
            self.latency_ms.append((time.perf_counter() - started) * 1000)

    def failure(self, exc: BaseException) -> None:
        with self.lock:
            self.failed[type(exc).__name__] += 1


def _config(base: dict[str, Any]) -> CyclesConfig:
    return CyclesConfig(**base)


def run_sync_worker(client: CyclesClient, tally: Tally, deadline: float, seed: int) -> None:
    """Guarded calls one after the other until ``deadline``."""
    rng = random.Random(seed)

    @with_cycles(estimate=ESTIMATE, actual=lambda r: r[1], client=client, ttl_ms=2000, grace_period_ms=0)
    def work(amount: int, pause: float) -> tuple[str, int]:
        ctx = get_cycles_context()
        assert ctx is not None
        with tally.lock:
            tally.ran.add(ctx.reservation_id)
        time.sleep(pause)
        return ctx.reservation_id, amount

    while time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            rid, amount = work(rng.randint(1, 999), rng.uniform(0, 0.01))
        except CyclesError as exc:
            tally.failure(exc)
            continue
        tally.returned(rid, amount, started)


async def run_async_workers(client: AsyncCyclesClient, tally: Tally, deadline: float, tasks: int, seed: int) -> None:
    """``tasks`` concurrent loops of async guarded calls until ``deadline``."""

    @with_cycles(estimate=ESTIMATE, actual=lambda r: r[1], client=client, ttl_ms=2000, grace_period_ms=0)
    async def work(amount: int, pause: float) -> tuple[str, int]:
        ctx = get_cycles_context()
        assert ctx is not None
        with tally.lock:
            tally.ran.add(ctx.reservation_id)
        await anyio.sleep(pause)
        return ctx.reservation_id, amount

    async def loop(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                rid, amount = await work(rng.randint(1, 999), rng.uniform(0, 0.01))
            except CyclesError as exc:
                tally.failure(exc)
                continue
            tally.returned(rid, amount, started)

    async with anyio.create_task_group() as tg:
        for index in range(tasks):
            tg.start_soon(loop, index)


def ledger_view(db: str) -> tuple[dict[str, tuple[str, int | None]], list[dict[str, Any]], int]:
    """(reservation id -> (status, committed)), the events' documents, the budget's spent — from the file."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        reservations = {rid: (status, committed) for rid, status, committed in conn.execute(
            "SELECT reservation_id, status, committed FROM reservations")}
        events = [json.loads(doc) for (doc,) in conn.execute("SELECT doc FROM events")]
        (spent,) = conn.execute("SELECT spent FROM budgets WHERE scope = ?", (f"tenant:{TENANT}",)).fetchone()
    finally:
        conn.close()
    return reservations, events, int(spent)


def main() -> int:
    """Run the soak; 0 when every known spend is on the ledger exactly once."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=75.0)
    parser.add_argument("--threads", type=int, default=6)
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--seed", type=int, default=random.randrange(2**32))
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)  # the client logs every retry; the figures are the output

    workdir = Path(tempfile.mkdtemp(prefix="runcycles-soak-"))
    db = str(workdir / "ledger.db")
    server = LocalCyclesServer(db)
    server.create_tenant(TENANT)
    key = server.create_api_key(TENANT)
    server.create_budget(f"tenant:{TENANT}", USD, 10**15)
    base = {
        "base_url": "http://soak.local",
        "api_key": key,
        "tenant": TENANT,
        "journal_dir": str(workdir / "journal"),
        "retry_initial_delay_ms": 50,
        "retry_max_delay_ms": 1000,
        "retry_max_attempts": 6,
        "flush_timeout_ms": 60_000,
    }
    rng = random.Random(args.seed)
    flapper = Flapper(random.Random(rng.randrange(2**32)))
    tally = Tally()
    sync_client = CyclesClient(_config(base), transport=FlappingTransport(server.transport(), flapper))

    started = time.monotonic()
    deadline = started + args.seconds
    threads = [
        threading.Thread(target=run_sync_worker, args=(sync_client, tally, deadline, rng.randrange(2**32)))
        for _ in range(args.threads)
    ]
    async_left: list[int] = []
    async_seed = rng.randrange(2**32)

    async def async_main() -> None:
        transport = AsyncFlappingTransport(server.async_transport(), flapper)
        async with AsyncCyclesClient(_config(base), transport=transport) as client:
            await run_async_workers(client, tally, deadline, args.tasks, async_seed)
            flapper.stop()
            async_left.append(await client.flush(60_000))

    async_thread = threading.Thread(target=anyio.run, args=(async_main,))
    for thread in [*threads, async_thread]:
        thread.start()
    for thread in threads:
        thread.join()
    flapper.stop()  # the server stays up from here on: drain
    sync_left = sync_client.flush(60_000)
    sync_client.close()
    async_thread.join()

    journal_root = workdir / "journal"
    retained = sorted(journal_root.glob("*/*.json"))
    replay = CyclesClient(_config(base), transport=server.transport())  # fresh: replays on start
    replay_left = replay.flush(60_000)
    replay.close()
    left_over = sorted(journal_root.glob("*/*.json"))
    server.close()

    reservations, events, spent = ledger_view(db)
    by_event: Counter[str] = Counter()
    events_per_rid: Counter[str] = Counter()
    for event in events:
        rid = str((event.get("metadata") or {}).get("recovered_reservation_id"))
        by_event[rid] += int(event["charged"])
        events_per_rid[rid] += 1
    lost, double, phantom, mismatch = [], [], [], []
    via_commit = via_event = 0
    for rid, amount in tally.known.items():
        _status, committed = reservations.get(rid, ("MISSING", None))
        recorded = (committed or 0) + by_event.get(rid, 0)
        sources = (committed is not None) + events_per_rid.get(rid, 0)
        if sources == 0:
            lost.append(rid)
        elif sources > 1:
            double.append(rid)
        elif recorded != amount:
            mismatch.append(rid)
        via_commit += committed is not None
        via_event += rid in by_event
    for rid, (_status, committed) in reservations.items():
        if rid not in tally.known and (committed is not None or rid in by_event):
            phantom.append(rid)
    unattributed = [
        e for e in events if str((e.get("metadata") or {}).get("recovered_reservation_id")) not in tally.known
    ]
    known_total = sum(tally.known.values())

    requests = flapper.requests
    print(f"soak: seed={args.seed} seconds={args.seconds:g} threads={args.threads} async_tasks={args.tasks}")
    print("  phases (s): " + ", ".join(f"{k}={v:.1f}" for k, v in sorted(flapper.phase_time.items())))
    attempted = len(tally.known) + sum(tally.failed.values())
    print(f"  calls: attempted={attempted} returned={len(tally.known)} failed_before_running="
          f"{sum(tally.failed.values())} {dict(tally.failed)}")
    if tally.latency_ms:
        lat = sorted(tally.latency_ms)
        print(f"  call latency (ms): p50={statistics.median(lat):.1f} p99={lat[int(len(lat) * 0.99)]:.1f}"
              f" max={lat[-1]:.1f}")
    print(f"  requests: total={sum(requests.values())} " + " ".join(f"{k}={v}" for k, v in sorted(requests.items())))
    injected = Counter(k.split(":")[0] for k in flapper.injected.elements())
    print(f"  faults injected: total={sum(injected.values())} "
          + " ".join(f"{k}={v}" for k, v in sorted(injected.items())))
    settlement_faults = sum(v for k, v in flapper.injected.items() if k.endswith((":commit", ":event")))
    print(f"  settlement requests faulted: {settlement_faults}; commits sent={requests['commit']} for"
          f" {len(tally.known)} settlements; events sent={requests['event']}")
    print(f"  settled: via_commit={via_commit} via_event_fallback={via_event}")
    print(f"  drain: unresolved_after_flush sync={sync_left} async={async_left[0] if async_left else '?'};"
          f" journal records retained={len(retained)}; fresh-client replay left={replay_left};"
          f" records left={len(left_over)}")
    print(f"  ledger: spent={spent} known_total={known_total} lost={len(lost)} double={len(double)}"
          f" mismatched={len(mismatch)} phantom={len(phantom)} unattributed_events={len(unattributed)}")
    ok = not (lost or double or mismatch or phantom or unattributed or left_over) and spent == known_total
    print(f"  verdict: {'OK: every known spend on the ledger exactly once' if ok else 'FAILED'}")
    for name, rids in (("lost", lost), ("double", double), ("mismatch", mismatch), ("phantom", phantom)):
        for rid in rids[:5]:
            print(f"    {name}: {rid} known={tally.known.get(rid)} ledger={reservations.get(rid)} "
                  f"events={by_event.get(rid)}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
