"""A real PgBouncer in transaction mode started for a test, and the named prepared statements
left on its server connections."""

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

import devstack
from tests.support.database import libpq_url

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
