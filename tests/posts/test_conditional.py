"""Conditional requests on a post. Its ETag is weak: it leaves out view_count, which every read
changes, so If-None-Match answers 304 across other clients' views; If-Match compares that weak
tag (weakly: strong comparison would refuse a weak tag always) on every write of the post."""

import httpx
from fastapi import FastAPI
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.core.conditional import tag_of as version_tag
from api.posts.models import COUNTERS, Post, PostRead, PostStatus, PostTagLink
from tests.support.client import assert_problem, client_for
from tests.support.conditional import STALE
from tests.support.factories import make_post, make_tag, make_user


async def stored(session: AsyncSession, post: Post) -> tuple[str, str, list[int]] | None:
    """The post's title, status and tag ids, re-queried (None once deleted)."""
    row = (await session.exec(select(Post.title, Post.status).where(Post.id == post.id))).first()
    if row is None:
        return None
    links = select(PostTagLink.tag_id).where(PostTagLink.post_id == post.id)
    return row[0], row[1], sorted(await session.exec(links))


async def weak_tag(client: httpx.AsyncClient, url: str) -> str:
    response = await client.get(url)
    assert response.status_code == 200, response.text
    tag = response.headers["ETag"]
    assert tag.startswith('W/"')
    assert tag == version_tag(PostRead, PostRead.model_validate_json(response.content), COUNTERS)
    return tag


class TestWeakETag:
    async def test_views_keep_the_tag_and_an_edit_changes_it(
        self, app: FastAPI, session: AsyncSession
    ) -> None:
        author = await make_user(session)
        post = await make_post(session, author=author, title="On Lamps")
        url = f"/posts/{post.id}"
        async with client_for(app, author) as client:
            first = await client.get(url)
            second = await client.get(url)
            not_modified = await client.get(url, headers={"If-None-Match": first.headers["ETag"]})
            edited = await client.patch(url, json={"title": "On Lights"})
            after = await client.get(url, headers={"If-None-Match": first.headers["ETag"]})

        assert [first.json()["view_count"], second.json()["view_count"]] == [1, 2]
        assert first.headers["ETag"] == second.headers["ETag"]
        assert not_modified.status_code == 304
        assert not_modified.content == b""
        assert not_modified.headers["ETag"] == first.headers["ETag"]
        assert after.status_code == 200
        assert after.headers["ETag"] == edited.headers["ETag"] != first.headers["ETag"]

    async def test_a_tag_renamed_through_its_own_route_changes_the_posts_tag(
        self, app: FastAPI, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        author = await make_user(session)
        post = await make_post(session, author=author, title="On Lamps")
        tag = await make_tag(session, name="Lighting")
        assert post.id is not None
        assert tag.id is not None
        session.add(PostTagLink(post_id=post.id, tag_id=tag.id))
        await session.flush()
        async with client_for(app, author) as client:
            before = await weak_tag(client, f"/posts/{post.id}")
            renamed = await admin_client.patch(f"/tags/{tag.id}", json={"name": "Lights"})
            after = await weak_tag(client, f"/posts/{post.id}")

        assert renamed.status_code == 200
        assert after != before


class TestIfMatch:
    async def test_every_write_with_a_stale_tag_is_412_and_changes_nothing(
        self, app: FastAPI, session: AsyncSession
    ) -> None:
        author = await make_user(session)
        post = await make_post(session, author=author, title="On Lamps")
        tag = await make_tag(session, name="Lighting")
        url = f"/posts/{post.id}"
        async with client_for(app, author) as client:
            read = await weak_tag(client, url)
            await client.patch(url, json={"content": "Changed by another tab."})
            headers = {"If-Match": read}
            answers = [
                await client.patch(url, json={"title": "X"}, headers=headers),
                await client.patch(
                    f"{url}/status", params={"new_status": "published"}, headers=headers
                ),
                await client.put(f"{url}/tags/{tag.id}", headers=headers),
                await client.delete(f"{url}/tags/{tag.id}", headers=headers),
                await client.delete(url, headers=headers),
                await client.delete(url, headers={"If-Match": STALE}),
            ]

        for response in answers:
            assert_problem(response, 412, "precondition_failed")
        assert await stored(session, post) == ("On Lamps", PostStatus.draft, [])

    async def test_the_read_tag_writes_weak_or_strong_and_each_answer_gives_the_next(
        self, app: FastAPI, session: AsyncSession
    ) -> None:
        author = await make_user(session)
        post = await make_post(session, author=author, title="On Lamps")
        tag = await make_tag(session, name="Lighting")
        url = f"/posts/{post.id}"
        async with client_for(app, author) as client:
            current = await weak_tag(client, url)
            await client.get(url)  # another view: the tag stands
            tagged = await client.put(f"{url}/tags/{tag.id}", headers={"If-Match": current})
            published = await client.patch(
                f"{url}/status",
                params={"new_status": "published"},
                headers={"If-Match": tagged.headers["ETag"].removeprefix("W/")},
            )
            titled = await client.patch(
                url, json={"title": "On Lights"}, headers={"If-Match": published.headers["ETag"]}
            )
            assert await weak_tag(client, url) == titled.headers["ETag"]

            assert [tagged.status_code, published.status_code, titled.status_code] == [200] * 3
            assert await stored(session, post) == ("On Lights", PostStatus.published, [tag.id])

            untagged = await client.delete(
                f"{url}/tags/{tag.id}", headers={"If-Match": titled.headers["ETag"]}
            )
            deleted = await client.delete(url, headers={"If-Match": untagged.headers["ETag"]})

        assert untagged.status_code == 200
        assert deleted.status_code == 204
        assert await stored(session, post) is None

    async def test_another_authors_post_is_404_whatever_the_tag(
        self, app: FastAPI, session: AsyncSession
    ) -> None:
        author, other = await make_user(session), await make_user(session)
        post = await make_post(
            session, author=author, title="On Lamps", status=PostStatus.published
        )
        async with client_for(app, other) as client:
            tag = await weak_tag(client, f"/posts/{post.id}")
            response = await client.patch(
                f"/posts/{post.id}", json={"title": "Mine"}, headers={"If-Match": tag}
            )

        assert_problem(response, 404, "not_found")
        assert await stored(session, post) == ("On Lamps", PostStatus.published, [])
