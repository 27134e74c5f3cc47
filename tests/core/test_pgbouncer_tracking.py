"""The connection path of compose.yaml and the Kubernetes manifests: the statement cache on,
through a PgBouncer that tracks prepared statements (1.21 and later; `make test` builds Debian
13's 1.24.1, Debian 12 packaging 1.18). A statement asyncpg prepares on one transaction's server
connection must work on whichever server connection runs the next, reads in autocommit (Parse
and Bind in two protocol round trips, which PgBouncer may send to two server connections)
included. These tests commit, side by side."""

import asyncio
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

import devstack
from api import pgbouncer
from tests.support.concurrency import users_burst
from tests.support.database import Database, scalar
from tests.support.live_server import live_admin, serving
from tests.support.pgbouncer import running_pgbouncer, server_connection_statements

pytestmark = [pytest.mark.pgbouncer, pytest.mark.concurrent]

CONCURRENCY = 40


def tracking_binary() -> str:
    """`make test`'s build (PGBOUNCER_TRACKING_BINARY), else the installed PgBouncer when it
    tracks prepared statements. Fails, never skips: this is the deployed path."""
    for binary in (os.environ.get("PGBOUNCER_TRACKING_BINARY"), devstack.pgbouncer_binary()):
        if (
            binary
            and os.access(binary, os.X_OK)
            and pgbouncer.tracks_prepared_statements(devstack.pgbouncer_version(binary))
        ):
            return binary
    pytest.fail(
        "No PgBouncer that tracks prepared statements (1.21 or later): `make pgbouncer-tracking`"
        " builds one (make test does), then set PGBOUNCER_TRACKING_BINARY to its bin/pgbouncer.",
        pytrace=False,
    )


@dataclass
class Served:
    url: str
    bouncer: devstack.PgBouncer


@pytest.fixture(scope="module", params=["nullpool", "app-side pool"])
def cached_server(
    request: pytest.FixtureRequest,
    concurrent_database: Database,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    """uvicorn with the statement cache on, on NullPool (compose's) or a small pool of its own,
    through a tracking PgBouncer of its own that logs in as the app role (compose's arrangement):
    the statements on its server connections are this app's alone."""
    env = {"DB_STATEMENT_CACHE": "true"}
    if request.param == "app-side pool":
        env |= {"DB_POOL": "queue", "DB_POOL_SIZE": "4"}
    log_dir = tmp_path_factory.mktemp("tracking")
    with (
        running_pgbouncer(
            concurrent_database.app_url,
            max_prepared_statements=pgbouncer.DEFAULT_MAX_PREPARED_STATEMENTS,
            binary=tracking_binary(),
            auth_secret=concurrent_database.app_secret,
        ) as bouncer,
        serving(concurrent_database, bouncer, log_dir, **env) as url,
    ):
        yield Served(url, bouncer)


async def test_a_burst_of_reads_and_writes_runs_on_statements_pgbouncer_keeps(
    cached_server: Served, committed: Database
) -> None:
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=cached_server.url, limits=limits, timeout=60) as client:
        # Twice: the second pass runs on the statements prepared by the first.
        failures = await users_burst(
            client, committed.url, size=CONCURRENCY, prefix="kept", passes=2
        )
    assert failures == []

    # The app's statements live on its PgBouncer's server connections (the named statements
    # prove the cache on), within PgBouncer's bound on each.
    statements = await server_connection_statements(cached_server.bouncer, committed.name)
    assert sum(statements.values()) > 0
    assert max(statements.values()) <= pgbouncer.DEFAULT_MAX_PREPARED_STATEMENTS


async def test_racing_orders_never_oversell_on_kept_statements(
    cached_server: Served, committed: Database
) -> None:
    """Transactions with row locks, a savepoint (the notification) and refusals (rolled back)."""
    product_id = await scalar(
        committed.url,
        "INSERT INTO products (name, slug, sku, price, stock_quantity, is_active)"
        " VALUES ('Kept', 'kept', 'KEPT-1', 2.50, 10, true) RETURNING id",
    )
    line = {"items": [{"product_id": product_id, "quantity": 1}]}
    async with httpx.AsyncClient(base_url=cached_server.url, timeout=60) as client:
        admin = await live_admin(client, committed.url)
        answers = await asyncio.gather(
            *(client.post("/orders/", json=line, headers=admin) for _ in range(30))
        )

    assert Counter(a.status_code for a in answers) == {201: 10, 409: 20}
    stock = await scalar(
        committed.url, "SELECT stock_quantity FROM products WHERE id = $1", product_id
    )
    assert stock == 0
    assert await scalar(committed.url, "SELECT count(*) FROM notifications") == 10
