"""A real ``runcycles serve`` subprocess on a free 127.0.0.1 port, for tests that need the whole program."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Serve:
    """``python -m runcycles serve`` with a seeded tenant ``acme``; ``nofile`` runs it under ``prlimit``."""

    def __init__(self, db: Path | None, *args: str, nofile: int | None = None, budget: int = 10**12) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "runcycles", "serve", "--port", str(self.port), "--tenant", "acme"]
        command += ["--budget", str(budget), "--admin-key", "admin-secret", *args]
        if db is not None:
            command += ["--db", str(db)]
        if nofile is not None:
            command = ["prlimit", f"--nofile={nofile}:{nofile}", *command]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.key = ""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if "X-Cycles-API-Key" in line:
                self.key = line.split()[-1]
            if line.startswith("  export"):
                break
        assert self.key, self.proc.stderr.read() if self.proc.stderr else "no key printed"
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                assert self.proc.poll() is None, "runcycles serve exited during start-up"
                time.sleep(0.05)
        raise AssertionError("runcycles serve did not start listening")

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers={"X-Cycles-API-Key": self.key}, timeout=30, **kwargs)

    def open_fds(self, under: Path | None = None) -> int:
        """Open file descriptors of the server (only those on files under ``under`` if given)."""
        fd_dir = f"/proc/{self.proc.pid}/fd"
        count = 0
        for name in os.listdir(fd_dir):
            try:
                target = os.readlink(f"{fd_dir}/{name}")
            except FileNotFoundError:
                continue
            count += under is None or target.startswith(str(under))
        return count

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """SIGINT (as Ctrl-C) and wait."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> Serve:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_serve(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``runcycles serve`` expecting it to exit by itself (e.g. refusing a damaged database)."""
    command = [sys.executable, "-m", "runcycles", "serve", "--port", str(free_port()), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)
