"""Each framework integration imports its own framework and no other; `import runcycles` imports none; a
missing extra is named in the error; the examples run with no network and no key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FRAMEWORKS = ["fastapi", "langchain", "langchain_core", "langgraph", "agents", "openai", "anthropic"]

PROBE = """
import json, sys
{statement}
print(json.dumps({{name: name in sys.modules for name in {names!r}}}))
"""


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def _probe(statement: str) -> dict[str, bool]:
    completed = _run(PROBE.format(statement=statement, names=FRAMEWORKS))
    assert completed.returncode == 0, completed.stderr
    result: dict[str, bool] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def _loaded(statement: str) -> set[str]:
    return {name for name, present in _probe(statement).items() if present}


def test_import_runcycles_imports_no_framework() -> None:
    assert _loaded("import runcycles, runcycles.integrations") == set()


def test_fastapi_integration_imports_fastapi_only() -> None:
    assert _loaded("import runcycles.integrations.fastapi") == {"fastapi"}


def test_langchain_integration_imports_langchain_only() -> None:
    assert _loaded("import runcycles.integrations.langchain") == {"langchain", "langchain_core", "langgraph"}


def test_agents_integration_imports_the_agents_sdk_only() -> None:
    # The Agents SDK itself imports openai; the integration adds nothing beyond what `import agents` loads
    # (one process: importing the SDK takes seconds).
    code = (
        "import json, sys\n"
        "before = set(sys.modules)\n"
        "import runcycles.integrations.agents\n"
        "sdk = {n for n in sys.modules if n.split('.')[0] in ('agents', 'openai')}\n"
        f"print(json.dumps({{'loaded': sorted({{n for n in {FRAMEWORKS!r} if n in sys.modules}}),"
        " 'others': sorted({n.split('.')[0] for n in set(sys.modules) - before - sdk})}))"
    )
    completed = _run(code)
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["loaded"] == ["agents", "openai"]
    # Nothing from another framework came along (the SDK's own dependencies aside).
    assert not {"fastapi", "langchain", "langchain_core", "langgraph", "anthropic"} & set(result["others"])


@pytest.mark.parametrize(
    ("module", "blocked", "extra"),
    [("fastapi", "fastapi", "fastapi"), ("langchain", "langchain_core", "langchain"), ("agents", "agents", "agents")],
)
def test_a_missing_extra_is_named(module: str, blocked: str, extra: str) -> None:
    completed = _run(f"import sys; sys.modules[{blocked!r}] = None; import runcycles.integrations.{module}")
    assert completed.returncode != 0
    assert f"pip install 'runcycles[{extra}]'" in completed.stderr


@pytest.mark.parametrize(
    ("example", "expected"),
    [
        ("fastapi_app.py", ["1. /complete -> 200", "2. /stream   -> 200",
                            "3. /complete -> 402 application/problem+json"]),
        ("langchain_agent.py", ["denied by the budget", "1. agent finished; spent $0.001063",
                                "turn cap of 3 model turns was reached"]),
        ("openai_agents.py", ["3 model calls, spent $0.000294 and 5 risk points",
                              "refused before the run: BUDGET_EXCEEDED; model requests: 0"]),
    ],
)
def test_examples_run_offline(example: str, expected: list[str]) -> None:
    completed = subprocess.run(
        [sys.executable, str(ROOT / "examples" / example)], cwd=ROOT, capture_output=True, text=True, timeout=120,
        check=False, env={"PATH": "/usr/bin:/bin", "HOME": str(ROOT), "NO_PROXY": "*"},
    )
    assert completed.returncode == 0, completed.stderr
    for line in expected:
        assert line in completed.stdout, completed.stdout


def test_framework_examples_pass_mypy_strict() -> None:
    # The integrations keep user code typed: decorated endpoints keep their signatures, middleware lists
    # type-check against create_agent, hooks and guardrails against the Agents SDK.
    examples = [str(ROOT / "examples" / name) for name in ("fastapi_app.py", "langchain_agent.py", "openai_agents.py")]
    completed = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", *examples], cwd=ROOT, capture_output=True, text=True,
        timeout=300, check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
