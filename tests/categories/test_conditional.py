"""Conditional requests on a category: its ETag covers its children, so a child's change
through the child's own route changes it; If-None-Match, and If-Match on PATCH and DELETE."""

import httpx
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.categories.models import Category
from tests.support.client import assert_problem
from tests.support.conditional import STALE, tag_of
from tests.support.factories import make_category


async def stored_name(session: AsyncSession, category_id: int | None) -> str | None:
    statement = select(Category.name).where(Category.id == category_id)
    return (await session.exec(statement)).first()


class TestETag:
    async def test_a_childs_change_through_its_own_route_changes_the_parents_tag(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        parent = await make_category(session, name="Lighting")
        child = await make_category(session, name="Lamps", parent=parent)
        other = await make_category(session, name="Garden")
        url = f"/categories/{parent.id}"
        tags = [await tag_of(admin_client, url)]

        renamed = await admin_client.patch(f"/categories/{child.id}", json={"name": "Desk Lamps"})
        tags.append(await tag_of(admin_client, url))
        moved_in = await admin_client.patch(
            f"/categories/{other.id}", json={"parent_id": parent.id}
        )
        tags.append(await tag_of(admin_client, url))
        deleted = await admin_client.delete(f"/categories/{child.id}")
        tags.append(await tag_of(admin_client, url))

        assert [renamed.status_code, moved_in.status_code, deleted.status_code] == [200, 200, 204]
        assert len(set(tags)) == 4

    async def test_if_none_match_is_304_with_the_tag(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        category = await make_category(session, name="Lighting")
        tag = await tag_of(client, f"/categories/{category.id}")

        response = await client.get(
            f"/categories/{category.id}", headers={"If-None-Match": f"W/{tag}"}
        )

        assert response.status_code == 304
        assert (response.content, response.headers["ETag"]) == (b"", tag)


class TestIfMatch:
    async def test_a_tag_a_childs_change_made_stale_is_412_and_changes_nothing(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        parent = await make_category(session, name="Lighting")
        child = await make_category(session, name="Lamps", parent=parent)
        url = f"/categories/{parent.id}"
        tag = await tag_of(admin_client, url)
        await admin_client.patch(f"/categories/{child.id}", json={"name": "Desk Lamps"})

        patched = await admin_client.patch(url, json={"name": "Lights"}, headers={"If-Match": tag})
        deleted = await admin_client.delete(url, headers={"If-Match": tag})

        assert_problem(patched, 412, "precondition_failed")
        assert_problem(deleted, 412, "precondition_failed")
        assert await stored_name(session, parent.id) == "Lighting"

    async def test_the_current_tag_writes_and_answers_the_new_one(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        parent = await make_category(session, name="Lighting")
        await make_category(session, name="Lamps", parent=parent)
        url = f"/categories/{parent.id}"
        tag = await tag_of(admin_client, url)

        response = await admin_client.patch(url, json={"name": "Lights"}, headers={"If-Match": tag})

        assert response.status_code == 200, response.text
        assert [c["name"] for c in response.json()["children"]] == ["Lamps"]
        assert response.headers["ETag"] == await tag_of(admin_client, url) != tag
        assert await stored_name(session, parent.id) == "Lights"
        deleted = await admin_client.delete(url, headers={"If-Match": response.headers["ETag"]})
        assert deleted.status_code == 204
        assert await stored_name(session, parent.id) is None

    async def test_a_weak_or_malformed_tag_changes_nothing(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        category = await make_category(session, name="Lighting")
        url = f"/categories/{category.id}"
        tag = await tag_of(admin_client, url)

        weak = await admin_client.patch(url, json={"name": "A"}, headers={"If-Match": f"W/{tag}"})
        malformed = await admin_client.delete(url, headers={"If-Match": tag[1:]})
        stale = await admin_client.delete(url, headers={"If-Match": STALE})

        assert_problem(weak, 412, "precondition_failed")
        assert_problem(malformed, 400, "bad_request")
        assert_problem(stale, 412, "precondition_failed")
        assert await stored_name(session, category.id) == "Lighting"
