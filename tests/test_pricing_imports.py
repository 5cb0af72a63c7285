"""`runcycles` and `runcycles.pricing` never import a provider SDK; guards name their extra when it is missing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SDKS = ["openai", "anthropic", "httpx2", "tiktoken"]

PROBE = """
import json, sys
{statement}
print(json.dumps({{name: name in sys.modules for name in {names!r}}}))
"""


def _probe(statement: str) -> dict[str, bool]:
    completed = subprocess.run(
        [sys.executable, "-c", PROBE.format(statement=statement, names=SDKS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, bool] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def test_import_runcycles_and_pricing_imports_no_provider_sdk() -> None:
    assert _probe("import runcycles, runcycles.pricing") == {name: False for name in SDKS}


def test_importing_the_integration_modules_defers_the_sdks_to_the_first_guard() -> None:
    loaded = _probe("import runcycles.integrations.openai, runcycles.integrations.anthropic")
    assert loaded == {name: False for name in SDKS}


def test_the_probe_sees_a_provider_import() -> None:
    assert _probe("import runcycles.pricing, openai")["openai"] is True
