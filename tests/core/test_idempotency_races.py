"""Idempotency-Key under real concurrency: requests through uvicorn and PgBouncer (transaction
mode), every transaction committed. One key placed fifty times at once makes one order; a
request still running answers its retry a 409 at once instead of waiting; an answer the client
never read is replayed to its retry."""

import asyncio
import json
from collections import Counter
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from tests.support.client import assert_problem
from tests.support.concurrency import until_one_waits_for_a_lock
from tests.support.database import Database, libpq_url, scalar
from tests.support.factories import insert_product
from tests.support.live_server import live_admin

pytestmark = [pytest.mark.concurrent, pytest.mark.pgbouncer]


async def counts(database_url: str, product_id: int) -> tuple[int, int, int, int]:
    """Orders, notifications, stored answers, and the product's stock."""
    return (
        await scalar(database_url, "SELECT count(*) FROM orders"),
        await scalar(database_url, "SELECT count(*) FROM notifications"),
        await scalar(database_url, "SELECT count(*) FROM idempotency_keys"),
        await scalar(database_url, "SELECT stock_quantity FROM products WHERE id = $1", product_id),
    )


async def test_fifty_identical_requests_at_once_make_one_order(
    live_server: str, committed: Database
) -> None:
    product_id = await insert_product(committed.url, "ONCE-1", 100)
    line = {"items": [{"product_id": product_id, "quantity": 3}]}
    async with httpx.AsyncClient(base_url=live_server, timeout=120) as client:
        admin = {**await live_admin(client, committed.url), "Idempotency-Key": "fifty-at-once"}
        responses = await asyncio.gather(
            *(client.post("/orders/", json=line, headers=admin) for _ in range(50))
        )

    kinds = Counter(
        "replayed" if r.headers.get("Idempotent-Replayed") == "true" else r.status_code
        for r in responses
    )
    assert kinds[201] == 1, kinds
    assert kinds[201] + kinds["replayed"] + kinds[409] == 50, kinds
    first = next(
        r for r in responses if r.status_code == 201 and "Idempotent-Replayed" not in r.headers
    )
    for response in responses:
        if response.status_code == 409:
            assert_problem(response, 409, "idempotency_key_in_flight")
            assert response.headers["Retry-After"] == "1"
        else:
            assert response.status_code == 201
            assert response.content == first.content
    assert await counts(committed.url, product_id) == (1, 1, 1, 97)
    order_id = await scalar(committed.url, "SELECT id FROM orders")
    assert first.json()["id"] == order_id


async def test_a_retry_while_the_first_request_runs_is_a_409_at_once(
    live_server: str, committed: Database
) -> None:
    """The first request holds its key while it waits for a product another client has
    locked; its retry is refused at once (it would otherwise wait too, or order twice), and
    once the first has answered the retry replays it."""
    product_id = await insert_product(committed.url, "HELD-1", 10)
    line = {"items": [{"product_id": product_id, "quantity": 1}]}
    holder = await asyncpg.connect(libpq_url(committed.url))
    try:
        holding = holder.transaction()
        await holding.start()
        await holder.execute("SELECT 1 FROM products WHERE id = $1 FOR UPDATE", product_id)
        async with httpx.AsyncClient(base_url=live_server, timeout=60) as client:
            admin = {**await live_admin(client, committed.url), "Idempotency-Key": "held"}
            placing = asyncio.create_task(client.post("/orders/", json=line, headers=admin))
            assert await until_one_waits_for_a_lock(committed.url, placing), "never waited"

            retry = await client.post("/orders/", json=line, headers=admin)
            assert not placing.done()  # answered while the first still waits
            assert_problem(retry, 409, "idempotency_key_in_flight")
            assert retry.headers["Retry-After"] == "1"

            await holding.rollback()
            first = await placing
            replay = await client.post("/orders/", json=line, headers=admin)
    finally:
        await holder.close()

    assert first.status_code == 201, first.text
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.content == first.content
    assert await counts(committed.url, product_id) == (1, 1, 1, 9)


async def test_an_answer_the_client_never_read_is_replayed_to_its_retry(
    live_server: str, committed: Database
) -> None:
    """The client sends an order and closes the connection before reading the answer (a
    timeout, a crash): the order stands, and the retry with the same key gets its answer instead
    of a second order."""
    product_id = await insert_product(committed.url, "LOST-1", 10)
    line = {"items": [{"product_id": product_id, "quantity": 2}]}
    async with httpx.AsyncClient(base_url=live_server, timeout=60) as client:
        admin = {**await live_admin(client, committed.url), "Idempotency-Key": "lost-answer"}
        await send_and_hang_up(live_server, "/orders/", line, admin)

        for _ in range(500):  # until the unread request has committed, so the retry is second
            if await scalar(committed.url, "SELECT count(*) FROM idempotency_keys"):
                break
            await asyncio.sleep(0.02)
        retry = await client.post("/orders/", json=line, headers=admin)

    assert retry.status_code == 201, retry.text
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert await counts(committed.url, product_id) == (1, 1, 1, 8)
    assert retry.json()["id"] == await scalar(committed.url, "SELECT id FROM orders")


async def send_and_hang_up(base_url: str, path: str, body: object, headers: dict[str, str]) -> None:
    """POST `body` over a raw connection and close it without reading a byte of the answer."""
    address = urlsplit(base_url)
    assert address.hostname is not None
    assert address.port is not None
    payload = json.dumps(body).encode()
    head = [f"POST {path} HTTP/1.1", f"Host: {address.netloc}", "Content-Type: application/json"]
    head += [f"Content-Length: {len(payload)}", "Connection: close"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    _reader, writer = await asyncio.open_connection(address.hostname, address.port)
    writer.write("\r\n".join(head).encode() + b"\r\n\r\n" + payload)
    await writer.drain()
    writer.close()
    await writer.wait_closed()
