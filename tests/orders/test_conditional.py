"""Conditional requests on an order: its ETag covers its items' products (their stock too),
so another order's stock take changes it; If-Match on PATCH /orders/{id}/status."""

import httpx
from fastapi import FastAPI
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.orders.models import Order
from api.products.models import Product
from tests.support.client import assert_problem, client_for
from tests.support.conditional import STALE, tag_of
from tests.support.factories import make_order, make_product, make_user


async def stored(session: AsyncSession, order: Order, product: Product) -> tuple[str, int]:
    """The order's status and the product's stock, re-queried."""
    status = (await session.exec(select(Order.status).where(Order.id == order.id))).one()
    stock = (
        await session.exec(select(Product.stock_quantity).where(Product.id == product.id))
    ).one()
    return status, stock


class TestConditionalOrder:
    async def test_the_tag_changes_with_an_embedded_products_stock(
        self, app: FastAPI, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        user = await make_user(session)
        lamp = await make_product(session, name="Lamp", stock=10)
        order = await make_order(session, user=user, products=[lamp])
        url = f"/orders/{order.id}"
        async with client_for(app, user) as owner:
            tag = await tag_of(owner, url)
            not_modified = await owner.get(url, headers={"If-None-Match": tag})

            # Another client's order of the same product takes stock.
            taken = await admin_client.post(
                "/orders/", json={"items": [{"product_id": lamp.id, "quantity": 2}]}
            )
            modified = await owner.get(url, headers={"If-None-Match": tag})

        assert not_modified.status_code == 304
        assert not_modified.content == b""
        assert taken.status_code == 201, taken.text
        assert modified.status_code == 200
        assert modified.json()["items"][0]["product"]["stock_quantity"] == 8
        assert modified.headers["ETag"] != tag

    async def test_a_status_move_with_a_stale_tag_is_412_and_changes_nothing(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        user = await make_user(session)
        lamp = await make_product(session, name="Lamp", stock=10)
        order = await make_order(session, user=user, products=[lamp], quantity=3)
        url = f"/orders/{order.id}"
        tag = await tag_of(admin_client, url)
        await admin_client.post(f"/products/{lamp.id}/stock", json={"change": 1})

        for header in (tag, STALE, f"W/{tag}"):
            response = await admin_client.patch(
                f"{url}/status", params={"new_status": "cancelled"}, headers={"If-Match": header}
            )
            assert_problem(response, 412, "precondition_failed")
        assert await stored(session, order, lamp) == ("pending", 11)

    async def test_a_status_move_with_the_current_tag_answers_the_new_tag(
        self, app: FastAPI, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        user = await make_user(session)
        lamp = await make_product(session, name="Lamp", stock=10)
        order = await make_order(session, user=user, products=[lamp], quantity=3)
        url = f"/orders/{order.id}"
        async with client_for(app, user) as owner:
            tag = await tag_of(owner, url)

            cancelled = await owner.patch(
                f"{url}/status", params={"new_status": "cancelled"}, headers={"If-Match": tag}
            )

            assert cancelled.status_code == 200, cancelled.text
            assert cancelled.json()["items"][0]["product"]["stock_quantity"] == 13
            assert cancelled.headers["ETag"] == await tag_of(owner, url) != tag
        assert await stored(session, order, lamp) == ("cancelled", 13)

    async def test_another_users_order_is_404_whatever_the_tag(
        self, app: FastAPI, session: AsyncSession
    ) -> None:
        owner, other = await make_user(session), await make_user(session)
        order = await make_order(
            session, user=owner, products=[await make_product(session, name="Lamp")]
        )
        async with client_for(app, other) as client:
            read = await client.get(f"/orders/{order.id}", headers={"If-None-Match": "*"})
            moved = await client.patch(
                f"/orders/{order.id}/status",
                params={"new_status": "cancelled"},
                headers={"If-Match": STALE},
            )

        assert_problem(read, 404, "not_found")
        assert_problem(moved, 404, "not_found")
