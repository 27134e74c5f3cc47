"""Posts over HTTP: who sees which post, who writes it, the status machine, tags, and the
view count, against real PostgreSQL."""

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlmodel import col, func, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from api.posts.models import Post, PostStatus, PostTagLink
from api.tags.models import Tag
from api.users.models import User
from tests.support.client import assert_problem, client_for, error_fields
from tests.support.factories import make_post, make_tag, make_user


@pytest.fixture
async def alice(session: AsyncSession) -> User:
    return await make_user(session, username="alice")


@pytest.fixture
async def bob(session: AsyncSession) -> User:
    return await make_user(session, username="bob")


@pytest.fixture
async def as_alice(app: FastAPI, alice: User) -> Any:
    async with client_for(app, alice) as client:
        yield client


@pytest.fixture
async def as_bob(app: FastAPI, bob: User) -> Any:
    async with client_for(app, bob) as client:
        yield client


async def link(session: AsyncSession, post: Post, tag: Tag) -> None:
    """`post` tagged with `tag`, written straight to the table."""
    session.add(PostTagLink(post_id=post.id, tag_id=tag.id))  # type: ignore[arg-type]
    await session.flush()


async def reload(session: AsyncSession, post_id: int | None) -> Post | None:
    return await session.get(Post, post_id, populate_existing=True)


class TestCreatePost:
    async def test_a_draft_of_the_caller(
        self, as_alice: httpx.AsyncClient, alice: User, session: AsyncSession
    ) -> None:
        response = await as_alice.post(
            "/posts/", json={"title": "Hello World", "content": "First!", "author_id": 999}
        )

        assert response.status_code == 201
        body = response.json()
        assert body["slug"] == "hello-world"
        assert body["status"] == "draft"
        assert body["author_id"] == alice.id  # the body cannot name another author
        assert body["tags"] == []
        assert body["published_at"] is None

    async def test_the_body_cannot_set_what_the_server_owns(
        self, as_alice: httpx.AsyncClient, alice: User, session: AsyncSession
    ) -> None:
        sneaky = {
            "id": 4242,
            "status": "published",
            "view_count": 1000,
            "published_at": "2000-01-01T00:00:00Z",
            "created_at": "2000-01-01T00:00:00Z",
        }
        created = await as_alice.post("/posts/", json={"title": "Sly", "content": "x"} | sneaky)
        post_id = created.json()["id"]
        await as_alice.patch(f"/posts/{post_id}", json=sneaky | {"author_id": 999})

        db_post = await reload(session, post_id)
        assert db_post is not None
        assert db_post.id != 4242
        assert (db_post.status, db_post.view_count, db_post.published_at) == ("draft", 0, None)
        assert db_post.author_id == alice.id
        assert db_post.created_at.year > 2000

    async def test_duplicate_slug_is_409(
        self, as_alice: httpx.AsyncClient, alice: User, session: AsyncSession
    ) -> None:
        await make_post(session, author=alice, title="Taken")
        response = await as_alice.post("/posts/", json={"title": "Taken", "content": "x"})
        assert error_fields(assert_problem(response, 409, "already_exists")) == {"slug"}

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"content": "x"}, "body.title"),
            ({"title": "t"}, "body.content"),
            ({"title": "t" * 201, "content": "x"}, "body.title"),
            ({"title": "t", "content": "x", "slug": "Not Slug"}, "body.slug"),
            ({"title": "t", "content": "nul\x00"}, "body.content"),
        ],
    )
    async def test_bad_bodies_are_422(
        self, as_alice: httpx.AsyncClient, body: dict[str, Any], field: str
    ) -> None:
        response = await as_alice.post("/posts/", json=body)
        assert field in error_fields(assert_problem(response, 422, "validation_error"))

    async def test_anonymous_is_401(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/posts/", json={"title": "t", "content": "x"})
        assert_problem(response, 401, "unauthorized")


class TestVisibility:
    async def test_who_sees_what(
        self,
        client: httpx.AsyncClient,
        as_alice: httpx.AsyncClient,
        as_bob: httpx.AsyncClient,
        admin_client: httpx.AsyncClient,
        alice: User,
        session: AsyncSession,
    ) -> None:
        public = await make_post(session, author=alice, title="Public", status=PostStatus.published)
        draft = await make_post(session, author=alice, title="Draft")

        def titles(response: httpx.Response) -> list[str]:
            return [p["title"] for p in response.json()["items"]]

        assert titles(await client.get("/posts/")) == ["Public"]
        assert titles(await as_bob.get("/posts/")) == ["Public"]
        assert titles(await as_alice.get("/posts/")) == ["Public", "Draft"]
        assert titles(await admin_client.get("/posts/")) == ["Public", "Draft"]
        assert (await client.get(f"/posts/{public.id}")).status_code == 200
        assert_problem(await client.get(f"/posts/{draft.id}"), 404, "not_found")
        assert_problem(await as_bob.get(f"/posts/{draft.id}"), 404, "not_found")
        assert (await as_alice.get(f"/posts/{draft.id}")).status_code == 200

    async def test_filters(
        self, client: httpx.AsyncClient, alice: User, bob: User, session: AsyncSession
    ) -> None:
        tag = await make_tag(session, name="python")
        mine = await make_post(session, author=alice, title="Mine", status=PostStatus.published)
        await make_post(session, author=bob, title="Bobs", status=PostStatus.published)
        await link(session, mine, tag)

        by_author = (await client.get("/posts/", params={"author_id": alice.id})).json()
        by_tag = (await client.get("/posts/", params={"tag_id": tag.id})).json()
        drafts = (await client.get("/posts/", params={"status": "draft"})).json()

        assert [p["title"] for p in by_author["items"]] == ["Mine"]
        assert [p["title"] for p in by_tag["items"]] == ["Mine"]
        assert by_tag["items"][0]["tags"] == [{"id": tag.id, "name": "python", "slug": "python"}]
        assert drafts["total"] == 0

    @pytest.mark.parametrize("params", [{"status": "secret"}, {"author_id": 0}, {"tag_id": "x"}])
    async def test_bad_filters_are_422(
        self, client: httpx.AsyncClient, params: dict[str, Any]
    ) -> None:
        assert_problem(await client.get("/posts/", params=params), 422, "validation_error")

    async def test_a_bad_token_on_a_public_route_is_still_401(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.get("/posts/", headers={"Authorization": "Bearer nonsense"})
        assert_problem(response, 401, "unauthorized")

    async def test_reading_counts_views_in_sql(
        self, client: httpx.AsyncClient, alice: User, session: AsyncSession
    ) -> None:
        post = await make_post(session, author=alice, title="Read Me", status=PostStatus.published)

        first = await client.get(f"/posts/{post.id}")
        second = await client.get(f"/posts/{post.id}")

        assert [first.json()["view_count"], second.json()["view_count"]] == [1, 2]
        db_post = await reload(session, post.id)
        assert db_post is not None
        assert db_post.view_count == 2

    async def test_a_view_is_not_an_edit(
        self, client: httpx.AsyncClient, alice: User, session: AsyncSession
    ) -> None:
        post = await make_post(session, author=alice, title="Old News", status=PostStatus.published)
        edited = datetime(2020, 1, 1, tzinfo=UTC)
        await session.exec(update(Post).where(col(Post.id) == post.id).values(updated_at=edited))

        response = await client.get(f"/posts/{post.id}")

        assert response.json()["view_count"] == 1
        assert response.json()["updated_at"].startswith("2020-01-01")
        db_post = await reload(session, post.id)
        assert db_post is not None
        assert db_post.updated_at == edited

    async def test_a_hidden_post_is_not_counted(
        self, client: httpx.AsyncClient, alice: User, session: AsyncSession
    ) -> None:
        draft = await make_post(session, author=alice, title="Hidden")
        await client.get(f"/posts/{draft.id}")
        db_post = await reload(session, draft.id)
        assert db_post is not None
        assert db_post.view_count == 0


class TestWrites:
    async def test_the_author_edits(
        self, as_alice: httpx.AsyncClient, alice: User, session: AsyncSession
    ) -> None:
        post = await make_post(session, author=alice, title="Edit Me")
        response = await as_alice.patch(f"/posts/{post.id}", json={"content": "New words"})
        assert response.json()["content"] == "New words"

    async def test_another_user_gets_404_even_for_a_published_post(
        self, as_bob: httpx.AsyncClient, alice: User, session: AsyncSession
    ) -> None:
        post = await make_post(session, author=alice, title="Alices", status=PostStatus.published)

        assert_problem(
            await as_bob.patch(f"/posts/{post.id}", json={"title": "x"}), 404, "not_found"
        )
        assert_problem(await as_bob.delete(f"/posts/{post.id}"), 404, "not_found")
        db_post = await reload(session, post.id)
        assert db_post is not None
        assert db_post.title == "Alices"

    async def test_an_empty_edit_of_anothers_post_is_404_too(
        self, as_bob: httpx.AsyncClient, alice: User, session: AsyncSession
    ) -> None:
        post = await make_post(session, author=alice, title="Alices", status=PostStatus.published)
        assert_problem(await as_bob.patch(f"/posts/{post.id}", json={}), 404, "not_found")

    async def test_a_superuser_may_edit_and_the_answer_has_the_tags(
        self, admin_client: httpx.AsyncClient, alice: User, session: AsyncSession
    ) -> None:
        post = await make_post(session, author=alice, title="Tagged")
        tag = await make_tag(session, name="Kept")
        await link(session, post, tag)

        response = await admin_client.patch(f"/posts/{post.id}", json={"title": "Retitled"})

        assert response.status_code == 200
        assert (response.json()["title"], response.json()["author_id"]) == ("Retitled", alice.id)
        assert [t["name"] for t in response.json()["tags"]] == ["Kept"]
        db_post = await reload(session, post.id)
        assert db_post is not None
        assert db_post.title == "Retitled"

    async def test_taking_anothers_slug_is_409(
        self, as_alice: httpx.AsyncClient, alice: User, session: AsyncSession
    ) -> None:
        await make_post(session, author=alice, title="First")
        post = await make_post(session, author=alice, title="Second")

        response = await as_alice.patch(f"/posts/{post.id}", json={"slug": "first"})

        assert error_fields(assert_problem(response, 409, "already_exists")) == {"slug"}

    async def test_a_superuser_may_delete(
        self, admin_client: httpx.AsyncClient, alice: User, session: AsyncSession
    ) -> None:
        post = await make_post(session, author=alice, title="Gone")
        assert (await admin_client.delete(f"/posts/{post.id}")).status_code == 204
        assert await reload(session, post.id) is None

    async def test_deleting_a_tagged_post_unlinks_its_tags_and_keeps_them(
        self, as_alice: httpx.AsyncClient, alice: User, session: AsyncSession
    ) -> None:
        post = await make_post(session, author=alice, title="Tagged")
        tag = await make_tag(session, name="Kept")
        await link(session, post, tag)

        assert (await as_alice.delete(f"/posts/{post.id}")).status_code == 204

        assert await reload(session, post.id) is None
        links = select(func.count()).select_from(PostTagLink).where(PostTagLink.post_id == post.id)
        assert (await session.exec(links)).one() == 0
        assert (await session.exec(select(Tag).where(Tag.id == tag.id))).first() is not None

    async def test_null_title_is_422(
        self, as_alice: httpx.AsyncClient, alice: User, session: AsyncSession
    ) -> None:
        post = await make_post(session, author=alice, title="Keep")
        response = await as_alice.patch(f"/posts/{post.id}", json={"title": None})
        assert_problem(response, 422, "validation_error")


class TestStatus:
    async def test_publish_then_archive(
        self, as_alice: httpx.AsyncClient, alice: User, session: AsyncSession
    ) -> None:
        post = await make_post(session, author=alice, title="Lifecycle")

        published = await as_alice.patch(
            f"/posts/{post.id}/status", params={"new_status": "published"}
        )
        archived = await as_alice.patch(
            f"/posts/{post.id}/status", params={"new_status": "archived"}
        )

        assert published.json()["status"] == "published"
        assert published.json()["published_at"] is not None
        assert archived.json()["status"] == "archived"
        db_post = await reload(session, post.id)
        assert db_post is not None
        assert db_post.status == "archived"

    @pytest.mark.parametrize(
        ("start", "target"),
        [
            (PostStatus.draft, "archived"),
            (PostStatus.draft, "draft"),
            (PostStatus.archived, "published"),
            (PostStatus.published, "draft"),
        ],
    )
    async def test_other_moves_are_409_naming_both_states(
        self,
        as_alice: httpx.AsyncClient,
        alice: User,
        session: AsyncSession,
        start: PostStatus,
        target: str,
    ) -> None:
        post = await make_post(session, author=alice, title="Stuck", status=start)

        response = await as_alice.patch(f"/posts/{post.id}/status", params={"new_status": target})

        detail = assert_problem(response, 409, "invalid_status_transition")["detail"]
        assert start.value in detail
        assert target in detail

    async def test_unknown_status_is_422(
        self, as_alice: httpx.AsyncClient, alice: User, session: AsyncSession
    ) -> None:
        post = await make_post(session, author=alice, title="Odd")
        response = await as_alice.patch(f"/posts/{post.id}/status", params={"new_status": "gone"})
        assert_problem(response, 422, "validation_error")


class TestTags:
    async def test_tagging_is_idempotent(
        self, as_alice: httpx.AsyncClient, alice: User, session: AsyncSession
    ) -> None:
        post = await make_post(session, author=alice, title="Tagged")
        tag = await make_tag(session, name="python")

        first = await as_alice.put(f"/posts/{post.id}/tags/{tag.id}")
        again = await as_alice.put(f"/posts/{post.id}/tags/{tag.id}")

        assert (
            first.json()["tags"]
            == again.json()["tags"]
            == [{"id": tag.id, "name": "python", "slug": "python"}]
        )
        links = select(func.count()).select_from(PostTagLink)
        assert (await session.exec(links)).one() == 1

        removed = await as_alice.delete(f"/posts/{post.id}/tags/{tag.id}")
        removed_again = await as_alice.delete(f"/posts/{post.id}/tags/{tag.id}")

        assert removed.json()["tags"] == removed_again.json()["tags"] == []
        assert (await session.exec(links)).one() == 0

    async def test_a_missing_tag_is_404(
        self, as_alice: httpx.AsyncClient, alice: User, session: AsyncSession
    ) -> None:
        post = await make_post(session, author=alice, title="Tagged")
        body = assert_problem(await as_alice.put(f"/posts/{post.id}/tags/99999"), 404, "not_found")
        assert body["detail"] == "Tag with id 99999 not found"

    async def test_another_users_post_is_404(
        self, as_bob: httpx.AsyncClient, alice: User, session: AsyncSession
    ) -> None:
        post = await make_post(session, author=alice, title="Alices", status=PostStatus.published)
        tag = await make_tag(session, name="python")
        linked = await make_tag(session, name="rust")
        await link(session, post, linked)

        assert_problem(await as_bob.put(f"/posts/{post.id}/tags/{tag.id}"), 404, "not_found")
        assert_problem(await as_bob.delete(f"/posts/{post.id}/tags/{linked.id}"), 404, "not_found")

        links = select(PostTagLink.tag_id).where(PostTagLink.post_id == post.id)
        assert (await session.exec(links)).all() == [linked.id]

    async def test_a_missing_post_is_404_naming_the_post_even_with_a_missing_tag(
        self, as_alice: httpx.AsyncClient
    ) -> None:
        for response in (
            await as_alice.put("/posts/424242/tags/99999"),
            await as_alice.delete("/posts/424242/tags/99999"),
        ):
            body = assert_problem(response, 404, "not_found")
            assert body["detail"] == "Post with id 424242 not found"


async def test_deleting_the_author_deletes_their_posts(
    admin_client: httpx.AsyncClient, alice: User, session: AsyncSession
) -> None:
    post = await make_post(session, author=alice, title="Orphan")

    assert (await admin_client.delete(f"/users/{alice.id}")).status_code == 204

    assert await reload(session, post.id) is None
