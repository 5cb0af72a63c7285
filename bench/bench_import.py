"""Wall time of `import runcycles` in fresh interpreters (prints figures, asserts nothing).

    python bench/bench_import.py [--runs 15] [--top 15]

Each run is a new subprocess, so nothing is cached in-process; the baseline is a bare interpreter start. Also
prints the `-X importtime` top entries (cumulative) and whether heavy optional modules got imported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WATCHED = ["uvicorn", "runcycles.local", "pytest", "trio", "hypothesis", "sqlite3", "httpx", "anyio", "tenacity"]


def wall_ms(code: str, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


def importtime(top: int) -> list[tuple[int, int, str]]:
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import runcycles"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    rows: list[tuple[int, int, str]] = []
    for line in completed.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        parts = line[len("import time:") :].split("|")
        if len(parts) != 3:
            continue
        rows.append((int(parts[0]), int(parts[1]), parts[2].rstrip()))
    rows.sort(key=lambda r: r[1], reverse=True)
    return rows[:top]


def loaded_modules() -> dict[str, bool]:
    code = f"import json, sys, runcycles; print(json.dumps({{m: m in sys.modules for m in {WATCHED!r}}}))"
    completed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    result: dict[str, bool] = json.loads(completed.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()

    wall_ms("pass", 2)  # warm the OS file cache
    wall_ms("import runcycles", 2)
    baseline = wall_ms("pass", args.runs)
    full = wall_ms("import runcycles", args.runs)
    base_median = statistics.median(baseline)
    full_median = statistics.median(full)
    print(f"python {sys.version.split()[0]} ({sys.executable})")
    print(f"interpreter start       median {base_median:7.1f} ms  (min {min(baseline):.1f}, max {max(baseline):.1f})")
    print(f"import runcycles        median {full_median:7.1f} ms  (min {min(full):.1f}, max {max(full):.1f})")
    print(f"import cost (difference)       {full_median - base_median:7.1f} ms  over {args.runs} runs")

    print(f"\n-X importtime, top {args.top} by cumulative time:")
    print(f"{'self us':>9} {'cumul us':>9}  module")
    for self_us, cumulative_us, name in importtime(args.top):
        print(f"{self_us:>9} {cumulative_us:>9}  {name}")

    print("\nimported by `import runcycles`:")
    for name, present in loaded_modules().items():
        print(f"  {name:<16} {'yes' if present else 'no'}")


if __name__ == "__main__":
    main()
