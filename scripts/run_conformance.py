"""Run the client-recovery conformance catalogue through our adapter, the way the shared runner does.

Usage::

    python scripts/run_conformance.py [CATALOG] [--claim core|durable] [--scenario ID ...] [--timeout 120]

``CATALOG`` defaults to ``../shared/spec/client-recovery-scenarios.yaml`` next to the repository. For each
scenario (``core``: core + boundary; ``durable``: all) it starts ``scripts/recovery_conformance_adapter.py``
as a fresh process with the id as its last argument and writes only ``id``, ``level``, ``name``,
``precondition`` and ``faults`` to its stdin (the oracle fields stay here), then checks the answer as the
runner does: exit 0, exactly one JSON object on stdout, the same id, ``passed`` literally ``true``, unique
non-blank ``native_tests``. Prints a summary; exits 1 on any failure. (CI runs it when ../shared exists.)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CATALOG = REPO_ROOT.parent / "shared" / "spec" / "client-recovery-scenarios.yaml"
ADAPTER = REPO_ROOT / "scripts" / "recovery_conformance_adapter.py"
FORWARDED = ("id", "level", "name", "precondition", "faults")
LEVELS = {"core": ("core", "boundary"), "durable": ("core", "boundary", "durable")}


def judge(scenario_id: str, returncode: int, stdout: str) -> tuple[bool, list[str], str | None]:
    """The runner's verdict on one adapter run: (passed, native tests, why not)."""
    if returncode != 0:
        return False, [], f"adapter exited {returncode}"
    try:
        answer = json.loads(stdout)
    except ValueError:
        return False, [], "stdout is not exactly one JSON object"
    if not isinstance(answer, dict):
        return False, [], "stdout is not a JSON object"
    tests = answer.get("native_tests")
    if not isinstance(tests, list) or not tests or any(not isinstance(t, str) or not t.strip() for t in tests):
        return False, [], "native_tests must be a non-empty list of non-blank strings"
    if len(set(tests)) != len(tests):
        return False, tests, "native_tests are not unique"
    if answer.get("scenario_id") != scenario_id:
        return False, tests, f"wrong scenario_id {answer.get('scenario_id')!r}"
    if answer.get("passed") is not True:
        return False, tests, str(answer.get("diagnostic") or "passed is not true")
    return True, tests, None


def run_one(scenario: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Feed one scenario to a fresh adapter process and judge its answer."""
    payload = json.dumps({k: scenario[k] for k in FORWARDED if k in scenario})
    started = time.monotonic()
    try:
        completed = subprocess.run(
            [sys.executable, str(ADAPTER), scenario["id"]],
            input=payload,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO_ROOT,
            check=False,
        )
        passed, tests, why = judge(scenario["id"], completed.returncode, completed.stdout)
        if not passed:
            sys.stderr.write(completed.stderr[-4000:])
    except subprocess.TimeoutExpired:
        passed, tests, why = False, [], f"timed out after {timeout:.0f} s"
    return {
        "id": scenario["id"],
        "level": scenario.get("level"),
        "name": scenario.get("name"),
        "passed": passed,
        "native_tests": tests,
        "seconds": round(time.monotonic() - started, 1),
        **({"diagnostic": why} if why else {}),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the catalogue; 0 when every selected scenario passed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("catalog", nargs="?", type=Path, default=DEFAULT_CATALOG)
    parser.add_argument("--claim", choices=sorted(LEVELS), default="durable")
    parser.add_argument("--scenario", action="append", default=[], metavar="ID")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)

    raw = args.catalog.read_bytes()
    catalog = yaml.safe_load(raw)
    scenarios = [s for s in catalog["scenarios"] if s["level"] in LEVELS[args.claim]]
    if args.scenario:
        unknown = set(args.scenario) - {s["id"] for s in scenarios}
        if unknown:
            parser.error(f"unknown scenario(s) for claim {args.claim}: {', '.join(sorted(unknown))}")
        scenarios = [s for s in scenarios if s["id"] in args.scenario]
    digest = hashlib.sha256(raw.decode("utf-8").replace("\r\n", "\n").encode("utf-8")).hexdigest()
    print(f"profile {catalog.get('profile')} v{catalog.get('version')} catalog sha256 {digest}; claim {args.claim}")

    results = []
    for scenario in scenarios:
        result = run_one(scenario, args.timeout)
        results.append(result)
        mark = "PASS" if result["passed"] else "FAIL"
        print(f"  {mark} {result['id']:<16} {result['seconds']:>6.1f}s  {result['name']}"
              f"  ({len(result['native_tests'])} native tests)")
        if not result["passed"]:
            print(f"       {result.get('diagnostic')}")
    failed = sum(1 for r in results if not r["passed"])
    print(f"summary: total={len(results)} passed={len(results) - failed} failed={failed}")
    return 1 if failed or not results else 0


if __name__ == "__main__":
    raise SystemExit(main())
