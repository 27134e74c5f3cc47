"""Tagging a post while another request deletes it: through uvicorn and PgBouncer, committed."""

import asyncio

import asyncpg
import httpx
import pytest

from tests.support.client import assert_problem
from tests.support.concurrency import until_one_waits_for_a_lock
from tests.support.database import Database, libpq_url, query, scalar
from tests.support.live_server import live_admin

pytestmark = [pytest.mark.concurrent, pytest.mark.pgbouncer]


async def insert_post(database_url: str, status: str) -> int:
    """A post by the live server's superuser (`boss`), committed with `status`; its id."""
    post: int = await scalar(
        database_url,
        "INSERT INTO posts (title, slug, content, author_id, status, view_count)"
        " SELECT 'P', 'p', 'x', id, $1, 0 FROM users WHERE username = 'boss' RETURNING id",
        status,
    )
    return post


async def test_tagging_a_post_deleted_meanwhile_is_404_naming_the_post(
    live_server: str, committed: Database
) -> None:
    async with httpx.AsyncClient(base_url=live_server, timeout=60) as client:
        admin = await live_admin(client, committed.url)
        post = await insert_post(committed.url, "draft")
        tag = await scalar(
            committed.url, "INSERT INTO tags (name, slug) VALUES ('t', 't') RETURNING id"
        )
        deleting = await asyncpg.connect(libpq_url(committed.url))
        try:
            transaction = deleting.transaction()
            await transaction.start()
            await deleting.execute("DELETE FROM posts WHERE id = $1", post)
            # The link's INSERT still sees the post (the delete is not committed) and waits,
            # in its foreign key check, for the deleting transaction to end.
            tagging = asyncio.ensure_future(client.put(f"/posts/{post}/tags/{tag}", headers=admin))
            waiting = await until_one_waits_for_a_lock(committed.url, tagging)
            assert waiting, "the tagging request never waited for the delete"
            await transaction.commit()
            response = await tagging
        finally:
            await deleting.close()

    body = assert_problem(response, 404, "not_found")
    assert body["detail"] == f"Post with id {post} not found"
    assert await query(committed.url, "SELECT * FROM post_tags") == []


async def test_two_writers_with_one_weak_tag_one_wins_and_one_is_412(
    live_server: str, committed: Database
) -> None:
    """A post's tag is weak and its writes compare it weakly: that still lets one of two
    writers that read the same version through, and refuses the other. Another client's view
    in between does not change the tag."""
    async with httpx.AsyncClient(base_url=live_server, timeout=60) as client:
        admin = await live_admin(client, committed.url)
        post = await insert_post(committed.url, "published")
        tag = (await client.get(f"/posts/{post}")).headers["ETag"]
        assert tag.startswith("W/")
        assert (await client.get(f"/posts/{post}")).headers["ETag"] == tag  # a view
        responses = await asyncio.gather(
            *(
                client.patch(
                    f"/posts/{post}", json={"title": title}, headers={**admin, "If-Match": tag}
                )
                for title in ("First", "Second")
            )
        )

    assert sorted(r.status_code for r in responses) == [200, 412], [r.text for r in responses]
    (winner,) = (r for r in responses if r.status_code == 200)
    (loser,) = (r for r in responses if r.status_code == 412)
    assert_problem(loser, 412, "precondition_failed")
    stored = await scalar(committed.url, "SELECT title FROM posts WHERE id = $1", post)
    assert stored == winner.json()["title"]
