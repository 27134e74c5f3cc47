"""Requests at once against a live server: a burst of sign-ups, reads and updates, and waiting
until one request waits for a lock."""

import asyncio
from typing import Any

import asyncpg
import httpx

from tests.support.database import libpq_url
from tests.support.live_server import live_admin


async def until_one_waits_for_a_lock(database_url: str, request: asyncio.Future[Any]) -> bool:
    """Poll `database_url`'s backends every 10 ms (for up to 10 s, on one connection of its own)
    until one of them waits for a lock, or `request` is done: whether one waits."""
    return await until_some_wait_for_a_lock(database_url, request, 1)


async def until_some_wait_for_a_lock(
    database_url: str, requests: asyncio.Future[Any], count: int
) -> bool:
    """`until_one_waits_for_a_lock` for `count` backends waiting at once: whether they do."""
    prober = await asyncpg.connect(libpq_url(database_url))
    try:
        for _ in range(1000):
            waiting: int = await prober.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
            if waiting >= count or requests.done():
                return waiting >= count
            await asyncio.sleep(0.01)
        return False
    finally:
        await prober.close()


async def users_burst(
    client: httpx.AsyncClient, database_url: str, *, size: int, prefix: str, passes: int = 1
) -> list[tuple[int, str]]:
    """`size` sign-ups at once (each must be a 201), then, `passes` times, as a superuser and all
    at once: a read of each new user, `size` pages of the list and an update of each. The reads
    and updates that did not answer 200, as (status, body)."""
    creates = await asyncio.gather(
        *(
            client.post(
                "/users/",
                json={
                    "username": f"{prefix}_{i}",
                    "email": f"{prefix}{i}@example.com",
                    "password": "p" * 12,
                },
            )
            for i in range(size)
        )
    )
    assert [r.status_code for r in creates] == [201] * size, creates[0].text
    ids = [r.json()["id"] for r in creates]
    admin = await live_admin(client, database_url)
    failures = []
    for _ in range(passes):
        mixed = await asyncio.gather(
            *(client.get(f"/users/{user_id}", headers=admin) for user_id in ids),
            *(
                client.get("/users/", params={"page": 1 + i % 3, "size": 10}, headers=admin)
                for i in range(size)
            ),
            *(
                client.patch(f"/users/{user_id}", json={"bio": f"bio {user_id}"}, headers=admin)
                for user_id in ids
            ),
        )
        failures += [(r.status_code, r.text) for r in mixed if r.status_code != 200]
    return failures
