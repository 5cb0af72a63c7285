"""A/B two source trees of runcycles on one `profile_call.py` workload, alternating (prints figures only).

    python bench/ab_trees.py --a /tmp/base --b . [--reps 7] -- --flavour async --calls 1000 [--server local]

``--a`` / ``--b`` are directories holding a ``runcycles`` package (put first on ``PYTHONPATH``). Each rep runs
A then B (then B then A on the next rep, so neither always goes first) in fresh processes and prints, per side,
the median over reps of the per-call median, 10th percentile (the steadiest on a busy machine) and CPU per
call, and B/A ratios. On a shared machine compare ratios, never single figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _run(tree: str, extra: list[str]) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(Path(tree).resolve()))
    out = subprocess.run(
        [sys.executable, str(HERE / "profile_call.py"), *extra], env=env, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[0])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--a", required=True)
    parser.add_argument("--b", required=True)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="arguments for profile_call.py (after --)")
    args = parser.parse_args()
    extra = [x for x in args.extra if x != "--"]
    results: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    for rep in range(args.reps):
        order = [("A", args.a), ("B", args.b)] if rep % 2 == 0 else [("B", args.b), ("A", args.a)]
        for name, tree in order:
            results[name].append(_run(tree, extra))
    summary = {}
    for name, runs in results.items():
        summary[name] = {key: statistics.median(r[key] for r in runs) for key in ("median_us", "p10_us", "cpu_us")}
        print(f"{name}: median {summary[name]['median_us']:8.1f} us/call   p10 {summary[name]['p10_us']:8.1f} us/call"
              f"   cpu {summary[name]['cpu_us']:8.1f} us/call")
    ratios = [b["median_us"] / a["median_us"] for a, b in zip(results["A"], results["B"], strict=True)]
    cpu_ratios = [b["cpu_us"] / a["cpu_us"] for a, b in zip(results["A"], results["B"], strict=True)]
    p10_ratios = [b["p10_us"] / a["p10_us"] for a, b in zip(results["A"], results["B"], strict=True)]
    print(f"B/A: median {statistics.median(ratios):.3f}  p10 {statistics.median(p10_ratios):.3f}  "
          f"cpu {statistics.median(cpu_ratios):.3f}  "
          f"(per-rep median ratios {min(ratios):.2f}..{max(ratios):.2f})  args: {' '.join(extra)}")


if __name__ == "__main__":
    main()
