"""Conditional requests on a tag: ETag, If-None-Match, If-Match on PATCH and DELETE."""

import httpx
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.tags.models import Tag
from tests.support.client import assert_problem
from tests.support.conditional import STALE, tag_of
from tests.support.factories import make_tag


async def stored_name(session: AsyncSession, tag_id: int | None) -> str | None:
    return (await session.exec(select(Tag.name).where(Tag.id == tag_id))).first()


class TestConditionalTag:
    async def test_if_none_match_is_304_until_a_rename(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        tag = await make_tag(session, name="Lighting")
        url = f"/tags/{tag.id}"
        etag = await tag_of(admin_client, url)

        unchanged = await admin_client.get(url, headers={"If-None-Match": etag})
        renamed = await admin_client.patch(url, json={"name": "Lights"})
        changed = await admin_client.get(url, headers={"If-None-Match": etag})

        assert unchanged.status_code == 304
        assert unchanged.content == b""
        assert changed.status_code == 200
        assert changed.headers["ETag"] == renamed.headers["ETag"] != etag

    async def test_a_stale_tag_is_412_and_changes_nothing(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        tag = await make_tag(session, name="Lighting")
        url = f"/tags/{tag.id}"

        patched = await admin_client.patch(url, json={"name": "X"}, headers={"If-Match": STALE})
        deleted = await admin_client.delete(url, headers={"If-Match": STALE})

        assert_problem(patched, 412, "precondition_failed")
        assert_problem(deleted, 412, "precondition_failed")
        assert await stored_name(session, tag.id) == "Lighting"

    async def test_the_current_tag_writes(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        tag = await make_tag(session, name="Lighting")
        url = f"/tags/{tag.id}"

        patched = await admin_client.patch(
            url, json={"name": "Lights"}, headers={"If-Match": await tag_of(admin_client, url)}
        )
        deleted = await admin_client.delete(url, headers={"If-Match": patched.headers["ETag"]})

        assert patched.status_code == 200, patched.text
        assert deleted.status_code == 204
        assert await stored_name(session, tag.id) is None
