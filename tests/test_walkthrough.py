"""Seed 003's curl walkthrough, end to end: category, product, user, order, order details,
status update, statistics and health, against a real uvicorn process through the real PgBouncer
on a freshly migrated database arranged as compose arranges it (the app logs in as a role that
may only read and write rows), with bearer tokens where a route needs one. Ids come from
earlier answers; the Electronics category that the data migration created is looked up after
its 409."""

from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from tests.support.database import Database
from tests.support.live_server import serving
from tests.support.pgbouncer import running_pgbouncer
from tests.support.walkthrough import ADMIN, walk

pytestmark = [pytest.mark.concurrent, pytest.mark.pgbouncer]


async def test_the_seed_walkthrough(
    make_production_database: Callable[[str], Awaitable[Database]],
    tmp_path: Path,
) -> None:
    database = await make_production_database("walkthrough")
    first_superuser = {
        "FIRST_SUPERUSER_EMAIL": ADMIN["email"],
        "FIRST_SUPERUSER_PASSWORD": ADMIN["password"],
    }
    with (
        running_pgbouncer(database.app_url, auth_secret=database.app_secret) as bouncer,
        serving(database, bouncer, tmp_path, **first_superuser) as url,
    ):
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            await walk(http)
