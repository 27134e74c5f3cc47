"""Read routing on a real streaming replica (DATABASE_READ_URL): anonymous reads of the public
catalog run on the replica, authenticated ones and writes on the primary; a replica that stops,
or lags beyond DB_READ_MAX_LAG (1 s here), is skipped without an error answered and taken back
once it is well again.

Which server ran a request is read on the servers themselves: the scans each one counted on the
database's tables (pg_stat_user_tables, which a standby keeps for the queries it runs). The app
runs on NullPool, so each request's backend exits when the request ends and flushes its counts."""

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from api.core.db import get_read_connection, get_read_session
from api.main import create_app
from devstack import DevStackError, EmbeddedPostgres
from tests.support.app import api_routes, dependency_calls, settings_for_tests
from tests.support.client import client_for
from tests.support.database import Database, scalar
from tests.support.live_server import live_admin
from tests.support.pgbouncer import (
    PGBOUNCER_POOL_SIZE,
    running_pgbouncer,
    server_connection_statements,
)
from tests.support.replica import ReplicaPair

pytestmark = [pytest.mark.replica, pytest.mark.concurrent]

MAX_LAG = 1.0


@dataclass
class Stack:
    app: FastAPI
    anonymous: httpx.AsyncClient
    admin: httpx.AsyncClient
    pair: ReplicaPair
    db: Database

    def scans(self, server: EmbeddedPostgres) -> int:
        """The table scans `server` has counted on the database, once every backend of the
        app's role has ended (and so flushed its counts); 0 for a server that is stopped."""
        if server.process is None:
            return 0
        assert self.db.app is not None
        role = self.db.app.role
        deadline = time.monotonic() + 10
        busy = f"SELECT count(*) FROM pg_stat_activity WHERE usename = '{role}'"
        while server.psql(busy).stdout.strip() != "0":
            if time.monotonic() > deadline:
                raise DevStackError("the app's backends do not end")
            time.sleep(0.02)
        total = "SELECT coalesce(sum(coalesce(seq_scan, 0) + coalesce(idx_scan, 0)), 0)"
        return int(server.psql(f"{total} FROM pg_stat_user_tables", self.db.name).stdout)

    async def ran_on(
        self, client: httpx.AsyncClient, path: str, headers: dict[str, str] | None = None
    ) -> tuple[str, Any]:
        """Which server ran `GET path` ("primary" or "replica"), by the scans each counted,
        and its answer's body."""
        before = await asyncio.to_thread(self._both)
        response = await client.get(path, headers=headers)
        assert response.status_code == 200, response.text
        after = await asyncio.to_thread(self._both)
        primary, replica = (a - b for a, b in zip(after, before, strict=True))
        assert (primary > 0) != (replica > 0), f"primary {primary} scans, replica {replica}"
        return ("primary" if primary else "replica"), response.json()

    def _both(self) -> tuple[int, int]:
        return self.scans(self.pair.primary), self.scans(self.pair.replica)

    async def replica_status(self) -> dict[str, Any]:
        figures = (await self.admin.get("/health/db")).json()["replica"]
        assert isinstance(figures, dict)
        return figures

    async def until_status(self, status: str) -> dict[str, Any]:
        """The replica's figures in /health/db once the background check says `status` (within
        20 s)."""
        deadline = time.monotonic() + 20
        while (figures := await self.replica_status())["status"] != status:
            assert time.monotonic() < deadline, f"replica still {figures}, not {status}"
            await asyncio.sleep(0.05)
        return figures


@asynccontextmanager
async def running(
    pair: ReplicaPair, db: Database, *, database_url: str, read_url: str, **settings: Any
) -> AsyncIterator[Stack]:
    """The app in-process with its lifespan (so the background check runs), on NullPool, with
    `read_url` as DATABASE_READ_URL; an anonymous client and a superuser's; once the check has
    found the replica well."""
    app = create_app(
        settings_for_tests(
            database_url=database_url,
            database_read_url=read_url,
            db_pool="null",
            db_read_max_lag=MAX_LAG,
            db_read_check_interval=0.1,
            **settings,
        )
    )
    async with LifespanManager(app), client_for(app) as anonymous, client_for(app) as admin:
        admin.headers.update(await live_admin(admin, db.url))
        stack = Stack(app, anonymous, admin, pair, db)
        await stack.until_status("ok")
        yield stack


def on_replica(db: Database, pair: ReplicaPair) -> str:
    """The app role's URL to the replica: the same login (the replica has the primary's roles)."""
    url = make_url(db.app_url).set(port=pair.replica.port)
    return url.render_as_string(hide_password=False)


@pytest.fixture
async def stack(replica_pair: ReplicaPair, replica_committed: Database) -> AsyncIterator[Stack]:
    """The app as its role, DATABASE_URL the primary, DATABASE_READ_URL the replica, direct."""
    db = replica_committed
    read_url = on_replica(db, replica_pair)
    async with running(replica_pair, db, database_url=db.app_url, read_url=read_url) as stack:
        yield stack
    if replica_pair.replica.process is None:  # a test stopped it
        replica_pair.replica.start()
    replica_pair.replica.psql("SELECT pg_wal_replay_resume()")
    await asyncio.to_thread(replica_pair.wait_until_streaming)


async def create_product(stack: Stack, name: str = "Lamp") -> int:
    """A product written through the API (by the superuser: on the primary), and replayed."""
    body = {"name": name, "price": "12.50", "sku": "LAMP-1", "stock_quantity": 3}
    response = await stack.admin.post("/products/", json=body)
    assert response.status_code == 201, response.text
    await asyncio.to_thread(stack.pair.wait_until_replayed)
    product_id: int = response.json()["id"]
    return product_id


async def test_anonymous_public_reads_run_on_the_replica(stack: Stack) -> None:
    """Every route that takes ReadSessionDep, anonymously: each runs on the replica."""
    category = await stack.admin.post("/categories/", json={"name": "Lights"})
    assert category.status_code == 201, category.text
    category_id = category.json()["id"]
    body = {"name": "Lamp", "price": "12.50", "sku": "LAMP-1", "category_id": category_id}
    product = await stack.admin.post("/products/", json=body)
    assert product.status_code == 201, product.text
    tag = await stack.admin.post("/tags/", json={"name": "Lighting"})
    assert tag.status_code == 201, tag.text
    await asyncio.to_thread(stack.pair.wait_until_replayed)
    reads = {
        "/products/": "/products/?q=lamp&min_price=1&sort=-price",
        "/products/{product_id}": f"/products/{product.json()['id']}",
        "/products/by-sku/{sku}": "/products/by-sku/lamp-1",
        "/products/by-slug/{slug}": "/products/by-slug/lamp",
        "/products/with-categories": "/products/with-categories",
        "/categories/": "/categories/",
        "/categories/{category_id}": f"/categories/{category_id}",
        "/categories/{category_id}/products": f"/categories/{category_id}/products",
        "/tags/": "/tags/",
        "/tags/{tag_id}": f"/tags/{tag.json()['id']}",
    }
    routes = api_routes(stack.app.routes)
    readers = {
        r.path
        for r in routes
        if {get_read_session, get_read_connection} & dependency_calls(r.dependant)
    }
    assert set(reads) == readers

    for path in reads.values():
        server, answer = await stack.ran_on(stack.anonymous, path)
        assert server == "replica", path
        assert answer, path


async def test_authenticated_reads_and_writes_run_on_the_primary(stack: Stack) -> None:
    """A client with a token reads its own writes: its reads go to the primary, right after its
    write, with no wait for the replica; so does a read with a token that is not valid (the
    header decides), and an anonymous post read (it counts the view)."""
    body = {"name": "Desk", "price": "99.00", "sku": "DESK-1", "stock_quantity": 1}
    created = await stack.admin.post("/products/", json=body)
    assert created.status_code == 201, created.text
    product_id = created.json()["id"]

    server, product = await stack.ran_on(stack.admin, f"/products/{product_id}")
    assert (server, product["name"]) == ("primary", "Desk")
    server, _ = await stack.ran_on(stack.admin, "/products/")
    assert server == "primary"
    bad_token = {"Authorization": "Bearer not-a-token"}
    server, _ = await stack.ran_on(stack.anonymous, "/tags/", headers=bad_token)
    assert server == "primary"
    server, _ = await stack.ran_on(stack.anonymous, "/posts/")
    assert server == "primary"


async def test_a_stopped_replica_sends_reads_to_the_primary_without_an_error(
    stack: Stack,
) -> None:
    product_id = await create_product(stack)
    server, _ = await stack.ran_on(stack.anonymous, f"/products/{product_id}")
    assert server == "replica"

    stack.pair.stop_replica()
    # At once, before the background check has seen it: the read finds it down, and goes on to
    # the primary.
    answers = [(await stack.anonymous.get(f"/products/{product_id}")).status_code for _ in range(5)]

    assert answers == [200] * 5
    figures = await stack.replica_status()
    assert figures["status"] == "down"
    assert figures["lag_seconds"] is None
    assert (await stack.anonymous.get("/health/ready")).status_code == 200
    server, _ = await stack.ran_on(stack.anonymous, f"/products/{product_id}")
    assert server == "primary"

    await asyncio.to_thread(stack.pair.replica.start)
    await stack.until_status("ok")
    server, _ = await stack.ran_on(stack.anonymous, f"/products/{product_id}")
    assert server == "replica"


async def test_a_replica_lagging_beyond_the_bound_is_skipped_until_it_catches_up(
    stack: Stack,
) -> None:
    product_id = await create_product(stack)
    stack.pair.replica.psql("SELECT pg_wal_replay_pause()")
    renamed = await stack.admin.patch(f"/products/{product_id}", json={"name": "Floor lamp"})
    assert renamed.status_code == 200, renamed.text

    # The replica has received the change and not replayed it: its lag grows past the bound.
    figures = await stack.until_status("lagging")
    assert figures["lag_seconds"] > MAX_LAG
    assert figures["max_lag_seconds"] == MAX_LAG
    assert (await stack.anonymous.get("/health/ready")).status_code == 200
    # Anonymous reads are the primary's now, and show the change the replica has not.
    server, product = await stack.ran_on(stack.anonymous, f"/products/{product_id}")
    assert (server, product["name"]) == ("primary", "Floor lamp")
    stale = stack.pair.replica.psql(
        f"SELECT name FROM products WHERE id = {product_id}", stack.db.name
    )
    assert stale.stdout.strip() == "Lamp"

    stack.pair.replica.psql("SELECT pg_wal_replay_resume()")
    figures = await stack.until_status("ok")
    assert figures["lag_seconds"] == 0
    server, product = await stack.ran_on(stack.anonymous, f"/products/{product_id}")
    assert (server, product["name"]) == ("replica", "Floor lamp")


async def test_the_background_check_ends_with_the_app(replica_committed: Database) -> None:
    """The lifespan starts one check task and, at shutdown, cancels and awaits it."""
    settings = settings_for_tests(
        database_url=replica_committed.url,
        database_read_url=replica_committed.url,
        db_read_check_interval=0.1,
    )
    app = create_app(settings)

    def checks() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if t.get_name() == "read-replica-check"]

    async with LifespanManager(app):
        assert len(checks()) == 1
        await asyncio.sleep(0.3)
        # The primary itself as DATABASE_READ_URL: not in recovery, so current (lag 0).
        assert app.state.replica.state.status == "ok"
        assert app.state.replica.state.lag_seconds == 0
    assert checks() == []


@pytest.mark.pgbouncer
async def test_through_pgbouncer_the_replica_follows_the_primary_s_statement_rules(
    replica_pair: ReplicaPair, replica_committed: Database
) -> None:
    """Each server behind its own PgBouncer 1.18 (no prepared-statement tracking), as the app's
    role with its SCRAM secret, the app on NullPool with DB_STATEMENT_CACHE=false: a burst of
    concurrent anonymous reads shares the replica's server connections, and leaves no named
    statement on them (with the cache on, as the primary's setting would not have it, the burst
    leaves dozens there)."""
    db = replica_committed
    with (
        running_pgbouncer(db.app_url, auth_secret=db.app_secret) as primary,
        running_pgbouncer(on_replica(db, replica_pair), auth_secret=db.app_secret) as replica,
    ):
        async with running(
            replica_pair,
            db,
            database_url=primary.url(db.name),
            read_url=replica.url(db.name),
            db_statement_cache=False,
        ) as stack:
            product_id = await create_product(stack)
            paths = [f"/products/{product_id}", "/products/?q=lamp", "/categories/", "/tags/"]
            answers = await asyncio.gather(
                *(stack.anonymous.get(paths[i % len(paths)]) for i in range(40))
            )
            assert [answer.status_code for answer in answers] == [200] * 40
            assert (await stack.replica_status())["status"] == "ok"

        statements = await server_connection_statements(replica, db.name)
        assert len(statements) == PGBOUNCER_POOL_SIZE
        assert statements == dict.fromkeys(statements, 0)
        in_recovery = await scalar(replica.url(db.name), "SELECT pg_is_in_recovery()")
        assert in_recovery is True
