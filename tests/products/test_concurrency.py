"""Stock under real concurrency: many takes at once through uvicorn and PgBouncer, committed."""

import asyncio

import httpx
import pytest

from tests.support.database import Database, scalar
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
