"""Tags over HTTP: public reads, superuser writes, the database deciding uniqueness."""

from typing import Any

import httpx
import pytest
from sqlmodel import func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.tags.models import Tag
from tests.support.client import assert_problem, error_fields
from tests.support.factories import make_tag


async def count_tags(session: AsyncSession) -> int:
    return (await session.exec(select(func.count()).select_from(Tag))).one()


class TestCreateTag:
    async def test_creates_with_a_derived_slug(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        response = await admin_client.post("/tags/", json={"name": "Async Python!"})

        assert response.status_code == 201
        assert response.json()["slug"] == "async-python"
        db_tag = await session.get(Tag, response.json()["id"])
        assert db_tag is not None
        assert db_tag.name == "Async Python!"

    async def test_keeps_a_given_slug(self, admin_client: httpx.AsyncClient) -> None:
        response = await admin_client.post("/tags/", json={"name": "FastAPI", "slug": "fast-api"})
        assert response.json()["slug"] == "fast-api"

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"name": "python", "slug": "other"}, "name"),
            ({"name": "Other", "slug": "python"}, "slug"),
        ],
    )
    async def test_duplicates_are_409_naming_the_field(
        self,
        admin_client: httpx.AsyncClient,
        session: AsyncSession,
        body: dict[str, str],
        field: str,
    ) -> None:
        await make_tag(session, name="python")

        body_ = assert_problem(await admin_client.post("/tags/", json=body), 409, "already_exists")

        assert error_fields(body_) == {field}
        assert await count_tags(session) == 1

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({}, "body.name"),
            ({"name": ""}, "body.name"),
            ({"name": "x" * 51}, "body.name"),
            ({"name": 5}, "body.name"),
            ({"name": "nul\x00"}, "body.name"),
            ({"name": "ok", "slug": "Not A Slug"}, "body.slug"),
            ({"name": "ok", "slug": "s" * 51}, "body.slug"),
        ],
    )
    async def test_bad_bodies_are_422(
        self,
        admin_client: httpx.AsyncClient,
        session: AsyncSession,
        body: dict[str, Any],
        field: str,
    ) -> None:
        response = await admin_client.post("/tags/", json=body)

        assert field in error_fields(assert_problem(response, 422, "validation_error"))
        assert await count_tags(session) == 0

    async def test_anonymous_is_401(self, client: httpx.AsyncClient) -> None:
        assert_problem(await client.post("/tags/", json={"name": "x"}), 401, "unauthorized")


class TestReadTags:
    async def test_list_and_get_are_public(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        first = await make_tag(session, name="alpha")
        await make_tag(session, name="beta")

        listed = (await client.get("/tags/", params={"size": 1})).json()
        one = await client.get(f"/tags/{first.id}")

        assert listed["total"] == 2
        assert [t["name"] for t in listed["items"]] == ["alpha"]
        assert one.json() == {"id": first.id, "name": "alpha", "slug": "alpha"}

    async def test_missing_is_404(self, client: httpx.AsyncClient) -> None:
        body = assert_problem(await client.get("/tags/999999"), 404, "not_found")
        assert body["detail"] == "Tag with id 999999 not found"

    @pytest.mark.parametrize("bad", ["0", "-3", "x", str(2**31)])
    async def test_bad_ids_are_422(self, client: httpx.AsyncClient, bad: str) -> None:
        assert_problem(await client.get(f"/tags/{bad}"), 422, "validation_error")


class TestUpdateAndDeleteTag:
    async def test_rename(self, admin_client: httpx.AsyncClient, session: AsyncSession) -> None:
        tag = await make_tag(session, name="old")

        response = await admin_client.patch(f"/tags/{tag.id}", json={"name": "new"})

        assert response.json()["name"] == "new"
        assert response.json()["slug"] == "old"
        await session.refresh(tag)
        assert tag.name == "new"

    async def test_rename_onto_another_is_409(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        await make_tag(session, name="taken")
        tag = await make_tag(session, name="mine")

        response = await admin_client.patch(f"/tags/{tag.id}", json={"slug": "taken"})

        assert error_fields(assert_problem(response, 409, "already_exists")) == {"slug"}

    async def test_null_name_is_422(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        tag = await make_tag(session, name="keep")
        response = await admin_client.patch(f"/tags/{tag.id}", json={"name": None})
        assert_problem(response, 422, "validation_error")

    async def test_delete(self, admin_client: httpx.AsyncClient, session: AsyncSession) -> None:
        tag = await make_tag(session, name="gone")

        assert (await admin_client.delete(f"/tags/{tag.id}")).status_code == 204

        assert await count_tags(session) == 0
        assert_problem(await admin_client.delete(f"/tags/{tag.id}"), 404, "not_found")
