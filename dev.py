#!/usr/bin/env python3
"""Developer entry point: needs only Python 3.10+.

    python3 dev.py demo     # run the demo against the embedded server
    python3 dev.py test     # ruff, mypy --strict and the test suite
    python3 dev.py bench    # print the benchmark figures
    python3 dev.py setup    # only create/refresh .venv

It creates ``.venv`` beside this file on first use and installs the package
with its ``dev``, ``server`` and integration extras into it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".installed"
# Every extra, so that the integration tests run against the real packages.
EXTRAS = "dev,server,openai,anthropic,langchain,agents,fastapi,otel"


def _run(*cmd: str | os.PathLike[str]) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    rc = subprocess.call([str(c) for c in cmd], cwd=ROOT)
    if rc != 0:
        sys.exit(rc)


def ensure_venv() -> None:
    if sys.version_info < (3, 10):  # noqa: UP036 - dev.py may be started by an older python3
        sys.exit("runcycles needs Python 3.10 or newer")
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest and PY.exists():
        return
    if not PY.exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    _run(PY, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-e", f".[{EXTRAS}]")
    STAMP.write_text(digest)


def main(argv: list[str]) -> None:
    cmd = argv[0] if argv else "test"
    rest = argv[1:]
    ensure_venv()
    if cmd == "setup":
        return
    if cmd == "demo":
        _run(PY, "examples/demo.py", *rest)
    elif cmd == "test":
        _run(PY, "-m", "ruff", "check", "runcycles", "tests", "bench", "scripts", "examples", "dev.py")
        _run(PY, "-m", "mypy", "--strict", "runcycles")
        _run(PY, "-m", "pytest", *rest)
    elif cmd == "bench":
        for script in sorted((ROOT / "bench").glob("bench_*.py")):
            _run(PY, script, *rest)
    else:
        sys.exit(f"unknown command {cmd!r}: use demo, test or bench")


if __name__ == "__main__":
    main(sys.argv[1:])
