"""Categories over HTTP: a tree, public to read, a superuser's to write. The four default
categories come from a data migration, so every test starts with them."""

from typing import Any

import httpx
import pytest
from sqlmodel import col, func, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from api.categories.models import Category
from tests.support.client import assert_problem, error_fields
from tests.support.factories import make_category

DEFAULTS = ["Electronics", "Clothing", "Books", "Home & Garden"]


async def reload(session: AsyncSession, category_id: int | None) -> Category | None:
    return await session.get(Category, category_id, populate_existing=True)


async def test_the_default_categories_come_from_the_migrations(client: httpx.AsyncClient) -> None:
    body = (await client.get("/categories/")).json()

    assert [c["name"] for c in body["items"]] == DEFAULTS
    assert [c["slug"] for c in body["items"]][-1] == "home-garden"
    assert body["total"] == 4


class TestCreateCategory:
    async def test_creates_under_a_parent(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        parent = await make_category(session, name="Audio")

        response = await admin_client.post(
            "/categories/", json={"name": "Head Phones", "parent_id": parent.id}
        )

        assert response.status_code == 201
        body = response.json()
        assert body["slug"] == "head-phones"
        assert body["parent_id"] == parent.id
        db_category = await reload(session, body["id"])
        assert db_category is not None
        assert db_category.parent_id == parent.id

    async def test_the_seed_walkthrough_create_is_a_409(
        self, admin_client: httpx.AsyncClient
    ) -> None:
        body = {"name": "Electronics", "slug": "electronics", "description": "Electronic devices"}
        response = await admin_client.post("/categories/", json=body)
        assert error_fields(assert_problem(response, 409, "already_exists")) == {"name"}

    async def test_a_missing_parent_is_422_naming_it(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        response = await admin_client.post(
            "/categories/", json={"name": "Orphan", "parent_id": 99999}
        )

        body = assert_problem(response, 422, "invalid_reference")
        assert error_fields(body) == {"parent_id"}
        count = select(func.count()).select_from(Category)
        assert (await session.exec(count)).one() == 4

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({}, "body.name"),
            ({"name": "x" * 101}, "body.name"),
            ({"name": "ok", "slug": "UPPER"}, "body.slug"),
            ({"name": "ok", "description": "d" * 2001}, "body.description"),
            ({"name": "ok", "parent_id": 0}, "body.parent_id"),
            ({"name": "ok", "parent_id": 2**31}, "body.parent_id"),
            ({"name": "ok", "parent_id": "one"}, "body.parent_id"),
        ],
    )
    async def test_bad_bodies_are_422(
        self, admin_client: httpx.AsyncClient, body: dict[str, Any], field: str
    ) -> None:
        response = await admin_client.post("/categories/", json=body)
        assert field in error_fields(assert_problem(response, 422, "validation_error"))

    async def test_a_user_is_403(self, app: Any, session: AsyncSession) -> None:
        from tests.support.client import client_for
        from tests.support.factories import make_user

        async with client_for(app, await make_user(session)) as as_user:
            response = await as_user.post("/categories/", json={"name": "Nope"})
        assert_problem(response, 403, "forbidden")


class TestReadCategory:
    async def test_get_has_its_children(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        parent = await make_category(session, name="Audio")
        first = await make_category(session, name="Speakers", parent=parent)
        second = await make_category(session, name="Cables", parent=parent)

        body = (await client.get(f"/categories/{parent.id}")).json()

        assert [c["id"] for c in body["children"]] == [first.id, second.id]
        assert body["children"][0]["parent_id"] == parent.id

    async def test_missing_is_404(self, client: httpx.AsyncClient) -> None:
        assert_problem(await client.get("/categories/424242"), 404, "not_found")

    async def test_bad_id_is_422(self, client: httpx.AsyncClient) -> None:
        assert_problem(await client.get("/categories/-1"), 422, "validation_error")


class TestUpdateCategory:
    async def test_move_under_another_parent_and_back_to_the_top(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        parent = await make_category(session, name="Audio")
        child = await make_category(session, name="Speakers")

        moved = await admin_client.patch(f"/categories/{child.id}", json={"parent_id": parent.id})
        assert moved.json()["parent_id"] == parent.id
        top = await admin_client.patch(f"/categories/{child.id}", json={"parent_id": None})
        assert top.json()["parent_id"] is None
        db_child = await reload(session, child.id)
        assert db_child is not None
        assert db_child.parent_id is None

    async def test_a_renamed_category_answers_with_its_children(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        parent = await make_category(session, name="Audio")
        speakers = await make_category(session, name="Speakers", parent=parent)
        headphones = await make_category(session, name="Headphones", parent=parent)

        response = await admin_client.patch(f"/categories/{parent.id}", json={"name": "Sound"})

        assert response.status_code == 200
        assert response.json()["name"] == "Sound"
        # In the order they were created (by id), as GET gives them.
        assert [c["id"] for c in response.json()["children"]] == [speakers.id, headphones.id]

    @pytest.mark.parametrize("body", [{"name": "Sound"}, {"parent_id": 424242}, {}])
    async def test_a_missing_category_is_404(
        self, admin_client: httpx.AsyncClient, body: dict[str, Any]
    ) -> None:
        response = await admin_client.patch("/categories/424242", json=body)
        assert_problem(response, 404, "not_found")

    @pytest.mark.parametrize("target", ["self", "grandchild"])
    async def test_a_cycle_is_422(
        self, admin_client: httpx.AsyncClient, session: AsyncSession, target: str
    ) -> None:
        root = await make_category(session, name="Root")
        child = await make_category(session, name="Child", parent=root)
        grandchild = await make_category(session, name="Grandchild", parent=child)
        new_parent = root.id if target == "self" else grandchild.id

        response = await admin_client.patch(
            f"/categories/{root.id}", json={"parent_id": new_parent}
        )

        assert error_fields(assert_problem(response, 422, "invalid_reference")) == {"parent_id"}
        db_root = await reload(session, root.id)
        assert db_root is not None
        assert db_root.parent_id is None

    async def test_a_cycle_already_in_the_table_is_walked_once_and_can_be_broken(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        first = await make_category(session, name="First")
        second = await make_category(session, name="Second", parent=first)
        top = await make_category(session, name="Top")
        # First under Second under First: written straight to the table, as no move can now.
        cycle = update(Category).where(col(Category.id) == first.id).values(parent_id=second.id)
        await session.exec(cycle)

        looped = await admin_client.patch(f"/categories/{first.id}", json={"parent_id": second.id})
        assert error_fields(assert_problem(looped, 422, "invalid_reference")) == {"parent_id"}
        broken = await admin_client.patch(f"/categories/{first.id}", json={"parent_id": top.id})
        assert broken.status_code == 200
        assert broken.json()["parent_id"] == top.id

    async def test_taking_a_default_name_is_409(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        category = await make_category(session, name="Audio")
        response = await admin_client.patch(f"/categories/{category.id}", json={"name": "Books"})
        assert error_fields(assert_problem(response, 409, "already_exists")) == {"name"}


class TestDeleteCategory:
    async def test_children_become_top_level(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        parent = await make_category(session, name="Audio")
        child = await make_category(session, name="Speakers", parent=parent)

        assert (await admin_client.delete(f"/categories/{parent.id}")).status_code == 204

        assert await reload(session, parent.id) is None
        db_child = await reload(session, child.id)
        assert db_child is not None
        assert db_child.parent_id is None
        names = (await session.exec(select(Category.name).order_by(col(Category.id)))).all()
        assert names == [*DEFAULTS, "Speakers"]

    async def test_missing_is_404(self, admin_client: httpx.AsyncClient) -> None:
        assert_problem(await admin_client.delete("/categories/424242"), 404, "not_found")
