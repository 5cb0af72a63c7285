"""scripts/recovery_conformance_adapter.py: the runner's contract, and a mapping that cannot go false-green.

The adapter is run as a subprocess exactly as the shared runner runs it (scenario id last on the command
line, the scenario JSON on stdin). Its scenario -> native test mapping is checked against what pytest really
collects, so a renamed or deleted test fails here instead of silently shrinking the evidence.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
ADAPTER = REPO / "scripts" / "recovery_conformance_adapter.py"
CATALOGUE_IDS = [f"CR-CORE-00{i}" for i in range(1, 5)] + [f"CR-DURABLE-00{i}" for i in range(1, 8)] + [
    "CR-BOUNDARY-001"
]

pytestmark = pytest.mark.timeout(120)


def _adapter_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("recovery_conformance_adapter", ADAPTER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(args: list[str], stdin: str) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    completed = subprocess.run(
        [sys.executable, str(ADAPTER), *args], input=stdin, capture_output=True, text=True, cwd=REPO, timeout=100
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert len(lines) == 1, completed.stdout  # exactly one JSON object on stdout
    answer = json.loads(lines[0])
    assert isinstance(answer, dict)
    return answer, completed


def _scenario(scenario_id: str, level: str, **extra: Any) -> str:
    return json.dumps(
        {"id": scenario_id, "level": level, "name": "n", "precondition": "p", "faults": ["f"], **extra}
    )


def test_adapter_runs_a_scenario_and_reports_its_exact_tests() -> None:
    answer, completed = _run(["CR-DURABLE-007"], _scenario("CR-DURABLE-007", "durable"))
    mapping = _adapter_module().NATIVE_TESTS
    assert answer == {"scenario_id": "CR-DURABLE-007", "passed": True, "native_tests": mapping["CR-DURABLE-007"]}
    assert "4 passed" in completed.stderr  # pytest's output goes to stderr, and all four ran


def test_adapter_takes_the_id_from_the_last_argument() -> None:
    answer, _ = _run(["--ignored", "CR-DURABLE-007"], _scenario("CR-DURABLE-007", "durable"))
    assert answer["scenario_id"] == "CR-DURABLE-007" and answer["passed"] is True


@pytest.mark.parametrize(
    ("args", "stdin", "why"),
    [
        (["CR-CORE-001"], "{not json", "not JSON"),
        (["CR-CORE-001"], "[1, 2]", "not a JSON object"),
        (["CR-CORE-001"], _scenario("CR-CORE-002", "core"), "does not match"),
        (["CR-CORE-001"], _scenario("CR-CORE-001", "core", expected_requests=["commit"]), "oracle"),
        (["CR-CORE-001"], _scenario("CR-CORE-001", "core", assertions=["x"]), "oracle"),
        (["CR-CORE-001"], _scenario("CR-CORE-001", "core", extra_field=1), "unexpected fields"),
        (["CR-CORE-001"], _scenario("CR-CORE-001", "durable"), "level"),
        (["CR-CORE-999"], _scenario("CR-CORE-999", "core"), "no native tests"),
        (["cr-core-001"], _scenario("cr-core-001", "core"), "malformed"),
        ([], _scenario("CR-CORE-001", "core"), "no scenario id"),
    ],
    ids=["not_json", "not_object", "id_mismatch", "oracle_requests", "oracle_assertions", "extra_field",
         "wrong_level", "unknown_id", "malformed_id", "no_argument"],
)
def test_adapter_refuses_malformed_input(args: list[str], stdin: str, why: str) -> None:
    answer, completed = _run(args, stdin)
    assert answer["passed"] is False and answer["native_tests"] == []
    assert answer["scenario_id"] == (args[-1] if args else "")
    assert why in answer["diagnostic"] and why in completed.stderr
    assert completed.stderr.startswith("recovery adapter:") and completed.stderr.count("\n") == 1  # no pytest run


def test_a_missing_native_test_is_a_failure_not_a_pass() -> None:
    adapter = _adapter_module()
    passed, diagnostic = adapter.run_tests(["tests/test_recovery_scenarios.py::test_cr_core_001_no_such_test"])
    assert passed is False and "test_cr_core_001_no_such_test" in diagnostic


def _collected() -> set[str]:
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "tests/test_recovery_scenarios.py", "tests/test_crash_replay.py"],
        capture_output=True, text=True, cwd=REPO, timeout=100,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return {line.strip() for line in completed.stdout.splitlines() if "::" in line}


def test_every_mapped_native_test_exists_and_every_scenario_test_is_mapped() -> None:
    mapping: dict[str, list[str]] = _adapter_module().NATIVE_TESTS
    assert sorted(mapping) == sorted(CATALOGUE_IDS)
    collected = _collected()
    mapped = [node for nodes in mapping.values() for node in nodes]
    assert len(mapped) == len(set(mapped))  # each test is evidence for one scenario
    assert all(nodes for nodes in mapping.values())
    missing = sorted(set(mapped) - collected)
    assert missing == [], missing  # exact collected ids: a rename cannot leave a stale entry
    # Every test named after a scenario is in that scenario's mapping (none forgotten, none misfiled).
    pattern = re.compile(r"::test_cr_(core|durable|boundary)_(\d{3})_")
    named = [node for node in collected if pattern.search(node)]
    assert len(named) >= len(CATALOGUE_IDS)
    for node in named:
        match = pattern.search(node)
        assert match is not None
        scenario_id = f"CR-{match.group(1).upper()}-{match.group(2)}"
        assert node in mapping[scenario_id], node
