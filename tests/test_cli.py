"""`python -m devstack serve`, the stack behind `make run`: it serves through PgBouncer, stops
everything it started on SIGTERM, keeps its data, and starts again after being killed."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import devstack
from tests.helpers import ROOT

pytestmark = [pytest.mark.concurrent, pytest.mark.pgbouncer]


def start(data: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
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


def logged_in_username(url: str) -> str:
    login = httpx.post(
        f"{url}/auth/token", data={"username": "keeper", "password": "p" * 12}, timeout=10
    )
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]
    me = httpx.get(f"{url}/users/me", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    username: str = me.json()["username"]
    return username


def test_serve_local_stops_cleanly_keeps_data_and_survives_a_kill(tmp_path: Path) -> None:
    data, log = tmp_path / "data", tmp_path / "serve.log"
    port = devstack.free_port()
    url = f"http://127.0.0.1:{port}"

    process = start(data, port, log)
    try:
        ready = wait_ready(url, process, log)
        assert ready["pool_mode"] == "null", "make run puts PgBouncer in front when installed"
        created = httpx.post(
            f"{url}/users/",
            json={"username": "keeper", "email": "keeper@example.com", "password": "p" * 12},
        )
        assert created.status_code == 201, created.text
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        assert wait_gone(data, port) == []

        process = start(data, port, log)
        wait_ready(url, process, log)
        assert logged_in_username(url) == "keeper"

        process.kill()  # a crash: no chance to clean up; its children die with it
        process.wait()
        assert wait_gone(data, port) == []

        process = start(data, port, log)
        wait_ready(url, process, log)
        assert logged_in_username(url) == "keeper"
    finally:
        # After a failed assertion above: stop it (its children follow).
        devstack.terminate(process, signal.SIGTERM, timeout=60)
    assert wait_gone(data, port) == []
