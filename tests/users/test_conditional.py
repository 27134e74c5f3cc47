"""Conditional requests on a user: /users/me and /users/{id} show one representation and send
one tag; If-Match on PATCH /users/me and on a superuser's PUT, PATCH, DELETE and soft delete."""

import httpx
from fastapi import FastAPI
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.users.models import User
from tests.support.client import assert_problem, client_for
from tests.support.conditional import STALE, tag_of
from tests.support.factories import make_user


async def stored(session: AsyncSession, user_id: int | None) -> tuple[str | None, bool] | None:
    statement = select(User.bio, User.is_active).where(User.id == user_id)
    row = (await session.exec(statement)).first()
    return None if row is None else (row[0], row[1])


class TestConditionalUser:
    async def test_me_and_my_id_share_a_tag_that_a_superusers_write_changes(
        self, app: FastAPI, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        user = await make_user(session)
        async with client_for(app, user) as me:
            tag = await tag_of(me, "/users/me")
            assert await tag_of(me, f"/users/{user.id}") == tag
            assert await tag_of(admin_client, f"/users/{user.id}") == tag
            not_modified = await me.get("/users/me", headers={"If-None-Match": tag})

            changed = await admin_client.patch(f"/users/{user.id}", json={"bio": "Lamps."})

            assert not_modified.status_code == 304
            assert not_modified.content == b""
            assert changed.status_code == 200, changed.text
            assert await tag_of(me, "/users/me") == changed.headers["ETag"] != tag

    async def test_my_patch_with_a_stale_tag_is_412_and_with_mine_writes(
        self, app: FastAPI, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        user = await make_user(session)
        async with client_for(app, user) as me:
            tag = await tag_of(me, "/users/me")
            await admin_client.patch(f"/users/{user.id}", json={"full_name": "Ann Other"})

            stale = await me.patch("/users/me", json={"bio": "Mine."}, headers={"If-Match": tag})
            assert_problem(stale, 412, "precondition_failed")
            assert await stored(session, user.id) == (None, True)

            current = await tag_of(me, "/users/me")
            written = await me.patch(
                "/users/me", json={"bio": "Mine."}, headers={"If-Match": current}
            )
            assert written.status_code == 200, written.text
            assert written.headers["ETag"] == await tag_of(me, "/users/me")
            assert await stored(session, user.id) == ("Mine.", True)

    async def test_a_superusers_writes_with_a_stale_tag_change_nothing(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        user = await make_user(session)
        url = f"/users/{user.id}"
        replace = {"username": "renamed", "email": "renamed@example.com", "is_active": False}
        headers = {"If-Match": STALE}

        answers = [
            await admin_client.put(url, json=replace, headers=headers),
            await admin_client.patch(url, json={"bio": "X"}, headers=headers),
            await admin_client.delete(url, headers=headers),
            await admin_client.delete(f"{url}/soft", headers=headers),
        ]

        for response in answers:
            assert_problem(response, 412, "precondition_failed")
        assert await stored(session, user.id) == (None, True)

    async def test_a_superusers_writes_with_the_current_tag(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        user = await make_user(session)
        url = f"/users/{user.id}"

        soft = await admin_client.delete(
            f"{url}/soft", headers={"If-Match": await tag_of(admin_client, url)}
        )
        deleted = await admin_client.delete(url, headers={"If-Match": soft.headers["ETag"]})

        assert soft.status_code == 200, soft.text
        assert soft.json()["is_active"] is False
        assert deleted.status_code == 204, deleted.text
        assert await stored(session, user.id) is None
