"""make run's stack in the tests: `python -m devstack serve` started on a data directory of
its own, waited for, and checked to leave nothing behind."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import devstack
from tests.support.app import ROOT


def start(data: Path, port: int, log: Path, **env: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devstack",
                "serve",
                "--port",
                str(port),
                "--data-dir",
                str(data),
            ],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> dict[str, object]:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            response = httpx.get(f"{url}/health/ready", timeout=2)
            if response.status_code == 200:
                body: dict[str, object] = response.json()
                return body
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    pytest.fail(f"not ready in 90 s:\n{log.read_text()}")


def leftovers(data: Path, port: int) -> list[str]:
    """Processes still running from this data directory, and whether the port still answers."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(data) in cmdline and "devstack serve" not in cmdline:
            found.append(cmdline)
    try:
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
        found.append(f"something still answers on port {port}")
    except httpx.TransportError:
        pass
    return found


def wait_gone(data: Path, port: int) -> list[str]:
    deadline = time.monotonic() + 30
    while (left := leftovers(data, port)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@dataclass
class Local:
    """make run's stack, ready: its process, data directory, log and URL."""

    process: subprocess.Popen[bytes]
    data: Path
    log: Path
    url: str


@contextmanager
def make_run(tmp_path: Path, **env: str) -> Iterator[Local]:
    """The stack started on a data directory of its own and ready; stopped afterwards, and
    nothing of it left running."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    data, log = tmp_path / "data", tmp_path / "serve.log"
    port = devstack.free_port()
    url = f"http://127.0.0.1:{port}"
    process = start(data, port, log, **env)
    try:
        wait_ready(url, process, log)
        yield Local(process, data, log, url)
    finally:
        devstack.terminate(process, signal.SIGTERM, timeout=60)
    assert wait_gone(data, port) == []
