"""A real uvicorn process for the tests that commit (serving), and a superuser written straight
to its database and logged in through it."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

import devstack
from api.core.security import password_hash
from tests.support.app import ROOT, SECRET_KEY
from tests.support.client import log_in
from tests.support.database import Database, query

ADMIN_PASSWORD = "admin-password-for-tests"


async def live_admin(client: httpx.AsyncClient, database_url: str) -> dict[str, str]:
    """A superuser written straight to the database, logged in through the live server."""
    await query(
        database_url,
        "INSERT INTO users (username, email, hashed_password, is_superuser)"
        " VALUES ('boss', 'boss@example.com', $1, true)",
        password_hash.hash(ADMIN_PASSWORD),
    )
    return await log_in(client, "boss", ADMIN_PASSWORD)


@contextmanager
def serving(
    database: "Database",
    pgbouncer: devstack.PgBouncer,
    log_dir: Path,
    launcher: bool = False,
    /,
    **env_overrides: str,
) -> Iterator[str]:
    """A real uvicorn process with the production engine settings, through the real PgBouncer
    (as the role it logs in as), on `database`; its base URL. `launcher`: started as the image
    starts it, through `python -m api serve`."""
    port = devstack.free_port()
    env = {
        **os.environ,
        "ENVIRONMENT": "test",
        "SECRET_KEY": SECRET_KEY,
        "DATABASE_URL": pgbouncer.url(database.name),
        "DB_POOL": "null",
        "DB_STATEMENT_CACHE": "false",
        "MIGRATIONS_DATABASE_URL": database.url,
        "LOG_JSON": "false",
        **env_overrides,
    }
    command = [sys.executable, "-m", *(["api", "serve"] if launcher else ["uvicorn"])]
    command += ["--factory", "api.main:create_app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    # Idle keep-alive connections outlive the test's pauses: with uvicorn's 5 s default, a slow
    # run can reuse a connection at the moment the server closes it (a client-side ReadError).
    command += ["--timeout-keep-alive", "75"]
    log = log_dir / "uvicorn.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=devstack.child_setup(None, signal.SIGTERM),
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while not _answers(f"{url}/health"):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"uvicorn did not start:\n{log.read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        devstack.terminate(process, signal.SIGTERM)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False
