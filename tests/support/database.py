"""A test database (Database) and reaching it outside the app: URLs for asyncpg and libpq,
statements as the superuser, queries on a connection of their own, dropping a test database, the
Alembic CLI, and sessions that commit to a savepoint of the test's transaction."""

import os
import subprocess
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import asyncpg
from fastapi import FastAPI
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from api.dbroles import Login
from tests.support.app import ROOT, SECRET_KEY


def asyncpg_url(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql+asyncpg")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass
class Database:
    server_url: str
    name: str
    # Set on a database arranged as deployments arrange it (make_production_database).
    owner: Login | None = None
    app: Login | None = None
    app_secret: str | None = None  # the app role's SCRAM secret, for PgBouncer's auth file

    @property
    def url(self) -> str:
        """The superuser's URL to this database."""
        return asyncpg_url(self.server_url, self.name)

    def url_as(self, login: Login) -> str:
        url = make_url(self.url).set(username=login.role, password=login.password)
        return url.render_as_string(hide_password=False)

    @property
    def app_url(self) -> str:
        """The app role's direct URL (a PgBouncer in front logs in with the same login)."""
        assert self.app is not None, "not a production-shaped database"
        return self.url_as(self.app)


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


def savepoint_sessions(connection: AsyncConnection) -> async_sessionmaker[AsyncSession]:
    """Sessions whose commit and rollback act on a savepoint inside the test's transaction."""
    return async_sessionmaker(
        bind=connection,
        class_=AsyncSession,
        join_transaction_mode="create_savepoint",
        expire_on_commit=False,
    )


def in_transaction(app: FastAPI, connection: AsyncConnection) -> FastAPI:
    """`app` whose requests run inside the test's transaction on `connection`: their sessions
    on savepoints of it, their Core reads on it (left open)."""
    app.state.sessionmaker = app.state.read_sessionmaker = savepoint_sessions(connection)
    app.state.read_connection = lambda: nullcontext(connection)
    return app
