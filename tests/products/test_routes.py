"""Products over HTTP: Decimal money, filters and sorting, atomic stock, public reads and
superuser writes, against real PostgreSQL."""

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlmodel import func, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from api.categories.models import Category
from api.core.models import MAX_ID
from api.products.models import MAX_STOCK, Product
from tests.support.client import assert_problem, error_fields
from tests.support.factories import make_category, make_product

MOUSE = {"name": "Wireless Mouse", "price": "79.99", "sku": "wm-001", "stock_quantity": 10}


async def count_products(session: AsyncSession) -> int:
    return (await session.exec(select(func.count()).select_from(Product))).one()


class TestCreateProduct:
    async def test_creates_with_decimal_price_slug_and_upper_sku(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        response = await admin_client.post("/products/", json=MOUSE)

        assert response.status_code == 201
        body = response.json()
        assert body["price"] == "79.99"
        assert body["slug"] == "wireless-mouse"
        assert body["sku"] == "WM-001"
        db_product = await session.get(Product, body["id"])
        assert db_product is not None
        assert db_product.price == Decimal("79.99")

    async def test_a_number_price_is_accepted(self, admin_client: httpx.AsyncClient) -> None:
        response = await admin_client.post("/products/", json=MOUSE | {"price": 19.5})
        assert response.json()["price"] == "19.50"

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"price": "0"}, "body.price"),
            ({"price": "-1"}, "body.price"),
            ({"price": "1.999"}, "body.price"),
            ({"price": "123456789.00"}, "body.price"),
            ({"price": "abc"}, "body.price"),
            ({"sku": "bad sku!"}, "body.sku"),
            ({"sku": "X" * 51}, "body.sku"),
            ({"stock_quantity": -1}, "body.stock_quantity"),
            ({"stock_quantity": 2**31}, "body.stock_quantity"),
            ({"stock_quantity": MAX_STOCK + 1}, "body.stock_quantity"),
            ({"name": ""}, "body.name"),
            ({"name": "n" * 201}, "body.name"),
            ({"slug": "Bad Slug"}, "body.slug"),
            ({"category_id": 0}, "body.category_id"),
        ],
    )
    async def test_bad_fields_are_422(
        self,
        admin_client: httpx.AsyncClient,
        session: AsyncSession,
        change: dict[str, Any],
        field: str,
    ) -> None:
        response = await admin_client.post("/products/", json=MOUSE | change)

        assert field in error_fields(assert_problem(response, 422, "validation_error"))
        assert await count_products(session) == 0

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"name": "Other", "slug": "other"}, "sku"),
            ({"name": "Other", "sku": "OTHER-1", "slug": "wireless-mouse"}, "slug"),
        ],
    )
    async def test_duplicates_are_409(
        self,
        admin_client: httpx.AsyncClient,
        session: AsyncSession,
        change: dict[str, Any],
        field: str,
    ) -> None:
        assert (await admin_client.post("/products/", json=MOUSE)).status_code == 201
        response = await admin_client.post("/products/", json=MOUSE | change)
        assert error_fields(assert_problem(response, 409, "already_exists")) == {field}
        assert await count_products(session) == 1

    async def test_one_name_per_category_and_no_category_is_one_group(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        books = await make_category(session, name="Gadgets")
        first = MOUSE | {"slug": "a", "sku": "A-1"}
        assert (await admin_client.post("/products/", json=first)).status_code == 201

        again = await admin_client.post("/products/", json=MOUSE | {"slug": "b", "sku": "B-1"})
        elsewhere = await admin_client.post(
            "/products/", json=MOUSE | {"slug": "c", "sku": "C-1", "category_id": books.id}
        )

        assert error_fields(assert_problem(again, 409, "already_exists")) == {"name"}
        assert elsewhere.status_code == 201

    async def test_a_missing_category_is_422(self, admin_client: httpx.AsyncClient) -> None:
        response = await admin_client.post("/products/", json=MOUSE | {"category_id": 99999})
        assert error_fields(assert_problem(response, 422, "invalid_reference")) == {"category_id"}

    async def test_anonymous_is_401(self, client: httpx.AsyncClient) -> None:
        assert_problem(await client.post("/products/", json=MOUSE), 401, "unauthorized")


class TestListProducts:
    async def test_filters_and_sort(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        gadgets = await make_category(session, name="Gadgets")
        cheap = await make_product(session, name="Cheap Cable", price="5.00", category=gadgets)
        dear = await make_product(session, name="Dear Drone", price="500.00", category=gadgets)
        await make_product(session, name="Loose Lamp", price="50.00")
        await make_product(session, name="Old Phone", price="20.00", is_active=False)

        def names(response: httpx.Response) -> list[str]:
            return [p["name"] for p in response.json()["items"]]

        by_category = await client.get("/products/", params={"category_id": gadgets.id})
        priced = await client.get("/products/", params={"min_price": "10", "max_price": "100"})
        active = await client.get("/products/", params={"is_active": False})
        search = await client.get("/products/", params={"q": "DRONE"})
        sorted_desc = await client.get("/products/", params={"sort": "-price"})

        assert names(by_category) == [cheap.name, dear.name]
        assert names(priced) == ["Loose Lamp", "Old Phone"]
        assert names(active) == ["Old Phone"]
        assert names(search) == ["Dear Drone"]
        assert names(sorted_desc) == ["Dear Drone", "Loose Lamp", "Old Phone", "Cheap Cable"]
        assert sorted_desc.json()["total"] == 4

    async def test_search_takes_wildcards_literally(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        await make_product(session, name="Plain Thing")
        await make_product(session, name="Hundred Percent", description="100% cotton")

        assert (await client.get("/products/", params={"q": "%"})).json()["total"] == 1
        assert (await client.get("/products/", params={"q": "_"})).json()["total"] == 0

    @pytest.mark.parametrize(
        "params",
        [
            {"min_price": "50", "max_price": "10"},
            {"sort": "price; drop table products"},
            {"min_price": "-1"},
            {"category_id": "x"},
            {"q": "q" * 101},
            {"size": 101},
        ],
    )
    async def test_bad_queries_are_422(
        self, client: httpx.AsyncClient, params: dict[str, str]
    ) -> None:
        assert_problem(await client.get("/products/", params=params), 422, "validation_error")


class TestReadProduct:
    async def test_by_id_sku_and_slug(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        product = await make_product(session, name="Desk Lamp")

        by_id = await client.get(f"/products/{product.id}")
        by_sku = await client.get("/products/by-sku/desk-lamp")
        by_slug = await client.get("/products/by-slug/desk-lamp")

        assert by_id.json() == by_sku.json() == by_slug.json()
        assert by_id.json()["price"] == "9.99"

    async def test_missing_are_404(self, client: httpx.AsyncClient) -> None:
        body = assert_problem(await client.get("/products/by-sku/NOPE-1"), 404, "not_found")
        assert body["detail"] == "Product with sku NOPE-1 not found"
        assert_problem(await client.get("/products/by-slug/nope"), 404, "not_found")
        assert_problem(await client.get("/products/999999"), 404, "not_found")

    async def test_bad_keys_are_422(self, client: httpx.AsyncClient) -> None:
        assert_problem(await client.get("/products/by-sku/bad%20sku"), 422, "validation_error")
        assert_problem(await client.get("/products/by-slug/Bad_Slug"), 422, "validation_error")
        assert_problem(await client.get("/products/0"), 422, "validation_error")

    async def test_with_categories(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        gadgets = await make_category(session, name="Gadgets")
        await make_product(session, name="Cable", category=gadgets)
        await make_product(session, name="Loose")
        await make_product(session, name="Hidden", is_active=False)

        items = (await client.get("/products/with-categories")).json()["items"]

        assert [(p["name"], p["category"] and p["category"]["name"]) for p in items] == [
            ("Cable", "Gadgets"),
            ("Loose", None),
        ]

    async def test_category_products(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        gadgets = await make_category(session, name="Gadgets")
        for name in ("One", "Two", "Three"):
            await make_product(session, name=name, category=gadgets)

        body = (await client.get(f"/categories/{gadgets.id}/products", params={"size": 2})).json()

        assert body["category"]["name"] == "Gadgets"
        assert body["product_count"] == 3
        assert [p["name"] for p in body["products"]["items"]] == ["One", "Two"]
        assert_problem(await client.get("/categories/999999/products"), 404, "not_found")


class TestAdminReads:
    async def test_low_stock_and_stats(
        self, admin_client: httpx.AsyncClient, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        gadgets = await make_category(session, name="Gadgets")
        await make_product(session, name="A", price="10.00", stock=1, category=gadgets)
        await make_product(session, name="B", price="20.01", stock=50, category=gadgets)
        await make_product(session, name="C", price="99.00", stock=0, is_active=False)

        low = (await admin_client.get("/products/low-stock", params={"threshold": 5})).json()
        stats = (await admin_client.get("/products/by-category-stats")).json()

        assert [p["name"] for p in low["items"]] == ["A"]
        assert stats == [
            {
                "category": "Gadgets",
                "product_count": 2,
                "avg_price": "15.01",
                "min_price": "10.00",
                "max_price": "20.01",
            }
        ]
        assert_problem(await client.get("/products/low-stock"), 401, "unauthorized")
        assert_problem(
            await admin_client.get("/products/low-stock", params={"threshold": 0}),
            422,
            "validation_error",
        )


class TestStock:
    async def test_add_and_take(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        product = await make_product(session, name="Widget", stock=5)

        added = await admin_client.post(f"/products/{product.id}/stock", json={"change": 3})
        taken = await admin_client.post(f"/products/{product.id}/stock", json={"change": -8})

        assert added.json()["stock_quantity"] == 8
        assert taken.json()["stock_quantity"] == 0
        # The answer is the whole row as stored, as a read of it answers.
        assert taken.json() == (await admin_client.get(f"/products/{product.id}")).json()

    async def test_never_below_zero(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        product = await make_product(session, name="Widget", stock=2)

        response = await admin_client.post(f"/products/{product.id}/stock", json={"change": -3})

        body = assert_problem(response, 409, "insufficient_stock")
        assert "Only 2 in stock" in body["detail"]
        await session.refresh(product)
        assert product.stock_quantity == 2

    async def test_a_stock_above_the_maximum_reads_and_takes(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        # A cancelled order's items go back even past MAX_STOCK; such a stock still reads.
        product = await make_product(session, name="Widget")
        await session.exec(update(Product).values(stock_quantity=MAX_STOCK + 500))

        read = await admin_client.get(f"/products/{product.id}")
        taken = await admin_client.post(f"/products/{product.id}/stock", json={"change": -10})

        assert read.json()["stock_quantity"] == MAX_STOCK + 500
        assert taken.status_code == 200, taken.text
        assert taken.json()["stock_quantity"] == MAX_STOCK + 490

    @pytest.mark.parametrize("stock", [MAX_STOCK - 2, MAX_ID])
    async def test_a_change_past_the_maximum_is_409_and_changes_nothing(
        self, admin_client: httpx.AsyncClient, session: AsyncSession, stock: int
    ) -> None:
        # MAX_ID: a stock set before MAX_STOCK existed, where the sum passed the column's range.
        product = await make_product(session, name="Widget")
        await session.exec(update(Product).values(stock_quantity=stock))

        response = await admin_client.post(f"/products/{product.id}/stock", json={"change": 3})

        body = assert_problem(response, 409, "stock_limit")
        assert error_fields(body) == {"change"}
        assert str(MAX_STOCK) in body["detail"]
        await session.refresh(product)
        assert product.stock_quantity == stock

    @pytest.mark.parametrize(
        "body",
        [{}, {"change": "lots"}, {"change": MAX_STOCK + 1}, {"change": 2**31}, {"change": 1.5}],
    )
    async def test_bad_bodies_are_422(
        self, admin_client: httpx.AsyncClient, session: AsyncSession, body: dict[str, Any]
    ) -> None:
        product = await make_product(session, name="Widget")
        response = await admin_client.post(f"/products/{product.id}/stock", json=body)
        assert_problem(response, 422, "validation_error")

    async def test_missing_product_is_404(self, admin_client: httpx.AsyncClient) -> None:
        response = await admin_client.post("/products/999999/stock", json={"change": 1})
        assert_problem(response, 404, "not_found")


class TestUpdateAndDelete:
    async def test_update(self, admin_client: httpx.AsyncClient, session: AsyncSession) -> None:
        product = await make_product(session, name="Widget")

        response = await admin_client.patch(
            f"/products/{product.id}", json={"price": "12.50", "sku": "new-sku"}
        )

        assert response.json()["price"] == "12.50"
        assert response.json()["sku"] == "NEW-SKU"
        await session.refresh(product)
        assert product.price == Decimal("12.50")

    async def test_an_update_stamps_updated_at_and_an_empty_one_changes_nothing(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        product = await make_product(session, name="Widget")
        long_ago = datetime(2020, 1, 1, tzinfo=UTC)
        await session.exec(update(Product).values(updated_at=long_ago))

        unchanged = await admin_client.patch(f"/products/{product.id}", json={})
        assert unchanged.status_code == 200
        assert unchanged.json()["name"] == "Widget"
        assert datetime.fromisoformat(unchanged.json()["updated_at"]) == long_ago

        response = await admin_client.patch(f"/products/{product.id}", json={"stock_quantity": 9})

        assert response.status_code == 200
        assert response.json()["stock_quantity"] == 9
        assert response.json()["name"] == "Widget"
        stamped = datetime.fromisoformat(response.json()["updated_at"])
        assert stamped > long_ago
        await session.refresh(product)
        assert (product.stock_quantity, product.updated_at) == (9, stamped)

    @pytest.mark.parametrize("field", ["sku", "slug"])
    async def test_taking_anothers_sku_or_slug_is_409_and_changes_nothing(
        self, admin_client: httpx.AsyncClient, session: AsyncSession, field: str
    ) -> None:
        await make_product(session, name="Taken")
        product = await make_product(session, name="Widget")

        response = await admin_client.patch(
            f"/products/{product.id}", json={field: "taken", "price": "1.00"}
        )

        assert error_fields(assert_problem(response, 409, "already_exists")) == {field}
        await session.refresh(product)
        assert (product.sku, product.slug, product.price) == ("WIDGET", "widget", Decimal("9.99"))

    async def test_an_unknown_category_is_422_naming_it(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        product = await make_product(session, name="Widget")

        response = await admin_client.patch(f"/products/{product.id}", json={"category_id": 987654})

        body = assert_problem(response, 422, "invalid_reference")
        assert error_fields(body) == {"category_id"}
        await session.refresh(product)
        assert product.category_id is None

    @pytest.mark.parametrize("body", [{"price": "1.00"}, {}])
    async def test_a_missing_product_is_404(
        self, admin_client: httpx.AsyncClient, body: dict[str, Any]
    ) -> None:
        response = await admin_client.patch("/products/987654", json=body)
        assert "987654" in assert_problem(response, 404, "not_found")["detail"]

    @pytest.mark.parametrize(
        "change",
        [
            {"price": None},
            {"price": "0"},
            {"stock_quantity": -1},
            {"stock_quantity": MAX_STOCK + 1},
        ],
    )
    async def test_bad_updates_are_422(
        self, admin_client: httpx.AsyncClient, session: AsyncSession, change: dict[str, Any]
    ) -> None:
        product = await make_product(session, name="Widget")
        response = await admin_client.patch(f"/products/{product.id}", json=change)
        assert_problem(response, 422, "validation_error")

    async def test_delete(self, admin_client: httpx.AsyncClient, session: AsyncSession) -> None:
        product = await make_product(session, name="Widget")
        assert (await admin_client.delete(f"/products/{product.id}")).status_code == 204
        assert await count_products(session) == 0

    async def test_deleting_a_category_uncategorises_its_products(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        gadgets = await make_category(session, name="Gadgets")
        product = await make_product(session, name="Widget", category=gadgets)

        assert (await admin_client.delete(f"/categories/{gadgets.id}")).status_code == 204

        await session.refresh(product)
        assert product.category_id is None

    async def test_deleting_a_category_that_would_collide_is_409_naming_the_product(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        gadgets = await make_category(session, name="Gadgets")
        await make_product(session, name="Widget", category=gadgets)
        loose = Product(name="Widget", slug="loose-widget", sku="LOOSE-1", price=Decimal("1.00"))
        session.add(loose)
        await session.flush()

        response = await admin_client.delete(f"/categories/{gadgets.id}")

        assert "Widget" in assert_problem(response, 409, "already_exists")["detail"]
        assert await session.get(Category, gadgets.id) is not None
