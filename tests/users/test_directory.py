"""The rest of the Users routes from the seeds: bulk create, search, by-email, stats, PUT,
soft delete, idle deactivation and a user with their posts."""

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.posts.models import PostStatus
from api.users.models import User
from tests.support.client import assert_problem, client_for, error_fields
from tests.support.factories import make_post, make_user


def new_user(n: int) -> dict[str, str]:
    return {"username": f"bulk_{n}", "email": f"bulk{n}@example.com", "password": "p" * 10}


async def non_admins(session: AsyncSession) -> int:
    query = select(func.count()).select_from(User).where(col(User.is_superuser).is_(False))
    return (await session.exec(query)).one()


class TestBulkCreate:
    async def test_all(self, admin_client: httpx.AsyncClient, session: AsyncSession) -> None:
        response = await admin_client.post("/users/bulk", json=[new_user(1), new_user(2)])

        assert response.status_code == 201
        assert [u["username"] for u in response.json()] == ["bulk_1", "bulk_2"]
        assert await non_admins(session) == 2

    async def test_or_nothing(self, admin_client: httpx.AsyncClient, session: AsyncSession) -> None:
        await make_user(session, email="bulk2@example.com")

        response = await admin_client.post("/users/bulk", json=[new_user(1), new_user(2)])

        body = assert_problem(response, 409, "already_exists")
        assert error_fields(body) == {"email"}
        assert "bulk2@example.com" in body["detail"]
        assert await non_admins(session) == 1

    @pytest.mark.parametrize("body", [[], [{"username": "x"}], {"not": "a list"}])
    async def test_bad_bodies_are_422(self, admin_client: httpx.AsyncClient, body: Any) -> None:
        assert_problem(await admin_client.post("/users/bulk", json=body), 422, "validation_error")

    async def test_more_than_100_is_422(self, admin_client: httpx.AsyncClient) -> None:
        response = await admin_client.post("/users/bulk", json=[new_user(n) for n in range(101)])
        assert_problem(response, 422, "validation_error")


class TestDirectory:
    async def test_search_filters_and_by_email(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        await make_user(session, username="zed", full_name="Zed Percent%")
        await make_user(session, username="yan", email="Yan@Example.com", is_active=False)

        searched = (await admin_client.get("/users/search", params={"q": "PERCENT%"})).json()
        inactive = (await admin_client.get("/users/", params={"is_active": False})).json()
        listed = (await admin_client.get("/users/", params={"search": "yan@"})).json()
        by_email = await admin_client.get("/users/by-email/YAN@example.com")
        count = (await admin_client.get("/users/stats/active-count")).json()

        assert [u["username"] for u in searched["items"]] == ["zed"]
        assert [u["username"] for u in inactive["items"]] == ["yan"]
        assert [u["username"] for u in listed["items"]] == ["yan"]
        assert by_email.json()["username"] == "yan"
        assert count == {"active_users": 2}  # zed and the superuser asking
        assert_problem(
            await admin_client.get("/users/by-email/nobody@example.com"), 404, "not_found"
        )
        # Also a path of notifications' /users/{user_id}/notifications: the lookup answers.
        assert_problem(await admin_client.get("/users/by-email/notifications"), 404, "not_found")
        assert_problem(await admin_client.get("/users/search"), 422, "validation_error")


class TestReplaceAndDeactivate:
    async def test_put_replaces_every_editable_field(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        user = await make_user(session, full_name="Old Name")

        response = await admin_client.put(
            f"/users/{user.id}",
            json={"username": "renamed", "email": "renamed@example.com", "is_active": False},
        )

        assert response.status_code == 200
        db_user = await session.get(User, user.id, populate_existing=True)
        assert db_user is not None
        assert (db_user.username, db_user.full_name, db_user.is_active) == ("renamed", None, False)

    async def test_put_needs_every_required_field(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        user = await make_user(session)
        response = await admin_client.put(f"/users/{user.id}", json={"username": "only"})
        assert error_fields(assert_problem(response, 422, "validation_error")) == {
            "body.email",
            "body.is_active",
        }

    async def test_soft_delete(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        user = await make_user(session)

        response = await admin_client.delete(f"/users/{user.id}/soft")

        assert response.status_code == 200
        assert response.json()["is_active"] is False
        db_user = await session.get(User, user.id, populate_existing=True)
        assert db_user is not None
        assert db_user.is_active is False

    async def test_put_taking_anothers_email_is_409_and_changes_nothing(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        await make_user(session, email="taken@example.com")
        user = await make_user(session, full_name="Kept")

        response = await admin_client.put(
            f"/users/{user.id}",
            json={"username": "renamed", "email": "taken@example.com", "is_active": True},
        )

        assert error_fields(assert_problem(response, 409, "already_exists")) == {"email"}
        db_user = await session.get(User, user.id, populate_existing=True)
        assert db_user is not None
        assert (db_user.username, db_user.full_name) == (user.username, "Kept")

    async def test_put_and_soft_delete_of_a_missing_user_are_404(
        self, admin_client: httpx.AsyncClient
    ) -> None:
        body = {"username": "nobody", "email": "nobody@example.com", "is_active": True}
        assert_problem(await admin_client.put("/users/987654", json=body), 404, "not_found")
        assert_problem(await admin_client.delete("/users/987654/soft"), 404, "not_found")

    async def test_deactivate_idle_users_but_never_superusers(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        idle = await make_user(session, username="idle")
        await make_user(session, username="busy")
        old_admin = await make_user(session, username="old_admin", is_superuser=True)
        long_ago = datetime.now(UTC) - timedelta(days=40)
        await session.exec(
            update(User)
            .where(col(User.id).in_([idle.id, old_admin.id]))
            .values(updated_at=long_ago)
        )

        response = await admin_client.patch("/users/bulk/deactivate", params={"days": 30})

        assert response.json() == {"deactivated": 1}
        active = select(User.username).where(col(User.is_active).is_(False))
        assert (await session.exec(active)).all() == ["idle"]
        assert_problem(
            await admin_client.patch("/users/bulk/deactivate", params={"days": 0}),
            422,
            "validation_error",
        )


class TestWithPosts:
    async def test_oneself_sees_drafts_a_superuser_too_others_get_404(
        self, app: FastAPI, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        alice = await make_user(session, username="alice")
        bob = await make_user(session, username="bob")
        await make_post(session, author=alice, title="Published", status=PostStatus.published)
        await make_post(session, author=alice, title="Draft")

        async with client_for(app, alice) as as_alice, client_for(app, bob) as as_bob:
            own = (await as_alice.get(f"/users/{alice.id}/with-posts")).json()
            other = await as_bob.get(f"/users/{alice.id}/with-posts")
        seen_by_admin = (await admin_client.get(f"/users/{alice.id}/with-posts")).json()

        assert [p["title"] for p in own["posts"]] == ["Published", "Draft"]
        assert [p["title"] for p in seen_by_admin["posts"]] == ["Published", "Draft"]
        assert "hashed_password" not in own
        assert_problem(other, 404, "not_found")
