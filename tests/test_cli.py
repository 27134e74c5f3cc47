"""`python -m devstack serve`, the stack behind `make run`: it serves through PgBouncer, stops
everything it started on SIGTERM (status 0, to it or to uvicorn alone), keeps its data, starts
again after being killed, and supervises its servers: a killed PgBouncer or PostgreSQL is started
again and service comes back; one that keeps dying stops the stack."""

import asyncio
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import devstack
from devstack.serve import RESTARTS
from tests.support.client import log_in
from tests.support.make_run import make_run, start, wait_gone, wait_ready

pytestmark = [pytest.mark.concurrent, pytest.mark.pgbouncer]


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
        assert "deprecated" not in log.read_text(), "make run sets DB_POOL, DB_STATEMENT_CACHE"
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
    with make_run(tmp_path) as local:
        process, data, log, url = local.process, local.data, local.log, local.url
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


def test_a_server_that_keeps_dying_stops_the_stack(tmp_path: Path) -> None:
    with make_run(tmp_path) as local:
        pidfile = local.data / PIDFILES["PgBouncer"]
        for _ in range(RESTARTS):
            old = pid_in(pidfile)
            os.kill(old, signal.SIGKILL)
            until_replaced(pidfile, old, local.url, local.process)
        os.kill(pid_in(pidfile), signal.SIGKILL)  # one death more than it starts again
        assert local.process.wait(timeout=60) == 1
        assert f"PgBouncer needed {RESTARTS} starts within" in local.log.read_text()


def test_sigterm_to_uvicorn_alone_is_a_clean_stop(tmp_path: Path) -> None:
    """A stop by signal is a normal exit: status 0, not uvicorn's re-raised SIGTERM."""
    with make_run(tmp_path) as local:
        uvicorns = [
            int(child.name)
            for child in Path("/proc").iterdir()
            if child.name.isdigit()
            and parent_of(child) == local.process.pid
            and "-m uvicorn " in cmdline(child)
        ]
        assert len(uvicorns) == 1, [cmdline(Path(f"/proc/{pid}")) for pid in uvicorns]
        os.kill(uvicorns[0], signal.SIGTERM)
        assert local.process.wait(timeout=60) == 0


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


FREEZE_SECONDS = 20
COMMAND_TIMEOUT = 15.0  # the setting's default, which make run keeps
CLOSE_SECONDS = 2.0  # SQLAlchemy's wait to close the stuck connection (see .env.example)
ADMIN = {"email": "freezer@example.com", "password": secrets.token_urlsafe(16)}


@contextmanager
def frozen(postmaster: int) -> Iterator[None]:
    """PostgreSQL stopped whole (SIGSTOP): the postmaster and every process it forked, which
    run in sessions of their own (killpg would reach the postmaster alone)."""
    family = [postmaster] + [
        int(proc.name)
        for proc in Path("/proc").iterdir()
        if proc.name.isdigit() and parent_of(proc) == postmaster
    ]
    for pid in family:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in family:
            os.kill(pid, signal.SIGCONT)


@dataclass
class Answer:
    sent: float
    took: float
    status: int
    problem: bool
    retry_after: bool
    code: str | None


async def test_a_frozen_postgres_costs_503s_then_service_comes_back(tmp_path: Path) -> None:
    """PostgreSQL frozen for 20 s under reads and orders (the driver's command timeout, 15 s,
    cancels what waits): every answer is a success or a 503 problem, none later than the command
    timeout plus the close of the stuck connection, service comes back once it thaws (whatever
    PgBouncer does: make run starts it again if it dies), and orders and stock agree."""
    superuser = {
        "FIRST_SUPERUSER_EMAIL": ADMIN["email"],
        "FIRST_SUPERUSER_PASSWORD": ADMIN["password"],
    }
    with make_run(tmp_path, **superuser) as local:
        process, data, log = local.process, local.data, local.log
        async with httpx.AsyncClient(base_url=local.url, timeout=90) as http:
            admin = await log_in(http, ADMIN["email"], ADMIN["password"])
            product = {"name": "Ice", "slug": "ice", "price": "1.00", "sku": "ICE-1"}
            created = await http.post(
                "/products/", json=product | {"stock_quantity": 1_000_000}, headers=admin
            )
            assert created.status_code == 201, created.text
            product_id = created.json()["id"]
            buyer = {"username": "buyer", "email": "buyer@example.com", "password": "p" * 12}
            assert (await http.post("/users/", json=buyer)).status_code == 201
            customer = await log_in(http, "buyer", "p" * 12)

            answers: list[Answer] = []
            placed: list[int] = []
            stopping = asyncio.Event()
            started = time.monotonic()

            async def client(n: int) -> None:
                while not stopping.is_set():
                    sent = time.monotonic() - started
                    if n % 2:
                        order = {"items": [{"product_id": product_id, "quantity": 1}]}
                        response = await http.post("/orders/", json=order, headers=customer)
                    else:
                        response = await http.get(f"/products/{product_id}")
                    took = time.monotonic() - started - sent
                    problem = response.headers.get("content-type") == "application/problem+json"
                    answers.append(
                        Answer(
                            sent,
                            took,
                            response.status_code,
                            problem,
                            "retry-after" in response.headers,
                            response.json().get("code") if problem else None,
                        )
                    )
                    if response.status_code == 201:
                        placed.append(response.json()["id"])
                    elif response.status_code != 200:
                        await asyncio.sleep(0.2)

            clients = [asyncio.create_task(client(n)) for n in range(10)]
            await asyncio.sleep(2)
            with frozen(pid_in(data / PIDFILES["PostgreSQL"])):
                await asyncio.sleep(FREEZE_SECONDS)
            thawed = time.monotonic() - started
            back = await until_serving(http, product_id, thawed, started)
            stopping.set()
            await asyncio.gather(*clients)

            restarts = log.read_text().count("starting PgBouncer again")
            print(
                f"PostgreSQL frozen {FREEZE_SECONDS} s: serving again {back:.1f} s after it thawed;"
                f" {sum(a.status == 503 for a in answers)} of {len(answers)} answers were 503"
                f" ({sum(a.code == 'outcome_unknown' for a in answers)} outcome_unknown),"
                f" the slowest in {max(a.took for a in answers):.1f} s;"
                f" PgBouncer started again {restarts} times"
            )
            assert back < 30
            for answer in answers:
                assert answer.status in {200, 201} or (
                    answer.status == 503 and answer.problem and answer.retry_after
                ), answer
            assert max(a.took for a in answers) < COMMAND_TIMEOUT + CLOSE_SECONDS + 3
            assert any(a.status == 503 for a in answers), "the freeze was felt"

            for order_id in placed:  # every order told 201 is there
                assert (await http.get(f"/orders/{order_id}", headers=customer)).status_code == 200
            listed = await http.get("/orders/", params={"size": 1}, headers=customer)
            orders = listed.json()["total"]
            assert orders >= len(placed)  # a 503 may hide a commit: never the reverse
            # Only an outcome_unknown may hide one: a database_unavailable order never stands.
            unknown = sum(a.code == "outcome_unknown" for a in answers)
            assert orders <= len(placed) + unknown, (orders, len(placed), unknown)
            stock = (await http.get(f"/products/{product_id}")).json()["stock_quantity"]
            assert stock == 1_000_000 - orders  # each order that exists took its unit, no other
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 60) == 0


async def until_serving(
    http: httpx.AsyncClient, product_id: int, since: float, started: float
) -> float:
    """Seconds from `since` to the first of 20 successful reads in a row (at most 60)."""
    streak = 0
    while streak < 20:
        now = time.monotonic() - started
        assert now - since < 60, "not serving 60 s after the thaw"
        try:
            ok = (await http.get(f"/products/{product_id}", timeout=5)).status_code == 200
        except httpx.TransportError:
            ok = False
        streak = streak + 1 if ok else 0
        if streak == 1:
            first = now
        if not ok:
            await asyncio.sleep(0.1)
    return first - since
