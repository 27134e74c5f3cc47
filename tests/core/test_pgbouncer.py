"""The production connection path: a real uvicorn on NullPool, through a real PgBouncer 1.18 in
transaction mode (which does not track prepared statements). These tests commit, side by side.
"""

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

import devstack
from api.main import create_app
from tests.support.app import settings_for_tests
from tests.support.client import client_for, error_fields
from tests.support.concurrency import users_burst
from tests.support.database import Database, scalar
from tests.support.live_server import live_admin, serving
from tests.support.pgbouncer import (
    PGBOUNCER_POOL_SIZE,
    running_pgbouncer,
    server_connection_statements,
)

pytestmark = [pytest.mark.pgbouncer, pytest.mark.concurrent]

CONCURRENCY = 60


@pytest.fixture(scope="module")
def pooled_server(
    concurrent_database: Database,
    app_pgbouncer: devstack.PgBouncer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """uvicorn with a small app-side pool in front of the same PgBouncer (1.18, no tracking)."""
    log_dir = tmp_path_factory.mktemp("pooled")
    pool = {"DB_POOL": "queue", "DB_POOL_SIZE": "4"}
    with serving(concurrent_database, app_pgbouncer, log_dir, **pool) as url:
        yield url


@pytest.fixture(params=["nullpool", "app-side pool"])
def server(request: pytest.FixtureRequest) -> str:
    """The API behind PgBouncer, on NullPool (the default) or with a small pool of its own."""
    fixture = "live_server" if request.param == "nullpool" else "pooled_server"
    url: str = request.getfixturevalue(fixture)
    return url


async def test_a_burst_of_requests_leaves_no_statement_behind(
    server: str, app_pgbouncer: devstack.PgBouncer, committed: Database
) -> None:
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=server, limits=limits, timeout=60) as client:
        failures = await users_burst(client, committed.url, size=CONCURRENCY, prefix="burst")

    assert failures == []
    statements = await server_connection_statements(app_pgbouncer, committed.name)
    assert len(statements) == PGBOUNCER_POOL_SIZE
    assert statements == dict.fromkeys(statements, 0)


async def test_users_round_trip_commits_through_pgbouncer(
    live_server: str, committed: Database
) -> None:
    """Each request its own transaction, each on whichever server connection PgBouncer gives."""
    alice = {"username": "alice", "email": "alice@example.com", "password": "p" * 12}
    async with httpx.AsyncClient(base_url=live_server, timeout=30) as anonymous:
        created = await anonymous.post("/users/", json=alice)
        admin = await live_admin(anonymous, committed.url)
    async with httpx.AsyncClient(base_url=live_server, timeout=30, headers=admin) as client:
        assert created.status_code == 201
        user_id = created.json()["id"]
        assert (await client.post("/users/", json=alice)).status_code == 409
        assert (await client.get(f"/users/{user_id}")).json()["username"] == "alice"
        patched = await client.patch(f"/users/{user_id}", json={"full_name": "Alice A."})
        assert patched.json()["full_name"] == "Alice A."
        listed = (await client.get("/users/")).json()
        assert listed["total"] == 2  # alice and the superuser
        assert listed["items"][0]["full_name"] == "Alice A."
        assert (await client.delete(f"/users/{user_id}")).status_code == 204
        assert (await client.get(f"/users/{user_id}")).status_code == 404
        assert (await client.get("/users/")).json()["total"] == 1


async def test_concurrent_creates_of_one_email_give_exactly_one_201(
    live_server: str, committed: Database
) -> None:
    emails = ["same@example.com", "SAME@example.com", "Same@Example.com"]
    async with httpx.AsyncClient(base_url=live_server, timeout=60) as client:
        responses = await asyncio.gather(
            *(
                client.post(
                    "/users/",
                    json={"username": f"racer_{i}", "email": emails[i % 3], "password": "p" * 12},
                )
                for i in range(30)
            )
        )

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 29
    for response in responses:
        if response.status_code == 409:
            assert error_fields(response.json()) == {"email"}
    count = await scalar(
        committed.url, "SELECT count(*) FROM users WHERE lower(email) = 'same@example.com'"
    )
    assert count == 1


@pytest.fixture
def private_pgbouncer(postgres_server: str) -> Iterator[devstack.PgBouncer]:
    """A PgBouncer of this test's own, so statements it leaves behind cannot leak elsewhere."""
    with running_pgbouncer(postgres_server) as bouncer:
        yield bouncer


async def test_the_check_sees_statements_that_asyncpg_defaults_leave_behind(
    private_pgbouncer: devstack.PgBouncer, committed: Database
) -> None:
    """The check above can fail: asyncpg's default statement cache leaves named statements."""
    engine = create_async_engine(private_pgbouncer.url(committed.name), poolclass=NullPool)
    try:
        for i in range(5):
            async with engine.begin() as connection:
                await connection.execute(text("SELECT count(*) FROM users WHERE id > :i"), {"i": i})
    finally:
        await engine.dispose()

    statements = await server_connection_statements(private_pgbouncer, committed.name)
    assert sum(statements.values()) > 0


@pytest.mark.parametrize(("pre_ping", "failed"), [(True, 0), (False, 1)])
async def test_a_pgbouncer_restart_under_an_app_side_pool(
    committed: Database, pre_ping: bool, failed: int
) -> None:
    """DB_POOL_PRE_PING=true replaces the pooled connection PgBouncer's restart closed before
    lending it; false fails the one request that finds it closed, and the pool then reconnects.
    The app's event loop runs through the restart, as a server's does, so the close reaches
    asyncpg."""
    with running_pgbouncer(committed.server_url) as bouncer:
        settings = settings_for_tests(
            database_url=bouncer.url(committed.name),
            db_pool="queue",
            db_statement_cache=False,
            db_pool_size=1,
            db_max_overflow=0,
            db_pool_pre_ping=pre_ping,
        )
        app = create_app(settings)
        async with LifespanManager(app), client_for(app) as client:
            assert (await client.get("/products/999999")).status_code == 404
            await asyncio.to_thread(bouncer.stop)
            await asyncio.to_thread(bouncer.start)  # on the same port
            answers = [(await client.get("/products/999999")).status_code for _ in range(4)]
    assert answers == [503] * failed + [404] * (4 - failed)
