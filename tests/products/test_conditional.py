"""Conditional requests on a product: its ETag, If-None-Match's 304 and If-Match on every write
that changes it (PATCH, DELETE, a stock change), bad headers, and the database left as it was
by a refused write. The race of two writers with one tag is in test_concurrency.py."""

from decimal import Decimal

import httpx
import pytest
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.core.conditional import etag
from api.products.models import Product
from tests.support.client import assert_problem
from tests.support.factories import make_product

STALE = '"0123456789abcdef0123456789abcdef"'
MALFORMED = ["abc", '"abc', "W/abc", '"a b"', '"abc" x', ",", '*, "abc"', 'w/"abc"']


async def stored(session: AsyncSession, product: Product) -> Product | None:
    """The product as the database holds it now, re-queried."""
    statement = select(Product).where(Product.id == product.id)
    return (await session.exec(statement.execution_options(populate_existing=True))).first()


async def stored_figures(session: AsyncSession, product: Product) -> tuple[Decimal, int] | None:
    """The stored product's price and stock."""
    db_product = await stored(session, product)
    return None if db_product is None else (db_product.price, db_product.stock_quantity)


async def read(client: httpx.AsyncClient, product: Product) -> httpx.Response:
    response = await client.get(f"/products/{product.id}")
    assert response.status_code == 200, response.text
    return response


class TestETag:
    async def test_a_read_sends_the_tag_of_its_body(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        product = await make_product(session, name="Widget", price="12.50")

        response = await read(client, product)

        assert response.headers["ETag"] == etag(response.content)
        assert response.headers["content-type"] == "application/json"
        assert response.json()["price"] == "12.50"
        assert response.json()["id"] == product.id
        again = await read(client, product)
        assert again.headers["ETag"] == response.headers["ETag"]

    async def test_every_write_through_any_route_changes_the_tag(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        product = await make_product(session, name="Widget", stock=10)
        url = f"/products/{product.id}"
        tags = [(await read(admin_client, product)).headers["ETag"]]

        patched = await admin_client.patch(url, json={"price": "1.25"})
        tags.append((await read(admin_client, product)).headers["ETag"])
        stocked = await admin_client.post(f"{url}/stock", json={"change": -1})
        tags.append((await read(admin_client, product)).headers["ETag"])
        ordered = await admin_client.post(
            "/orders/", json={"items": [{"product_id": product.id, "quantity": 2}]}
        )
        tags.append((await read(admin_client, product)).headers["ETag"])

        assert [patched.status_code, stocked.status_code, ordered.status_code] == [200, 200, 201]
        assert len(set(tags)) == 4
        # A write answers the tag a read of it then gives.
        assert patched.headers["ETag"] == tags[1] == etag(patched.content)
        assert stocked.headers["ETag"] == tags[2]


class TestIfNoneMatch:
    @pytest.mark.parametrize(
        "header",
        ["{tag}", "W/{tag}", f"{STALE}, {{tag}}", f"{STALE},{{tag}} ,", "*", " {tag} "],
    )
    async def test_a_match_is_304_with_the_tag_and_no_body(
        self, client: httpx.AsyncClient, session: AsyncSession, header: str
    ) -> None:
        product = await make_product(session, name="Widget")
        tag = (await read(client, product)).headers["ETag"]

        response = await client.get(
            f"/products/{product.id}", headers={"If-None-Match": header.format(tag=tag)}
        )

        assert response.status_code == 304
        assert response.content == b""
        assert response.headers["ETag"] == tag

    async def test_several_header_lines_are_one_list(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        product = await make_product(session, name="Widget")
        tag = (await read(client, product)).headers["ETag"]

        response = await client.get(
            f"/products/{product.id}", headers=[("If-None-Match", STALE), ("If-None-Match", tag)]
        )

        assert response.status_code == 304

    @pytest.mark.parametrize("header", [STALE, f"W/{STALE}", f'{STALE}, "other"'])
    async def test_a_changed_product_is_answered_whole(
        self, client: httpx.AsyncClient, session: AsyncSession, header: str
    ) -> None:
        product = await make_product(session, name="Widget")

        response = await client.get(f"/products/{product.id}", headers={"If-None-Match": header})

        assert response.status_code == 200
        assert response.json()["name"] == "Widget"
        assert response.headers["ETag"] == etag(response.content)

    @pytest.mark.parametrize("header", MALFORMED)
    async def test_a_malformed_header_is_400(
        self, client: httpx.AsyncClient, session: AsyncSession, header: str
    ) -> None:
        product = await make_product(session, name="Widget")

        response = await client.get(f"/products/{product.id}", headers={"If-None-Match": header})

        assert_problem(response, 400, "bad_request")

    async def test_a_missing_product_is_404_whatever_the_header(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.get("/products/987654", headers={"If-None-Match": "*"})

        assert_problem(response, 404, "not_found")


class TestIfMatch:
    async def test_the_current_tag_writes_and_answers_the_new_tag(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        product = await make_product(session, name="Widget")
        tag = (await read(admin_client, product)).headers["ETag"]

        response = await admin_client.patch(
            f"/products/{product.id}", json={"price": "3.50"}, headers={"If-Match": tag}
        )

        assert response.status_code == 200, response.text
        assert response.json()["price"] == "3.50"
        new_tag = response.headers["ETag"]
        assert new_tag != tag
        assert new_tag == (await read(admin_client, product)).headers["ETag"]
        assert (await stored_figures(session, product)) == (Decimal("3.50"), 5)

    @pytest.mark.parametrize("header", [f"{STALE}, {{tag}}", "*", "{tag}, W/{tag}"])
    async def test_a_list_naming_it_or_a_star_writes(
        self, admin_client: httpx.AsyncClient, session: AsyncSession, header: str
    ) -> None:
        product = await make_product(session, name="Widget")
        tag = (await read(admin_client, product)).headers["ETag"]

        response = await admin_client.patch(
            f"/products/{product.id}",
            json={"price": "3.50"},
            headers={"If-Match": header.format(tag=tag)},
        )

        assert response.status_code == 200, response.text
        assert (await stored_figures(session, product)) == (Decimal("3.50"), 5)

    @pytest.mark.parametrize("header", [STALE, "W/{tag}", f'{STALE}, "other"', "previous"])
    async def test_a_stale_or_weak_tag_is_412_and_changes_nothing(
        self, admin_client: httpx.AsyncClient, session: AsyncSession, header: str
    ) -> None:
        product = await make_product(session, name="Widget", price="9.99", stock=5)
        url = f"/products/{product.id}"
        previous = (await read(admin_client, product)).headers["ETag"]
        await admin_client.post(f"{url}/stock", json={"change": 1})  # someone else's write
        tag = (await read(admin_client, product)).headers["ETag"]
        header = previous if header == "previous" else header.format(tag=tag)

        patched = await admin_client.patch(
            url, json={"price": "1.00"}, headers={"If-Match": header}
        )
        stocked = await admin_client.post(
            f"{url}/stock", json={"change": -6}, headers={"If-Match": header}
        )
        deleted = await admin_client.delete(url, headers={"If-Match": header})

        for response in (patched, stocked, deleted):
            body = assert_problem(response, 412, "precondition_failed")
            assert f"Product {product.id} has changed" in body["detail"]
        assert (await stored_figures(session, product)) == (Decimal("9.99"), 6)
        assert (await read(admin_client, product)).headers["ETag"] == tag

    @pytest.mark.parametrize("header", MALFORMED)
    async def test_a_malformed_header_is_400_and_changes_nothing(
        self, admin_client: httpx.AsyncClient, session: AsyncSession, header: str
    ) -> None:
        product = await make_product(session, name="Widget", price="9.99")
        url = f"/products/{product.id}"

        patched = await admin_client.patch(
            url, json={"price": "1.00"}, headers={"If-Match": header}
        )
        deleted = await admin_client.delete(url, headers={"If-Match": header})

        assert_problem(patched, 400, "bad_request")
        assert_problem(deleted, 400, "bad_request")
        assert (await stored_figures(session, product)) == (Decimal("9.99"), 5)

    async def test_a_delete_with_the_current_tag_deletes(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        product = await make_product(session, name="Widget")
        tag = (await read(admin_client, product)).headers["ETag"]

        response = await admin_client.delete(f"/products/{product.id}", headers={"If-Match": tag})

        assert response.status_code == 204
        assert "ETag" not in response.headers
        assert await stored(session, product) is None

    async def test_a_stock_change_with_the_current_tag_and_a_key_is_replayed_with_its_tag(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        product = await make_product(session, name="Widget", stock=5)
        tag = (await read(admin_client, product)).headers["ETag"]
        headers = {"If-Match": tag, "Idempotency-Key": "stock-once"}

        first = await admin_client.post(
            f"/products/{product.id}/stock", json={"change": 2}, headers=headers
        )
        replay = await admin_client.post(
            f"/products/{product.id}/stock", json={"change": 2}, headers=headers
        )

        assert first.status_code == 200, first.text
        assert first.headers["ETag"] == etag(first.content) != tag
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert (replay.content, replay.headers["ETag"]) == (first.content, first.headers["ETag"])
        assert (await stored_figures(session, product)) == (Decimal("9.99"), 7)

    @pytest.mark.parametrize("header", [STALE, "*"])
    async def test_a_missing_product_is_404(
        self, admin_client: httpx.AsyncClient, header: str
    ) -> None:
        response = await admin_client.patch(
            "/products/987654", json={"price": "1.00"}, headers={"If-Match": header}
        )

        assert_problem(response, 404, "not_found")

    async def test_without_a_token_is_401_before_any_tag(self, client: httpx.AsyncClient) -> None:
        response = await client.patch(
            "/products/1", json={"price": "1.00"}, headers={"If-Match": STALE}
        )

        assert_problem(response, 401, "unauthorized")
