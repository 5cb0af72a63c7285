"""Machinery shared by the recovery tests (tests/test_recovery_scenarios.py, tests/test_crash_replay.py).

* `World`: durable state several OS processes share — a file-backed embedded server (SQLite is safe across
  processes), the journal directory, the tenant's API key. Nothing else survives a "restart".
* `Recorder`: an httpx transport logging every request (operation, idempotency key, body, wall-clock time)
  in memory and, for a child process, as JSON lines in a file the parent reads after killing it. The line is
  written *before* the request goes further, so a commit line means "this spend left the process".
* `Gate`: parks one request (before the server sees it, or after the server applied it) until the parent
  kills the process — or until a ``hold`` object (an Event or a Barrier) lets it go.
* `Chaos`: random delays around commits and lost commit responses, for the crash tests.
* Child entry points for ``multiprocessing`` spawn: `run_child`, `run_replay_worker`, `run_crash_child`.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import attrs
import httpx
from faults import FaultyTransport, operation_of

from runcycles import CyclesClient, CyclesConfig, with_cycles
from runcycles.local import LocalCyclesServer

ADMIN_KEY = "recovery-admin-key"
TENANT = "acme"
SCOPE = "tenant:acme"
USD = "USD_MICROCENTS"
FUNDS = 10**12
BASE_URL = "http://cycles.local"
ESTIMATE = 1000
ACTUAL = 640
PARK_TIMEOUT_S = 60.0  # a parked request gives up (and the child exits) if nobody kills it


def wall_ms() -> int:
    """Epoch milliseconds (comparable across processes, unlike the monotonic clock)."""
    return time.time_ns() // 1_000_000


class OffsetClock:
    """The server clock of one process: wall time plus a fixed offset (expiry without sleeping)."""

    def __init__(self, offset_ms: int = 0) -> None:
        self.offset_ms = offset_ms

    def __call__(self) -> int:
        return wall_ms() + self.offset_ms


# --------------------------------------------------------------------------- durable state


@attrs.frozen
class World:
    """The durable state of one scenario: ``<root>/ledger.db`` and ``<root>/journal``, and the API key.

    The key travels to child processes through their (pickled) arguments, never through a file.
    """

    root: str
    key: str = attrs.field(repr=False)
    tenant: str | None = TENANT

    @property
    def db(self) -> str:
        """The server's SQLite file."""
        return os.path.join(self.root, "ledger.db")

    @property
    def journal_dir(self) -> str:
        """The client journal root."""
        return os.path.join(self.root, "journal")

    def server(self, clock_offset_ms: int = 0) -> LocalCyclesServer:
        """A server process's view of the shared ledger (its own connections and clock)."""
        return LocalCyclesServer(self.db, admin_key=ADMIN_KEY, clock=OffsetClock(clock_offset_ms))

    def config(self, **overrides: Any) -> CyclesConfig:
        """A client configuration for this world: fast retries, the shared journal directory."""
        options: dict[str, Any] = {
            "base_url": BASE_URL,
            "api_key": self.key,
            "tenant": self.tenant,
            "retry_initial_delay_ms": 2,
            "retry_max_delay_ms": 20,
            "journal_dir": self.journal_dir,
        }
        options.update(overrides)
        return CyclesConfig(**options)

    def with_key(self, key: str) -> World:
        """The same durable state seen with another credential."""
        return attrs.evolve(self, key=key)

    # ---- the ledger

    def budget(self) -> dict[str, Any]:
        """The tenant budget's amounts."""
        with self.server() as server:
            return server.get_budget(SCOPE, USD)

    def reservations(self, status: str | None = None) -> list[dict[str, Any]]:
        """Every reservation of the tenant (following ``next_cursor``)."""
        params: dict[str, str] = {"tenant": TENANT, "limit": "200"}
        if status is not None:
            params["status"] = status
        rows: list[dict[str, Any]] = []
        with self.server() as server, self.reader(server) as http:
            while True:
                response = http.get("/v1/reservations", params=params)
                assert response.status_code == 200, response.text
                body = response.json()
                rows.extend(body["reservations"])
                cursor = body.get("next_cursor")
                if not body.get("has_more") or not cursor:
                    return rows
                params["cursor"] = cursor

    def reservation(self, reservation_id: str, clock_offset_ms: int = 0) -> tuple[int, dict[str, Any]]:
        """``GET /v1/reservations/{id}`` straight from the ledger: (status code, body)."""
        with self.server(clock_offset_ms) as server, self.reader(server) as http:
            response = http.get(f"/v1/reservations/{reservation_id}")
            body: dict[str, Any] = response.json()
            return response.status_code, body

    def reader(self, server: LocalCyclesServer) -> httpx.Client:
        """A plain HTTP client of ``server`` with this world's key (no fault layer, no journal)."""
        headers = {"X-Cycles-API-Key": self.key}
        return httpx.Client(transport=server.transport(), base_url="http://local", headers=headers)

    # ---- the journal, read from disk

    def journal_files(self) -> list[Path]:
        """The record files of every partition (quarantined files excluded), with the spare files that hold a
        record (written, not yet renamed to its standard name; blank ones are recycled record files)."""
        root = Path(self.journal_dir)
        if not root.exists():
            return []
        spares = [p for p in root.glob("*/*.spare") if p.is_file() and p.read_bytes().strip()]
        return sorted([p for p in root.glob("*/*.json") if p.is_file()] + spares)

    def journal_records(self) -> list[dict[str, Any]]:
        """The stored records, as JSON."""
        return [json.loads(p.read_text("utf-8")) for p in self.journal_files()]

    def partitions(self) -> list[Path]:
        """The partition directories under the journal root."""
        root = Path(self.journal_dir)
        return sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []


def make_world(root: Path, *, funds: int = FUNDS) -> World:
    """Seed a fresh ledger (tenant, API key, tenant budget) under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    with LocalCyclesServer(str(root / "ledger.db"), admin_key=ADMIN_KEY) as server:
        server.create_tenant(TENANT)
        key = server.create_api_key(TENANT)
        server.create_budget(SCOPE, USD, funds)
    return World(root=str(root), key=key)


def rotate_key(world: World) -> World:
    """Create a new API key for the tenant and revoke the world's current one; returns the new world."""
    with world.server() as server:
        new_key = server.create_api_key(TENANT, name="rotated")
        with httpx.Client(
            transport=server.transport(), base_url="http://local", headers={"X-Admin-API-Key": ADMIN_KEY}
        ) as admin:
            keys = admin.get("/v1/admin/api-keys", params={"tenant_id": TENANT}).json()["keys"]
            old = [k for k in keys if world.key.startswith(k["key_prefix"]) and k["status"] == "ACTIVE"]
            assert len(old) == 1, keys
            revoked = admin.delete(f"/v1/admin/api-keys/{old[0]['key_id']}")
            assert revoked.status_code == 200, revoked.text
    return world.with_key(new_key)


# --------------------------------------------------------------------------- transports


def _json_or_none(content: bytes) -> Any:
    try:
        return json.loads(content) if content else None
    except ValueError:
        return None


class Recorder(httpx.BaseTransport):
    """Logs each request before passing it on (in memory, and as JSON lines to ``path`` when given)."""

    def __init__(self, inner: httpx.BaseTransport, path: str | None = None) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self._entries: list[dict[str, Any]] = []
        self._requests = 0
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600) if path else None

    def note(self, **fields: Any) -> None:
        """Append a free-form line (e.g. "the call returned")."""
        self._write({"note": True, "pid": os.getpid(), "wall_ms": wall_ms(), **fields})

    def _write(self, line: dict[str, Any]) -> None:
        with self._lock:
            self._write_locked(line)

    def _write_locked(self, line: dict[str, Any]) -> None:
        self._entries.append(line)
        if self._fd is not None:
            # One write(2) per line: whole lines survive a SIGKILL (the kernel has them).
            os.write(self._fd, (json.dumps(line) + "\n").encode())

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Log, then forward to the inner transport; log the status (or the exception) it ends with."""
        content = request.read()
        body = _json_or_none(content)
        key = request.headers.get("x-idempotency-key")
        if key is None and isinstance(body, Mapping):
            key = body.get("idempotency_key")
        entry = {
            "pid": os.getpid(),
            "wall_ms": wall_ms(),
            "operation": operation_of(request.method, request.url.path),
            "path": request.url.path,
            "key": key,
            "body": body,
        }
        with self._lock:
            # Numbered and written in one step: concurrent requests (a replay settles several records at once)
            # must never share a number, or an outcome line would be folded into the wrong request.
            seq = entry["seq"] = self._requests
            self._requests += 1
            self._write_locked(entry)
        try:
            response = self.inner.handle_request(request)
        except httpx.HTTPError as exc:
            self._write({"done": seq, "pid": os.getpid(), "error": type(exc).__name__})
            raise
        self._write({"done": seq, "pid": os.getpid(), "status": response.status_code})
        return response

    @property
    def entries(self) -> list[dict[str, Any]]:
        """The requests logged in this process so far (with their final ``status`` / ``error``)."""
        with self._lock:
            lines = list(self._entries)
        return merge_log(lines)

    def close(self) -> None:
        """Close the inner transport and the log file."""
        self.inner.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def merge_log(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Request lines with their outcome lines folded in (``status`` or ``error``; neither when cut off)."""
    requests: list[dict[str, Any]] = []
    by_seq: dict[tuple[int, int], dict[str, Any]] = {}
    for line in lines:
        if "operation" in line:
            entry = dict(line)
            requests.append(entry)
            by_seq[(line["pid"], line["seq"])] = entry
        elif "done" in line:
            target = by_seq.get((line["pid"], line["done"]))
            if target is not None:
                target.update({k: v for k, v in line.items() if k in ("status", "error")})
    return requests


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The request log a (possibly killed) child wrote."""
    return merge_log(read_lines(path))


def read_lines(path: str | Path) -> list[dict[str, Any]]:
    """Every complete JSON line of a child's log (requests, outcomes and notes)."""
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text("utf-8").splitlines() if line.strip()]


def settlement_requests(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The commit and event requests of a log."""
    return [e for e in entries if e["operation"] in ("commit", "event")]


def sequence(entries: list[dict[str, Any]], *, seen: set[str] | None = None) -> list[str]:
    """The catalogue's words for a log: ``commit``, ``commit_same_key``, ``event_same_key``, …

    ``seen``: idempotency keys already used before this log (e.g. by the process that was killed).
    """
    keys = set() if seen is None else set(seen)
    out: list[str] = []
    for entry in entries:
        if entry["operation"] == "other":
            continue
        key = entry["key"]
        out.append(entry["operation"] + ("_same_key" if key is not None and key in keys else ""))
        if key is not None:
            keys.add(key)
    return out


class _Waitable(Protocol):
    def wait(self, timeout: float | None = None) -> Any: ...


class _Settable(Protocol):
    def set(self) -> None: ...


class Gate(httpx.BaseTransport):
    """Parks the first ``times`` requests of ``operation``.

    ``forward=False``: before the server sees the request; ``True``: after the server applied it (the response
    is then never delivered while parked). It sets ``reached`` and waits on ``hold`` (``None``: until the
    process is killed; the request fails with a connect error after `PARK_TIMEOUT_S`).
    """

    def __init__(
        self,
        inner: httpx.BaseTransport,
        operation: str,
        *,
        forward: bool,
        reached: _Settable | None,
        hold: _Waitable | None = None,
        times: int = 1,
    ) -> None:
        self.inner = inner
        self.operation = operation
        self.forward = forward
        self.reached = reached
        self.hold = hold
        self._left = times
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Forward, parking the matching request (see the class docstring)."""
        with self._lock:
            parked = operation_of(request.method, request.url.path) == self.operation and self._left > 0
            if parked:
                self._left -= 1
        if not parked:
            return self.inner.handle_request(request)
        response: httpx.Response | None = None
        if self.forward:
            response = self.inner.handle_request(request)
            response.read()
        if self.reached is not None:
            self.reached.set()
        if self.hold is None:
            threading.Event().wait(PARK_TIMEOUT_S)
            raise httpx.ConnectError("parked request was never released", request=request)
        self.hold.wait(PARK_TIMEOUT_S)
        if response is not None:
            return response
        return self.inner.handle_request(request)

    def close(self) -> None:
        """Close the inner transport."""
        self.inner.close()


class Chaos(httpx.BaseTransport):
    """Random delays before and after each commit, and a share of commits whose response is lost after the
    server applied them (an ``httpx.ReadTimeout``)."""

    def __init__(self, inner: httpx.BaseTransport, rng: random.Random, *, max_delay_s: float, lose: float) -> None:
        self.inner = inner
        self.rng = rng
        self.max_delay_s = max_delay_s
        self.lose = lose
        self._lock = threading.Lock()

    def _draw(self) -> tuple[float, float, bool]:
        with self._lock:
            return (
                self.rng.uniform(0, self.max_delay_s),
                self.rng.uniform(0, self.max_delay_s),
                self.rng.random() < self.lose,
            )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Forward; commits get the random treatment."""
        if operation_of(request.method, request.url.path) != "commit":
            return self.inner.handle_request(request)
        before, after, lose = self._draw()
        time.sleep(before)  # a random kill point before the commit reaches the server
        response = self.inner.handle_request(request)
        response.read()
        time.sleep(after)  # ... and one after the server applied it, before the client learns it
        if lose:
            raise httpx.ReadTimeout("chaos: response lost", request=request)
        return response

    def close(self) -> None:
        """Close the inner transport."""
        self.inner.close()


# --------------------------------------------------------------------------- clients


FaultRule = tuple[str, str, tuple[tuple[str, Any], ...], int | None]
"""``(operation, fault method of faults.FaultPlan's rule builder, keyword arguments, times)``."""


@attrs.frozen(kw_only=True)
class ClientSpec:
    """How one process builds its client (everything picklable, for child processes)."""

    world: World
    log_path: str | None = None
    clock_offset_ms: int = 0
    faults: tuple[FaultRule, ...] = ()
    gate: tuple[str, bool] | None = None  # (operation, forward)
    config: tuple[tuple[str, Any], ...] = ()


@attrs.define
class Built:
    """A client and the layers around it (closed together)."""

    client: CyclesClient
    recorder: Recorder
    faults: FaultyTransport
    server: LocalCyclesServer
    clock: OffsetClock

    def close(self) -> None:
        """Close the client (drains its background work) and the server connections."""
        self.client.close()
        self.server.close()

    def __enter__(self) -> Built:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_client(
    spec: ClientSpec,
    *,
    reached: _Settable | None = None,
    hold: _Waitable | None = None,
    wrap: Callable[[httpx.BaseTransport], httpx.BaseTransport] | None = None,
) -> Built:
    """Server view, fault layer, ``wrap``, optional gate, recorder outermost; then the client, which resumes
    the journal at once (``replay_journal()``, as a restarted service would)."""
    clock = OffsetClock(spec.clock_offset_ms)
    server = LocalCyclesServer(spec.world.db, admin_key=ADMIN_KEY, clock=clock)
    faults = FaultyTransport(server.transport())
    for operation, fault, kwargs, times in spec.faults:
        getattr(faults.on(operation, times=times), fault)(**dict(kwargs))
    inner: httpx.BaseTransport = faults
    if wrap is not None:
        inner = wrap(inner)
    if spec.gate is not None:
        operation, forward = spec.gate
        inner = Gate(inner, operation, forward=forward, reached=reached, hold=hold)
    recorder = Recorder(inner, spec.log_path)
    client = CyclesClient(spec.world.config(**dict(spec.config)), transport=recorder)
    client.replay_journal()
    return Built(client=client, recorder=recorder, faults=faults, server=server, clock=clock)


def guarded_call(client: CyclesClient, *, estimate: int = ESTIMATE, actual: int = ACTUAL, **options: Any) -> str:
    """One ``with_cycles`` call that returns its reservation id."""
    from runcycles import get_cycles_context

    @with_cycles(estimate=estimate, actual=actual, client=client, action_kind="llm.completion",
                 action_name="recovery-test", **options)
    def work() -> str:
        ctx = get_cycles_context()
        assert ctx is not None
        return ctx.reservation_id

    return work()


# --------------------------------------------------------------------------- child processes


def _patch_not_before_signal(signal: _Settable) -> None:
    """Set ``signal`` once a record carrying a 429 floor (``not_before_ms``) is durably written."""

    from runcycles._journal import Journal, JournalRecord

    original = Journal.write_job

    def write_job(
        self: Journal, record: JournalRecord, *, owned: bool = False, **more: Any
    ) -> Callable[[], Path | None]:
        job = original(self, record, owned=owned, **more)

        def run() -> Path | None:
            result = job()
            if record.not_before_ms is not None:
                signal.set()
            return result

        return run

    Journal.write_job = write_job  # type: ignore[method-assign]


def run_child(
    spec: ClientSpec,
    reached: _Settable | None = None,
    call: bool = True,
    signal_not_before: _Settable | None = None,
) -> None:
    """A process that builds a client from durable state (replaying what the journal holds), optionally runs
    one guarded call, flushes and exits — unless its gate parks a request, in which case it waits there for
    the parent's SIGKILL."""
    if signal_not_before is not None:
        _patch_not_before_signal(signal_not_before)
    built = build_client(spec, reached=reached)
    if call:
        rid = guarded_call(built.client)
        built.recorder.note(returned=rid)
    remaining = built.client.flush(20_000)
    built.recorder.note(finished=True, remaining=remaining)
    built.close()


def run_replay_worker(
    spec: ClientSpec, barrier: _Waitable, reached: _Settable, hold: _Waitable, report: Any
) -> None:
    """One of two independently constructed workers: waits at ``barrier``, builds its client (which resumes
    the journal at once), reports how many settlements it took on, flushes and reports again."""
    barrier.wait(PARK_TIMEOUT_S)
    built = build_client(spec, reached=reached, hold=hold)
    report.put(("constructed", os.getpid(), built.client.pending_settlements))
    remaining = built.client.flush(20_000)
    built.close()
    report.put(("done", os.getpid(), remaining))


def run_crash_child(spec: ClientSpec, started: _Settable, seed: int, max_delay_s: float, lose: float) -> None:
    """Guarded calls with random actuals, one after the other, until the parent kills the process.

    The commit line of the recorder (written before the commit goes further) is the child's report of each
    actual it knew.
    """
    rng = random.Random(seed)
    chaos_rng = random.Random(seed + 1)
    built = build_client(
        spec, wrap=lambda inner: Chaos(inner, chaos_rng, max_delay_s=max_delay_s, lose=lose)
    )
    for i in range(100_000):
        amount = rng.randint(1, 999)
        rid = guarded_call(built.client, actual=amount)
        built.recorder.note(returned=rid, actual=amount)
        if i == 0:
            started.set()
    built.close()


def known_actuals(entries: list[dict[str, Any]]) -> dict[str, int]:
    """``{reservation id: actual}`` of every commit that left the process (same-key retries must agree)."""
    out: dict[str, int] = {}
    for entry in entries:
        if entry["operation"] != "commit":
            continue
        rid = entry["path"].split("/")[3]
        amount = int(entry["body"]["actual"]["amount"])
        assert out.setdefault(rid, amount) == amount, (rid, out[rid], amount)
    return out


def iter_files(root: Path) -> Iterator[Path]:
    """Every regular file under ``root``."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            yield Path(dirpath) / name
