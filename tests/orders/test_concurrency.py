"""Orders under real concurrency: simultaneous requests through uvicorn and PgBouncer (transaction
mode), every transaction committed. Stock is never oversold, lock order prevents deadlocks, and
of two racing status moves exactly one applies."""

import asyncio
from collections import Counter

import asyncpg
import httpx
import pytest

from tests.support.client import assert_problem
from tests.support.concurrency import until_one_waits_for_a_lock
from tests.support.database import Database, libpq_url, query, scalar
from tests.support.factories import insert_product
from tests.support.live_server import live_admin

pytestmark = [pytest.mark.concurrent, pytest.mark.pgbouncer]


async def test_concurrent_orders_never_oversell(live_server: str, committed: Database) -> None:
    product_id = await insert_product(committed.url, "HOT-1", 30)
    line = {"items": [{"product_id": product_id, "quantity": 1}]}
    async with httpx.AsyncClient(base_url=live_server, timeout=120) as client:
        admin = await live_admin(client, committed.url)
        responses = await asyncio.gather(
            *(client.post("/orders/", json=line, headers=admin) for _ in range(100))
        )

    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 30, 409: 70}, statuses
    refusal = next(r.json() for r in responses if r.status_code == 409)
    assert refusal["errors"] == [
        {"field": "items", "message": f"product {product_id}: available 0"}
    ]
    stock = await scalar(
        committed.url, "SELECT stock_quantity FROM products WHERE id = $1", product_id
    )
    ordered = await scalar(committed.url, "SELECT sum(quantity) FROM order_items")
    orders = await scalar(committed.url, "SELECT count(*) FROM orders")
    assert (stock, ordered, orders) == (0, 30, 30)
    numbers = await scalar(committed.url, "SELECT count(DISTINCT order_number) FROM orders")
    assert numbers == 30


async def test_opposite_line_orders_do_not_deadlock(live_server: str, committed: Database) -> None:
    first = await insert_product(committed.url, "PAIR-A", 1000)
    second = await insert_product(committed.url, "PAIR-B", 1000)
    forwards = {
        "items": [{"product_id": first, "quantity": 1}, {"product_id": second, "quantity": 1}]
    }
    backwards = {"items": list(reversed(forwards["items"]))}
    async with httpx.AsyncClient(base_url=live_server, timeout=120) as client:
        admin = await live_admin(client, committed.url)
        responses = await asyncio.gather(
            *(
                client.post("/orders/", json=forwards if n % 2 else backwards, headers=admin)
                for n in range(60)
            )
        )

    assert [r.status_code for r in responses] == [201] * 60, {r.text for r in responses}
    rows = await query(
        committed.url,
        "SELECT stock_quantity FROM products WHERE id = ANY($1) ORDER BY id",
        [first, second],
    )
    assert [row[0] for row in rows] == [940, 940]


async def test_a_cancel_racing_a_ship_applies_exactly_one(
    live_server: str, committed: Database
) -> None:
    product_id = await insert_product(committed.url, "RACE-1", 100)
    line = {"items": [{"product_id": product_id, "quantity": 2}]}
    async with httpx.AsyncClient(base_url=live_server, timeout=120) as client:
        admin = await live_admin(client, committed.url)
        ids = []
        for _ in range(10):
            order = (await client.post("/orders/", json=line, headers=admin)).json()
            await client.patch(f"/orders/{order['id']}/status?new_status=confirmed", headers=admin)
            ids.append(order["id"])
        races = await asyncio.gather(
            *(
                asyncio.gather(
                    client.patch(f"/orders/{i}/status?new_status=cancelled", headers=admin),
                    client.patch(f"/orders/{i}/status?new_status=shipped", headers=admin),
                )
                for i in ids
            )
        )

    cancelled = 0
    for order_id, (cancel, ship) in zip(ids, races, strict=True):
        assert sorted([cancel.status_code, ship.status_code]) == [200, 409], (cancel, ship)
        winner = "cancelled" if cancel.status_code == 200 else "shipped"
        status = await scalar(committed.url, "SELECT status FROM orders WHERE id = $1", order_id)
        assert status == winner
        cancelled += winner == "cancelled"
    stock = await scalar(
        committed.url, "SELECT stock_quantity FROM products WHERE id = $1", product_id
    )
    assert stock == 100 - 2 * (10 - cancelled)  # each cancel gave its two back, once


async def test_products_are_locked_in_id_order_whatever_the_line_order(
    live_server: str, committed: Database
) -> None:
    """Deterministic half of the deadlock proof: while the lower id is held elsewhere, an order
    listing the higher id first waits without holding the higher one."""
    low = await insert_product(committed.url, "LOCK-A", 10)
    high = await insert_product(committed.url, "LOCK-B", 10)
    holder = await asyncpg.connect(libpq_url(committed.url))
    prober = await asyncpg.connect(libpq_url(committed.url))
    try:
        holder_tx = holder.transaction()
        await holder_tx.start()
        await holder.execute("SELECT 1 FROM products WHERE id = $1 FOR UPDATE", low)
        async with httpx.AsyncClient(base_url=live_server, timeout=60) as client:
            admin = await live_admin(client, committed.url)
            body = {
                "items": [{"product_id": high, "quantity": 1}, {"product_id": low, "quantity": 1}]
            }
            placing = asyncio.create_task(client.post("/orders/", json=body, headers=admin))
            waiting = await until_one_waits_for_a_lock(committed.url, placing)
            assert waiting, "the order never waited for the held product"
            async with prober.transaction():
                free = await prober.fetchval(
                    "SELECT id FROM products WHERE id = $1 FOR UPDATE SKIP LOCKED", high
                )
            assert free == high, "the order locked the higher id before the lower one"
            await holder_tx.rollback()
            assert (await placing).status_code == 201
    finally:
        await holder.close()
        await prober.close()


async def test_an_order_undone_to_break_a_deadlock_is_a_503_and_may_be_retried(
    live_server: str, committed: Database
) -> None:
    """A deadlock our lock order cannot prevent, because another client locks in the opposite
    order: PostgreSQL undoes the order's transaction, which answers a retryable 503 (not a 500)
    and leaves no trace; sent again once the other client is done, the order goes through."""
    low = await insert_product(committed.url, "KNOT-A", 10)
    high = await insert_product(committed.url, "KNOT-B", 10)
    body = {"items": [{"product_id": low, "quantity": 1}, {"product_id": high, "quantity": 1}]}
    other = await asyncpg.connect(libpq_url(committed.url))
    try:
        # The order's backend waits first and looks for a deadlock once its deadlock_timeout
        # (1 s by default) has passed: the cycle must be closed by then, and the other client
        # must not look first, so that the order is the transaction undone.
        await other.execute("SET deadlock_timeout = '30s'")
        other_tx = other.transaction()
        await other_tx.start()
        await other.execute("UPDATE products SET stock_quantity = 7 WHERE id = $1", high)
        async with httpx.AsyncClient(base_url=live_server, timeout=60) as client:
            admin = await live_admin(client, committed.url)
            placing = asyncio.create_task(client.post("/orders/", json=body, headers=admin))
            # Until the order holds `low` and waits for `high`.
            waiting = await until_one_waits_for_a_lock(committed.url, placing)
            assert waiting, "the order never waited for the product held by the other client"
            # Close the cycle: the other client now waits for the row the order holds.
            closing = asyncio.create_task(
                other.execute("UPDATE products SET stock_quantity = 7 WHERE id = $1", low)
            )
            response = await placing
            await closing  # the order's locks went with its transaction
            await other_tx.rollback()

            assert_problem(response, 503, "transaction_conflict")
            assert response.headers["Retry-After"] == "1"
            assert await query(committed.url, "SELECT * FROM orders") == []
            stocks = await query(committed.url, "SELECT stock_quantity FROM products ORDER BY id")
            assert [s["stock_quantity"] for s in stocks] == [10, 10]

            retried = await client.post("/orders/", json=body, headers=admin)
    finally:
        await other.close()

    assert retried.status_code == 201, retried.text
    stocks = await query(committed.url, "SELECT stock_quantity FROM products ORDER BY id")
    assert [s["stock_quantity"] for s in stocks] == [9, 9]
