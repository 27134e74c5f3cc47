"""Re-parenting under real concurrency: through uvicorn and PgBouncer, committed."""

import asyncio

import httpx
import pytest

from tests.support.database import Database, query
from tests.support.live_server import live_admin

pytestmark = [pytest.mark.concurrent, pytest.mark.pgbouncer]

PAIRS = 25


async def test_two_categories_put_under_each_other_at_once_never_make_a_cycle(
    live_server: str, committed: Database
) -> None:
    # Each check alone sees no cycle: A is not below B, B not below A. Both moves at once
    # would make A and B each other's parent, and a walk up or down the tree never end.
    rows = await query(
        committed.url,
        "INSERT INTO categories (name, slug)"
        " SELECT 'Cat ' || n, 'cat-' || n FROM generate_series(1, $1) AS n RETURNING id",
        2 * PAIRS,
    )
    ids = sorted(row["id"] for row in rows)
    pairs = list(zip(ids[::2], ids[1::2], strict=True))
    async with httpx.AsyncClient(base_url=live_server, timeout=60) as client:
        admin = await live_admin(client, committed.url)

        def move(category: int, parent: int) -> asyncio.Future[httpx.Response]:
            return asyncio.ensure_future(
                client.patch(f"/categories/{category}", json={"parent_id": parent}, headers=admin)
            )

        moves = [(move(a, b), move(b, a)) for a, b in pairs]
        answers = [(await first, await second) for first, second in moves]

    for first, second in answers:
        assert sorted([first.status_code, second.status_code]) == [200, 422], (
            first.text,
            second.text,
        )
    parents = {
        row["id"]: row["parent_id"]
        for row in await query(committed.url, "SELECT id, parent_id FROM categories")
    }
    for a, b in pairs:
        assert (parents[a], parents[b]) in ((b, None), (None, a))
