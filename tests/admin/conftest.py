"""Fixtures for the admin client and operator CLI tests: `runcycles serve` as a real subprocess on a free
127.0.0.1 port (one per session), and a fresh in-process embedded server per test."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import attrs
import httpx
import pytest

from runcycles.local import LocalCyclesServer

ROOT = Path(__file__).resolve().parents[2]
ADMIN_KEY = "admin-cli-test-key"


@attrs.frozen
class Served:
    """A running `runcycles serve`."""

    base_url: str
    admin_key: str
    process: subprocess.Popen[bytes]
    log: Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(served: Served, deadline_s: float = 30.0) -> None:
    """Poll until the server answers (an external process offers no event to wait on)."""
    end = time.monotonic() + deadline_s
    with httpx.Client(base_url=served.base_url, headers={"X-Admin-API-Key": served.admin_key}) as http:
        while True:
            if served.process.poll() is not None:
                pytest.fail(f"runcycles serve exited with {served.process.returncode}: {served.log.read_text()}")
            try:
                if http.get("/v1/admin/tenants").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > end:
                pytest.fail("runcycles serve did not start listening")
            time.sleep(0.05)


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with log.open("wb") as sink:  # a file, not a pipe: nobody reads while it runs
        process = subprocess.Popen(
            [sys.executable, "-m", "runcycles", "serve", "--port", str(port), "--admin-key", ADMIN_KEY],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    running = Served(f"http://127.0.0.1:{port}", ADMIN_KEY, process, log)
    try:
        _wait_ready(running)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def server() -> Iterator[LocalCyclesServer]:
    srv = LocalCyclesServer(admin_key=ADMIN_KEY)
    yield srv
    srv.close()


@pytest.fixture
def tenant_id() -> str:
    """A tenant id no other test uses (the served server lives for the whole session)."""
    return f"t-{uuid.uuid4().hex[:10]}"
