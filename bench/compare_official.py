"""Side by side with the official Python client (PyPI ``runcycles==0.5.3``): the same workloads, the same fake server.

    python bench/compare_official.py                 # 5 reps x 1,000 calls (several minutes)
    python bench/compare_official.py --quick         # 1 rep x 100 calls, smaller bursts (< 2 minutes)
    python bench/compare_official.py --reps 3 --calls 500 --only sync-journal-off async-journal-off

Workloads (``--only``): sync-default, async-default (our default: journal_sync="full", one fdatasync per
settlement), sync-same-durability, async-same-durability (ours with journal_sync="process": no fsync, which is
what the official client's journal does), sync-journal-off, async-journal-off, async-100x200ms, async-1000.

Both libraries are imported as ``runcycles``, so the official one lives in its own venv (``.venv-official/``
beside this repo, created on first use with pip; ``--official-venv`` to use another). When it cannot be created
(no package index reachable) the script says so and measures our side only.

A fast fake Cycles server (``_rawhttp.py``: raw asyncio, HTTP/1.1 keep-alive, canned valid JSON) runs in its own
process. Every workload runs in a fresh subprocess per rep (``_compare_worker.py``), alternating official, ours,
official raw floor, ours raw floor. The raw floor is create + commit with each library's own wire client and no
lifecycle: the ratio of the two floors shows how much of a difference is the run's noise.

Figures: the median over reps of each rep's median call (sequential workloads) or of the burst's wall time
(concurrent ones); threads started per call and process CPU per call in the timed phase; errors and calls still
unfinished at ``--cap`` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import venv
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OFFICIAL = "runcycles==0.5.3"

# name -> (label, worker options)
WORKLOADS: dict[str, tuple[str, dict[str, Any]]] = {
    "sync-default": ("sync, default (journal on)", {"flavour": "sync", "journal": True}),
    "async-default": ("async, default (journal on)", {"flavour": "async", "journal": True}),
    # The official client's journal does no fsync (atomic rename only): the same durability as our "process" mode.
    "sync-same-durability": (
        "sync, journal on, no fsync (ours: journal_sync=\"process\")",
        {"flavour": "sync", "journal": True, "journal_sync": "process"},
    ),
    "async-same-durability": (
        "async, journal on, no fsync (ours: journal_sync=\"process\")",
        {"flavour": "async", "journal": True, "journal_sync": "process"},
    ),
    "sync-journal-off": ("sync, journal off", {"flavour": "sync", "journal": False}),
    "async-journal-off": ("async, journal off", {"flavour": "async", "journal": False}),
    "async-100x200ms": (
        "{small} concurrent async 200 ms calls, journal on",
        {"flavour": "async", "journal": True, "concurrency": "small", "sleep_ms": 200},
    ),
    "async-1000": (
        "{large} concurrent async calls, journal on",
        {"flavour": "async", "journal": True, "concurrency": "large"},
    ),
}


def official_python(path: Path, *, create: bool) -> tuple[Path | None, str]:
    """The official client's interpreter (creating its venv when missing), or None and why not."""
    python = path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    probe = [str(python), "-c", "import importlib.metadata as m; print(m.version('runcycles'))"]
    if python.exists():
        done = subprocess.run(probe, capture_output=True, text=True, cwd=tempfile.gettempdir(), check=False)
        if done.returncode == 0 and done.stdout.strip() == OFFICIAL.split("==")[1]:
            return python, f"official client {OFFICIAL} from {path}"
    if not create:
        return None, f"no {OFFICIAL} in {path} (--no-install given)"
    print(f"creating {path} with {OFFICIAL} ...", flush=True)
    try:
        venv.EnvBuilder(with_pip=True, clear=True).create(path)
        install = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", OFFICIAL],
            capture_output=True, text=True, timeout=600, check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"could not create the official client's venv ({exc})"
    if install.returncode != 0:
        tail = (install.stderr or install.stdout).strip().splitlines()[-1:] or ["pip failed"]
        return None, f"could not install {OFFICIAL} (package index unreachable?): {tail[0]}"
    return python, f"official client {OFFICIAL} installed in {path}"


def start_fake_server() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, str(HERE / "_rawhttp.py"), "serve"], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("PORT "):
        process.kill()
        raise RuntimeError(f"the fake server did not start: {line!r}")
    return process, f"http://127.0.0.1:{int(line.split()[1])}"


def run_worker(python: Path, lib: str, base_url: str, options: dict[str, Any], args: argparse.Namespace,
               *, raw: bool) -> dict[str, Any]:
    command = [str(python), str(HERE / "_compare_worker.py"), "--lib", lib, "--base-url", base_url,
               "--flavour", options["flavour"], "--calls", str(args.calls), "--cap", str(args.cap)]
    command += ["--warmup", str(min(args.warmup, 5) if options.get("concurrency") else args.warmup)]
    if options.get("journal"):
        command.append("--journal")
    if options.get("journal_sync") and lib == "ours":  # the official client has no such setting (it never fsyncs)
        command += ["--journal-sync", options["journal_sync"]]
    if raw:
        command.append("--raw")
    concurrency = options.get("concurrency")
    if concurrency:
        command += ["--concurrency", str(args.small if concurrency == "small" else args.large)]
    if options.get("sleep_ms"):
        command += ["--sleep-ms", str(options["sleep_ms"])]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.cap + 120,
                              cwd=tempfile.gettempdir(), check=False)
    except subprocess.TimeoutExpired:
        return {"failed": "timed out"}
    lines = [x for x in done.stdout.splitlines() if x.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"failed": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def figure(result: dict[str, Any]) -> float | None:
    """The rep's figure in seconds: its median call, or a burst's wall time."""
    if "failed" in result:
        return None
    value = result.get("median_call")
    return float(value) if value is not None else float(result["seconds"])


def import_time(python: Path, reps: int) -> float:
    """Median wall time of ``import runcycles`` in a fresh interpreter (timed inside it)."""
    code = "import time; t = time.perf_counter(); import runcycles; print(time.perf_counter() - t)"
    samples = []
    for _ in range(reps):
        done = subprocess.run([str(python), "-c", code], cwd=tempfile.gettempdir(), capture_output=True, text=True,
                              check=True)
        samples.append(float(done.stdout.strip().splitlines()[-1]))
    return statistics.median(samples)


def med(values: list[float | None]) -> float | None:
    real = [v for v in values if v is not None]
    return statistics.median(real) if real else None


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds * 1000:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in results if "failed" not in r]
    per_call = [(r["threads"] / r["calls"], r["cpu"] / r["calls"]) for r in ok]
    return {
        "time": med([figure(r) for r in results]),
        "threads": statistics.median(p[0] for p in per_call) if per_call else None,
        "cpu": statistics.median(p[1] for p in per_call) if per_call else None,
        "errors": sum(r["errors"] for r in ok),
        "hung": sum(r["hung"] for r in ok),
        "failed": [r["failed"] for r in results if "failed" in r],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--calls", type=int, default=1000, help="calls per rep (sequential workloads)")
    parser.add_argument("--small", type=int, default=100, help="calls in the 200 ms burst")
    parser.add_argument("--large", type=int, default=1000, help="calls in the large burst")
    parser.add_argument("--warmup", type=int, default=30, help="untimed calls first (each rep)")
    parser.add_argument("--cap", type=float, default=60.0, help="seconds a burst may take")
    parser.add_argument("--quick", action="store_true", help="1 rep x 100 calls, bursts of 50 and 200")
    parser.add_argument("--only", nargs="*", choices=sorted(WORKLOADS), help="run only these workloads")
    parser.add_argument("--import-reps", type=int, default=5, help="timed imports per library")
    parser.add_argument("--official-venv", type=Path, default=ROOT / ".venv-official")
    parser.add_argument("--no-install", action="store_true", help="never create the official venv")
    parser.add_argument("--ours-only", action="store_true", help="skip the official client")
    args = parser.parse_args()
    if args.quick:
        args.reps, args.calls, args.small, args.large, args.cap = 1, 100, 50, 200, 30.0

    ours = Path(sys.executable)
    official: Path | None = None
    if args.ours_only:
        print("official client: skipped (--ours-only)")
    else:
        official, note = official_python(args.official_venv, create=not args.no_install)
        print(("" if official else "WARNING: ") + note + ("" if official else "; measuring our side only"))
    server, base_url = start_fake_server()
    names = args.only or list(WORKLOADS)
    rows = []
    try:
        for name in names:
            label, options = WORKLOADS[name]
            label = label.format(small=args.small, large=f"{args.large:,}")
            runs: dict[str, list[dict[str, Any]]] = {"official": [], "ours": [], "official_raw": [], "ours_raw": []}
            for _ in range(args.reps):  # alternating A B A B
                for key, python, lib, raw in (
                    ("official", official, "official", False),
                    ("ours", ours, "ours", False),
                    ("official_raw", official, "official", True),
                    ("ours_raw", ours, "ours", True),
                ):
                    if python is not None:
                        runs[key].append(run_worker(python, lib, base_url, options, args, raw=raw))
            row = {key: summary(value) for key, value in runs.items()}
            rows.append((label, row))
            print(f"  done: {label}", flush=True)
        reps = args.import_reps
        imports = {"ours": import_time(ours, reps), "official": import_time(official, reps) if official else None}
    finally:
        server.terminate()
        server.wait(10)

    print()
    print(f"{args.reps} rep(s) x {args.calls} calls, medians; A = official {OFFICIAL}, B = ours; "
          "fake server in its own process")
    print()
    print("| case | official | ours | ours/official calls/s | ours / own raw floor | official / own raw floor "
          "| raw floors ours/official | threads per call (off / ours) | CPU per call (off / ours) | errors, hung "
          "(off / ours) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, row in rows:
        o, b, orw, brw = row["official"], row["ours"], row["official_raw"], row["ours_raw"]

        def threads(s: dict[str, Any]) -> str:
            return "n/a" if s["threads"] is None else f"{s['threads']:.2f}"

        def cpu(s: dict[str, Any]) -> str:
            return "n/a" if s["cpu"] is None else f"{s['cpu'] * 1000:.2f} ms"

        def problems(s: dict[str, Any]) -> str:
            if s["time"] is None and not s["failed"]:
                return "n/a"
            text = f"{s['errors']}, {s['hung']}"
            return text + (f" (failed: {s['failed'][0]})" if s["failed"] else "")

        print(
            f"| {label} | {fmt_time(o['time'])} | {fmt_time(b['time'])} | {ratio(o['time'], b['time'])} "
            f"| {ratio(b['time'], brw['time'])} | {ratio(o['time'], orw['time'])} | {ratio(brw['time'], orw['time'])} "
            f"| {threads(o)} / {threads(b)} | {cpu(o)} / {cpu(b)} | {problems(o)} / {problems(b)} |"
        )
    print(
        f"| import | {fmt_time(imports['official'])} | {fmt_time(imports['ours'])} "
        f"| {ratio(imports['official'], imports['ours'])} | | | | | | |"
    )
    print()
    print("raw floor (create+commit, own wire client), and guarded / raw floor in CPU per call (steadier than wall")
    print("time on a busy machine):")
    for label, row in rows:
        o, b, orw, brw = row["official"], row["ours"], row["official_raw"], row["ours_raw"]
        print(f"  {label}: official {fmt_time(orw['time'])}, ours {fmt_time(brw['time'])}; CPU ratio official "
              f"{ratio(o['cpu'], orw['cpu'])}, ours {ratio(b['cpu'], brw['cpu'])}")


if __name__ == "__main__":
    main()
