"""Stock under real concurrency: many takes at once through uvicorn and PgBouncer, committed."""

import asyncio

import asyncpg
import httpx
import pytest

from tests.support.client import assert_problem
from tests.support.concurrency import until_some_wait_for_a_lock
from tests.support.database import Database, libpq_url, scalar
from tests.support.live_server import live_admin

pytestmark = [pytest.mark.concurrent, pytest.mark.pgbouncer]


async def test_concurrent_takes_never_drive_stock_below_zero(
    live_server: str, committed: Database
) -> None:
    product_id = await scalar(
        committed.url,
        "INSERT INTO products (name, slug, sku, price, stock_quantity, is_active)"
        " VALUES ('Hot Item', 'hot-item', 'HOT-1', 5.00, 10, true) RETURNING id",
    )
    async with httpx.AsyncClient(base_url=live_server, timeout=60) as client:
        admin = await live_admin(client, committed.url)
        responses = await asyncio.gather(
            *(
                client.post(f"/products/{product_id}/stock", json={"change": -1}, headers=admin)
                for _ in range(25)
            )
        )

    assert sorted(r.status_code for r in responses) == [200] * 10 + [409] * 15
    remaining = sorted(r.json()["stock_quantity"] for r in responses if r.status_code == 200)
    assert remaining == list(range(10))  # each take saw its own decrement
    stock = await scalar(
        committed.url, "SELECT stock_quantity FROM products WHERE id = $1", product_id
    )
    assert stock == 0


async def insert_widget(database_url: str, sku: str) -> int:
    product_id: int = await scalar(
        database_url,
        "INSERT INTO products (name, slug, sku, price, stock_quantity, is_active)"
        " VALUES ($1, $2, $1, 5.00, 10, true) RETURNING id",
        sku,
        sku.lower(),
    )
    return product_id


async def stored_price(database_url: str, product_id: int) -> str:
    return str(await scalar(database_url, "SELECT price FROM products WHERE id = $1", product_id))


async def test_two_writers_with_one_tag_one_wins_and_one_is_412(
    live_server: str, committed: Database
) -> None:
    """Two clients read one product and both PATCH it with the tag they read, at once: one
    change is made, the other is refused, and the stored row is the winner's."""
    product_id = await insert_widget(committed.url, "RACE-1")
    async with httpx.AsyncClient(base_url=live_server, timeout=60) as client:
        admin = await live_admin(client, committed.url)
        reads = [await client.get(f"/products/{product_id}") for _ in range(2)]
        tag = reads[0].headers["ETag"]
        assert reads[1].headers["ETag"] == tag
        responses = await asyncio.gather(
            *(
                client.patch(
                    f"/products/{product_id}",
                    json={"price": price},
                    headers={**admin, "If-Match": tag},
                )
                for price in ("1.11", "2.22")
            )
        )
        after = await client.get(f"/products/{product_id}")

    assert sorted(r.status_code for r in responses) == [200, 412], [r.text for r in responses]
    (winner,) = (r for r in responses if r.status_code == 200)
    (loser,) = (r for r in responses if r.status_code == 412)
    assert_problem(loser, 412, "precondition_failed")
    assert await stored_price(committed.url, product_id) == winner.json()["price"]
    assert after.content == winner.content
    assert after.headers["ETag"] == winner.headers["ETag"] != tag


async def test_writers_waiting_on_the_row_are_answered_one_by_one(
    live_server: str, committed: Database
) -> None:
    """The same race made certain: another transaction holds the row while both writers with
    the read tag arrive, so both have checked or are checking when it lets go. Only the first
    to take the row may write; the second then sees the first's row and is refused. (Seen
    failing with the row read without FOR UPDATE: both compared the old row, and both wrote.)"""
    product_id = await insert_widget(committed.url, "RACE-2")
    holder = await asyncpg.connect(libpq_url(committed.url))
    try:
        async with httpx.AsyncClient(base_url=live_server, timeout=60) as client:
            admin = await live_admin(client, committed.url)
            tag = (await client.get(f"/products/{product_id}")).headers["ETag"]
            holding = holder.transaction()
            await holding.start()
            await holder.execute("SELECT 1 FROM products WHERE id = $1 FOR UPDATE", product_id)
            both = asyncio.gather(
                *(
                    client.patch(
                        f"/products/{product_id}",
                        json={"price": price},
                        headers={**admin, "If-Match": tag},
                    )
                    for price in ("3.33", "4.44")
                )
            )
            assert await until_some_wait_for_a_lock(committed.url, both, 2)
            await holding.rollback()
            responses = await both
    finally:
        await holder.close()

    assert sorted(r.status_code for r in responses) == [200, 412], [r.text for r in responses]
    (winner,) = (r for r in responses if r.status_code == 200)
    assert await stored_price(committed.url, product_id) == winner.json()["price"]
