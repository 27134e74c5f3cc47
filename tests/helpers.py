"""Helpers shared by the tests (fixtures live in conftest.py)."""

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from fastapi import FastAPI
from pydantic.fields import FieldInfo
from sqlalchemy.engine import make_url

import devstack
from api.auth.service import create_access_token
from api.core.config import DEPRECATED_SETTINGS, Settings
from api.core.db import build_engine, use_engine
from api.core.security import password_hash
from api.main import create_app
from api.users.models import User

ROOT = Path(__file__).resolve().parent.parent
SECRET_KEY = secrets.token_urlsafe(48)


def asyncpg_url(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql+asyncpg")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def setting_fields() -> dict[str, FieldInfo]:
    """Settings' fields by the variable that sets each, without DEPRECATED_SETTINGS: those are
    read, but are no settings of their own."""
    return {
        name.upper(): field
        for name, field in Settings.model_fields.items()
        if field.validation_alias not in DEPRECATED_SETTINGS
    }


def settings_for_tests(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"environment": "test", "secret_key": SECRET_KEY, "log_json": False}
    return Settings(_env_file=None, **(values | overrides))


async def admin_execute(
    server_url: str, *statements: str, database: str | None = "postgres"
) -> None:
    """Run statements over a plain asyncpg connection (by default to the server's `postgres`)."""
    conn = await asyncpg.connect(libpq_url(asyncpg_url(server_url, database)))
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def drop_database(server_url: str, name: str, *roles: str) -> None:
    """Drop a test database (its sessions too), then the roles made for it, which belong to
    the whole server."""
    drops = [f'DROP ROLE IF EXISTS "{role}"' for role in roles]
    await admin_execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', *drops)


async def query(database_url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """One statement on a connection of its own, outside the app; its rows (none for most
    writes)."""
    connection = await asyncpg.connect(libpq_url(database_url))
    try:
        rows: list[asyncpg.Record] = await connection.fetch(sql, *args)
        return rows
    finally:
        await connection.close()


async def scalar(database_url: str, sql: str, *args: Any) -> Any:
    """The first column of the first row of one statement."""
    return (await query(database_url, sql, *args))[0][0]


def alembic(
    database_url: str, *args: str, app_role: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the Alembic CLI, as a deployment does, straight against `database_url`; with
    `app_role`, as compose's migrate job does (DB_APP_ROLE)."""
    env = {**os.environ, "MIGRATIONS_DATABASE_URL": database_url, "ENVIRONMENT": "test"}
    if app_role is not None:
        env["DB_APP_ROLE"] = app_role
    env["SECRET_KEY"] = SECRET_KEY
    result = subprocess.run(
        [sys.executable, "-m", "alembic", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The answer is an RFC 9457 problem with this status and stable code, and the id of the
    request it answers."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"urn:storefront:problem:{code}"
    assert body["title"]
    assert body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def error_fields(body: dict[str, Any]) -> set[str]:
    return {error["field"] for error in body["errors"]}


def app_without_database(database_url: str) -> FastAPI:
    """The app with its real engine on a database that is not there, and short timeouts."""
    app = create_app(
        settings_for_tests(database_url=database_url, db_connect_timeout=0.5, db_pool_timeout=1)
    )
    use_engine(app, build_engine(app.state.settings))
    return app


PGBOUNCER_POOL_SIZE = 2  # small, so a check of the server connections sees those that served


@contextlib.contextmanager
def running_pgbouncer(
    server_url: str,
    *,
    max_prepared_statements: int = 0,
    binary: str | None = None,
    auth_secret: str | None = None,
) -> Iterator[devstack.PgBouncer]:
    """A real PgBouncer in transaction mode in front of the server at `server_url`, for its
    login (tracking prepared statements when `max_prepared_statements` is set: PgBouncer >= 1.21
    only), the installed one unless `binary` names another. `auth_secret`: the login's SCRAM
    secret, for a role that cannot read it from pg_authid."""
    url = make_url(server_url)
    workdir = Path(tempfile.mkdtemp(prefix="storefront-pgbouncer-"))
    bouncer = devstack.PgBouncer(
        workdir,
        server_host=url.host or "127.0.0.1",
        server_port=url.port or 5432,
        user=url.username or "postgres",
        password=url.password or "",
        default_pool_size=PGBOUNCER_POOL_SIZE,
        max_prepared_statements=max_prepared_statements,
        binary=binary,
        auth_secret=auth_secret,
    )
    try:
        yield bouncer.start()
    finally:
        bouncer.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def server_connection_statements(
    bouncer: devstack.PgBouncer, database: str
) -> dict[int, int]:
    """Named prepared statements on each of PgBouncer's server connections, by backend pid.

    One transaction per server connection of the pool, all held at once, so each lands on a
    different server connection and together they see every one.
    """
    connections = [
        await asyncpg.connect(libpq_url(bouncer.url(database)), statement_cache_size=0)
        for _ in range(PGBOUNCER_POOL_SIZE)
    ]
    transactions = [connection.transaction() for connection in connections]
    try:
        for transaction in transactions:
            await transaction.start()
        found = {}
        for connection in connections:
            row = await connection.fetchrow(
                "SELECT pg_backend_pid() AS pid, count(*) AS n FROM pg_prepared_statements"
            )
            assert row is not None
            found[row["pid"]] = row["n"]
        return found
    finally:
        for transaction in transactions:
            await transaction.rollback()
        for connection in connections:
            await connection.close()


async def until_one_waits_for_a_lock(database_url: str, request: asyncio.Future[Any]) -> bool:
    """Poll `database_url`'s backends every 10 ms (for up to 10 s, on one connection of its own)
    until one of them waits for a lock, or `request` is done: whether one waits."""
    prober = await asyncpg.connect(libpq_url(database_url))
    try:
        for _ in range(1000):
            waiting: int = await prober.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
            if waiting or request.done():
                return waiting > 0
            await asyncio.sleep(0.01)
        return False
    finally:
        await prober.close()


async def users_burst(
    client: httpx.AsyncClient, database_url: str, *, size: int, prefix: str, passes: int = 1
) -> list[tuple[int, str]]:
    """`size` sign-ups at once (each must be a 201), then, `passes` times, as a superuser and all
    at once: a read of each new user, `size` pages of the list and an update of each. The reads
    and updates that did not answer 200, as (status, body)."""
    creates = await asyncio.gather(
        *(
            client.post(
                "/users/",
                json={
                    "username": f"{prefix}_{i}",
                    "email": f"{prefix}{i}@example.com",
                    "password": "p" * 12,
                },
            )
            for i in range(size)
        )
    )
    assert [r.status_code for r in creates] == [201] * size, creates[0].text
    ids = [r.json()["id"] for r in creates]
    admin = await live_admin(client, database_url)
    failures = []
    for _ in range(passes):
        mixed = await asyncio.gather(
            *(client.get(f"/users/{user_id}", headers=admin) for user_id in ids),
            *(
                client.get("/users/", params={"page": 1 + i % 3, "size": 10}, headers=admin)
                for i in range(size)
            ),
            *(
                client.patch(f"/users/{user_id}", json={"bio": f"bio {user_id}"}, headers=admin)
                for user_id in ids
            ),
        )
        failures += [(r.status_code, r.text) for r in mixed if r.status_code != 200]
    return failures


SECRET_PATTERNS = [
    re.compile(r"\$argon2(id|i|d)\$"),  # a password hash
    re.compile(r"eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+"),  # a JWT
]


async def refuse_secrets(response: httpx.Response) -> None:
    """No answer carries a password hash or a token, but the login's own token."""
    body = (await response.aread()).decode(errors="replace")
    if response.request.url.path == "/auth/token" and response.status_code == 200:
        return
    for pattern in SECRET_PATTERNS:
        assert not pattern.search(body), f"{response.request.url.path} answered a secret"


def bearer(user: User) -> dict[str, str]:
    token = create_access_token(user=user, settings=settings_for_tests())
    return {"Authorization": f"Bearer {token.access_token}"}


def client_for(app: FastAPI, user: User | None = None) -> httpx.AsyncClient:
    """An in-process client for `app`, as `user` (anonymous without one)."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://test",
        headers=bearer(user) if user else None,
        event_hooks={"response": [refuse_secrets]},
    )


async def log_in(http: httpx.AsyncClient, username: str, password: str) -> dict[str, str]:
    """The bearer header of a login through `POST /auth/token` (username or email)."""
    login = await http.post("/auth/token", data={"username": username, "password": password})
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


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
