"""The provider examples run as users run them (no network, no key), and type-check under mypy --strict with the
guarded clients keeping the SDKs' types."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ["openai_chat.py", "openai_stream.py", "anthropic_stream.py"]
TYPED = [*(f"examples/{name}" for name in EXAMPLES), "examples/fake_providers.py", "tests/providers/typing_check.py"]

pytestmark = pytest.mark.timeout(120)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=110, check=False)


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs(name: str) -> None:
    completed = run(f"examples/{name}")
    assert completed.returncode == 0, completed.stderr
    assert "answer: Budgets keep agents honest" in completed.stdout
    assert "budget spent: " in completed.stdout


def test_the_stream_example_shows_the_caps_applied() -> None:
    completed = run("examples/openai_stream.py")
    assert "the provider received max_tokens=64, tools=['search']" in completed.stdout


def test_examples_pass_mypy_strict() -> None:
    completed = run("-m", "mypy", "--strict", *TYPED)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_mypy_sees_a_wrong_client_type(tmp_path: Path) -> None:
    # Guards the check above: were guard_openai typed as returning Any, this would pass too.
    wrong = tmp_path / "wrong.py"
    wrong.write_text(
        "import openai\n"
        "from typing_extensions import assert_type\n"
        "from runcycles.integrations.openai import guard_openai\n"
        "from runcycles.pricing import PriceTable\n"
        "assert_type(guard_openai(openai.OpenAI(api_key='k'), prices=PriceTable({})), openai.AsyncOpenAI)\n"
    )
    completed = run("-m", "mypy", "--strict", str(wrong))
    assert completed.returncode == 1
    assert "[assert-type]" in completed.stdout and "is of type \"OpenAI\"" in completed.stdout
