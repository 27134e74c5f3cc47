"""`python -m devstack serve`, the stack behind `make run`: it serves through PgBouncer, stops
everything it started on SIGTERM (status 0, to it or to uvicorn alone), keeps its data, starts
again after being killed, and supervises its servers: a killed PgBouncer or PostgreSQL is started
again and service comes back; one that keeps dying stops the stack."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import devstack
from devstack.serve import RESTARTS
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


def pid_in(pidfile: Path) -> int:
    return int(pidfile.read_text().split()[0])


def until_replaced(pidfile: Path, old: int, url: str, process: subprocess.Popen[bytes]) -> float:
    """Seconds until a new process of `pidfile` runs and the API is ready again (at most 60)."""
    started = time.monotonic()
    while time.monotonic() - started < 60:
        assert process.poll() is None, "the stack stopped"
        try:
            new = pid_in(pidfile)
            if new != old and httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return time.monotonic() - started
        except (OSError, ValueError, IndexError, httpx.TransportError):
            pass
        time.sleep(0.1)
    pytest.fail(f"not back in 60 s after {pidfile.name}'s process was killed")


PIDFILES = {
    "PgBouncer": Path("pgbouncer") / "pgbouncer.pid",
    "PostgreSQL": Path("postgres") / "cluster" / "postmaster.pid",
}


def test_a_killed_pgbouncer_and_a_killed_postgres_are_started_again(tmp_path: Path) -> None:
    data, log = tmp_path / "data", tmp_path / "serve.log"
    port = devstack.free_port()
    url = f"http://127.0.0.1:{port}"
    process = start(data, port, log)
    try:
        wait_ready(url, process, log)
        created = httpx.post(
            f"{url}/users/",
            json={"username": "keeper", "email": "keeper@example.com", "password": "p" * 12},
        )
        assert created.status_code == 201, created.text
        for name, pidfile in PIDFILES.items():
            old = pid_in(data / pidfile)
            os.kill(old, signal.SIGKILL)
            back = until_replaced(data / pidfile, old, url, process)
            print(f"{name} killed: serving again after {back:.1f} s")
            assert back < 30
            assert not Path(f"/proc/{old}").exists(), f"{name}'s process {old} was not reaped"
            assert f"{name} was killed by SIGKILL" in log.read_text()
            assert f"starting {name} again (1 of {RESTARTS})" in log.read_text()
        assert logged_in_username(url) == "keeper"  # the data survived both
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        devstack.terminate(process, signal.SIGTERM, timeout=60)
    assert wait_gone(data, port) == []


def test_a_server_that_keeps_dying_stops_the_stack(tmp_path: Path) -> None:
    data, log = tmp_path / "data", tmp_path / "serve.log"
    port = devstack.free_port()
    url = f"http://127.0.0.1:{port}"
    pidfile = data / PIDFILES["PgBouncer"]
    process = start(data, port, log)
    try:
        wait_ready(url, process, log)
        for _ in range(RESTARTS):
            old = pid_in(pidfile)
            os.kill(old, signal.SIGKILL)
            until_replaced(pidfile, old, url, process)
        os.kill(pid_in(pidfile), signal.SIGKILL)  # one death more than it starts again
        assert process.wait(timeout=60) == 1
        assert f"PgBouncer needed {RESTARTS} starts within" in log.read_text()
    finally:
        devstack.terminate(process, signal.SIGTERM, timeout=60)
    assert wait_gone(data, port) == []


def test_sigterm_to_uvicorn_alone_is_a_clean_stop(tmp_path: Path) -> None:
    """A stop by signal is a normal exit: status 0, not uvicorn's re-raised SIGTERM."""
    data, log = tmp_path / "data", tmp_path / "serve.log"
    port = devstack.free_port()
    process = start(data, port, log)
    try:
        wait_ready(f"http://127.0.0.1:{port}", process, log)
        uvicorns = [
            int(child.name)
            for child in Path("/proc").iterdir()
            if child.name.isdigit()
            and parent_of(child) == process.pid
            and "-m uvicorn " in cmdline(child)
        ]
        assert len(uvicorns) == 1, [cmdline(Path(f"/proc/{pid}")) for pid in uvicorns]
        os.kill(uvicorns[0], signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        devstack.terminate(process, signal.SIGTERM, timeout=60)
    assert wait_gone(data, port) == []


def parent_of(proc: Path) -> int:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
