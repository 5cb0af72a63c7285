"""Adapter between the shared client-recovery conformance runner and this repository's native tests.

The runner (``run_client_recovery_conformance.py --claim durable --adapter python
scripts/recovery_conformance_adapter.py``) starts this script once per scenario with the scenario id as the
LAST argument and writes the scenario to stdin — only ``id``, ``level``, ``name``, ``precondition`` and
``faults``. The adapter:

* checks that the stdin id equals the argument, that the level matches the id, and refuses input carrying the
  oracle fields (``expected_requests``, ``assertions``) — the tests assert the choreography themselves;
* maps the id to the exact pytest node ids of its native tests (`NATIVE_TESTS`), runs them
  (``python -m pytest -q -p no:cacheprovider <nodes>``, output to stderr) and checks from a JUnit report that
  every one of them ran and passed (none missing, skipped or failed);
* prints exactly one JSON object on stdout — ``{"scenario_id", "passed", "native_tests", "diagnostic"?}`` —
  and exits 0 (the runner judges ``passed``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = "tests/test_recovery_scenarios.py"
CRASH = "tests/test_crash_replay.py"

ALLOWED_FIELDS = frozenset({"id", "level", "name", "precondition", "faults"})
ORACLE_FIELDS = ("expected_requests", "assertions")
ID_PATTERN = re.compile(r"^CR-(CORE|DURABLE|BOUNDARY)-\d{3}$")


def _nodes(path: str, *names: str) -> list[str]:
    return [f"{path}::{name}" for name in names]


NATIVE_TESTS: dict[str, list[str]] = {
    "CR-CORE-001": _nodes(
        SCENARIOS,
        "test_cr_core_001_lost_commit_response_reuses_same_key[lost_response]",
        "test_cr_core_001_lost_commit_response_reuses_same_key[reset]",
        "test_cr_core_001_lost_commit_response_reuses_same_key[truncated]",
        "test_cr_core_001_lost_commit_response_async_client[asyncio]",
        "test_cr_core_001_lost_commit_response_async_client[trio]",
    ),
    "CR-CORE-002": _nodes(
        SCENARIOS,
        "test_cr_core_002_expired_commit_falls_back_to_event",
        "test_cr_core_002_injected_410_falls_back_to_event",
    ),
    "CR-CORE-003": _nodes(SCENARIOS, "test_cr_core_003_heartbeat_transport_error_is_reported_and_non_fatal"),
    "CR-CORE-004": _nodes(
        SCENARIOS,
        *(
            f"test_cr_core_004_nonconformant_commit_success_is_ambiguous[{case}-{applied}]"
            for case in ("200_missing_charged", "200_not_json", "200_status_released", "202_empty", "204_empty")
            for applied in ("applied", "not_applied")
        ),
    ),
    "CR-DURABLE-001": [
        *_nodes(
            SCENARIOS,
            "test_cr_durable_001_commit_journaled_before_it_leaves_and_replayed_after_kill[in_flight]",
            "test_cr_durable_001_commit_journaled_before_it_leaves_and_replayed_after_kill[applied_response_lost]",
            "test_cr_durable_001_record_survives_restart_without_server",
        ),
        *_nodes(CRASH, "test_sigkill_during_settlement_then_fresh_process_settles_each_known_actual_once"),
    ],
    "CR-DURABLE-002": _nodes(
        SCENARIOS,
        "test_cr_durable_002_replayed_expired_commit_switches_durably_to_event[event_in_flight]",
        "test_cr_durable_002_replayed_expired_commit_switches_durably_to_event[event_applied_response_lost]",
    ),
    "CR-DURABLE-003": _nodes(SCENARIOS, "test_cr_durable_003_rate_limit_floor_survives_restart"),
    "CR-DURABLE-004": _nodes(SCENARIOS, "test_cr_durable_004_tenant_journal_survives_api_key_rotation"),
    "CR-DURABLE-005": _nodes(SCENARIOS, "test_cr_durable_005_corrupt_and_unsupported_records_are_quarantined"),
    "CR-DURABLE-006": _nodes(
        SCENARIOS,
        "test_cr_durable_006_concurrent_replay_from_two_processes_settles_once",
        "test_cr_durable_006_concurrent_commits_with_the_stored_key_settle_once",
    ),
    "CR-DURABLE-007": _nodes(
        SCENARIOS,
        "test_cr_durable_007_filenames_are_sha256_of_exact_utf8_id",
        "test_cr_durable_007_legacy_migration_never_deletes_a_colliding_file",
        "test_cr_durable_007_load_migrates_legacy_beside_colliding_standard_record",
        "test_cr_durable_007_legacy_record_of_a_real_reservation_replays",
    ),
    "CR-BOUNDARY-001": _nodes(
        SCENARIOS,
        "test_cr_boundary_001_missing_actual_is_rejected_before_any_request",
        *(
            f"test_cr_boundary_001_actual_unknown_at_run_time_settles_nothing_and_raises[{case}]"
            for case in ("raises", "negative", "float", "str")
        ),
        "test_cr_boundary_001_stream_without_actual_settles_nothing_and_raises[asyncio]",
        "test_cr_boundary_001_stream_without_actual_settles_nothing_and_raises[trio]",
        "test_cr_boundary_001_guarded_failure_releases_and_surfaces",
        "test_cr_boundary_001_guarded_failure_async_client[asyncio]",
        "test_cr_boundary_001_guarded_failure_async_client[trio]",
    ),
}
"""Scenario id -> the exact pytest node ids that assert its choreography and assertions."""


def _result(scenario_id: str, passed: bool, native_tests: list[str], diagnostic: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"scenario_id": scenario_id, "passed": passed, "native_tests": native_tests}
    if diagnostic:
        out["diagnostic"] = diagnostic
    return out


def check_input(argv_id: str, raw: str) -> str | None:
    """Why the scenario input is unacceptable, or ``None`` when it is fine."""
    try:
        scenario = json.loads(raw)
    except ValueError as exc:
        return f"stdin is not JSON: {exc}"
    if not isinstance(scenario, dict):
        return "stdin is not a JSON object"
    oracle = [name for name in ORACLE_FIELDS if name in scenario]
    if oracle:
        return f"refusing input that carries oracle data: {', '.join(oracle)}"
    unknown = sorted(set(scenario) - ALLOWED_FIELDS)
    if unknown:
        return f"unexpected fields in the scenario input: {', '.join(unknown)}"
    if scenario.get("id") != argv_id:
        return f"stdin id {scenario.get('id')!r} does not match the argument {argv_id!r}"
    match = ID_PATTERN.match(argv_id)
    if match is None:
        return f"malformed scenario id {argv_id!r}"
    if scenario.get("level") != match.group(1).lower():
        return f"level {scenario.get('level')!r} does not match the id {argv_id!r}"
    if argv_id not in NATIVE_TESTS:
        return f"no native tests for scenario {argv_id!r}"
    return None


def _junit_cases(path: Path) -> dict[str, str]:
    """``{node id: outcome}`` from a pytest JUnit report (``passed``, ``failed``, ``error`` or ``skipped``)."""
    cases: dict[str, str] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        module = case.get("classname", "")
        node = module.replace(".", "/") + ".py::" + case.get("name", "")
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                break
        cases[node] = outcome if cases.get(node, "passed") == "passed" else cases[node]
    return cases


def run_tests(nodes: list[str]) -> tuple[bool, str | None]:
    """Run ``nodes`` with pytest (output to stderr); (all ran and passed, diagnostic)."""
    with tempfile.TemporaryDirectory(prefix="recovery-adapter-") as tmp:
        report = Path(tmp) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", *nodes]
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        completed = subprocess.run(command, cwd=REPO_ROOT, stdout=sys.stderr, stderr=sys.stderr, env=env, check=False)
        if not report.exists():
            return False, f"pytest exited {completed.returncode} without a report"
        cases = _junit_cases(report)
    problems = [f"{node}: {cases.get(node, 'not run')}" for node in nodes if cases.get(node) != "passed"]
    if completed.returncode != 0:
        problems.insert(0, f"pytest exited {completed.returncode}")
    if problems:
        return False, "; ".join(problems)
    return True, None


def main(argv: list[str]) -> int:
    """Adapter entry point: always exits 0 after printing exactly one JSON object."""
    argv_id = argv[-1] if len(argv) > 1 else ""
    raw = sys.stdin.read()
    problem = "no scenario id argument" if not argv_id else check_input(argv_id, raw)
    if problem is not None:
        print(f"recovery adapter: {problem}", file=sys.stderr)
        result = _result(argv_id, False, [], problem)
    else:
        nodes = NATIVE_TESTS[argv_id]
        passed, diagnostic = run_tests(nodes)
        result = _result(argv_id, passed, nodes, diagnostic)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
