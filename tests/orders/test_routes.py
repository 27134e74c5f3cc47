"""Orders over HTTP: all-or-nothing creation with Decimal totals, the status machine with its
stock and notifications, ownership by query scope and statistics, against real PostgreSQL."""

import re
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.notifications.models import Notification
from api.orders import service
from api.orders.models import Order, OrderItem, OrderStatus
from api.products.models import Product
from api.users.models import User
from tests.support.client import assert_problem, client_for, error_fields
from tests.support.factories import make_order, make_product, make_user


@pytest.fixture
async def mouse(session: AsyncSession) -> Product:
    return await make_product(session, name="Wireless Mouse", price="79.99", stock=10)


@pytest.fixture
async def cable(session: AsyncSession) -> Product:
    return await make_product(session, name="USB Cable", price="4.50", stock=3)


async def stock_of(session: AsyncSession, product: Product) -> int:
    await session.refresh(product)
    return product.stock_quantity


async def count(session: AsyncSession, model: type[Any]) -> int:
    return (await session.exec(select(func.count()).select_from(model))).one()


def order_body(*lines: tuple[Product, int], **extra: Any) -> dict[str, Any]:
    return {"items": [{"product_id": p.id, "quantity": q} for p, q in lines], **extra}


class TestCreateOrder:
    async def test_takes_stock_and_totals_in_decimal(
        self,
        customer_client: httpx.AsyncClient,
        session: AsyncSession,
        customer: User,
        mouse: Product,
        cable: Product,
    ) -> None:
        response = await customer_client.post(
            "/orders/", json=order_body((mouse, 2), (cable, 3), shipping_address="1 Main St")
        )

        assert response.status_code == 201, response.text
        body = response.json()
        assert re.fullmatch(r"ORD-\d{14}-[0-9A-F]{6}", body["order_number"])
        assert body["status"] == "pending"
        assert body["user_id"] == customer.id
        assert body["shipping_address"] == "1 Main St"
        assert body["total_amount"] == "173.48"  # 2 x 79.99 + 3 x 4.50, no float drift
        items = {item["product_id"]: item for item in body["items"]}
        assert items[mouse.id]["unit_price"] == "79.99"
        assert items[mouse.id]["total_price"] == "159.98"
        assert items[mouse.id]["product"]["name"] == "Wireless Mouse"
        assert items[mouse.id]["product"]["stock_quantity"] == 8  # as the order left it
        assert items[cable.id]["total_price"] == "13.50"
        assert await stock_of(session, mouse) == 8
        assert await stock_of(session, cable) == 0
        db_order = await session.get(Order, body["id"])
        assert db_order is not None
        assert db_order.total_amount == Decimal("173.48")

    async def test_writes_the_owner_a_notification(
        self, customer_client: httpx.AsyncClient, session: AsyncSession, mouse: Product
    ) -> None:
        response = await customer_client.post("/orders/", json=order_body((mouse, 1)))

        notes = (await session.exec(select(Notification))).all()
        assert [(n.order_id, n.user_id) for n in notes] == [
            (response.json()["id"], response.json()["user_id"])
        ]
        assert response.json()["order_number"] in notes[0].message

    async def test_with_notifications_is_the_same_operation(
        self, customer_client: httpx.AsyncClient, session: AsyncSession, mouse: Product
    ) -> None:
        response = await customer_client.post(
            "/orders/with-notifications", json=order_body((mouse, 1))
        )

        assert response.status_code == 201
        assert await stock_of(session, mouse) == 9
        assert await count(session, Notification) == 1

    async def test_repeated_lines_of_a_product_are_one_item(
        self, customer_client: httpx.AsyncClient, session: AsyncSession, mouse: Product
    ) -> None:
        response = await customer_client.post("/orders/", json=order_body((mouse, 2), (mouse, 3)))

        assert response.status_code == 201
        assert [(i["product_id"], i["quantity"]) for i in response.json()["items"]] == [
            (mouse.id, 5)
        ]
        assert await stock_of(session, mouse) == 5

    async def test_repeated_lines_count_together_against_the_stock(
        self, customer_client: httpx.AsyncClient, session: AsyncSession, cable: Product
    ) -> None:
        response = await customer_client.post("/orders/", json=order_body((cable, 2), (cable, 2)))

        body = assert_problem(response, 409, "insufficient_stock")
        assert "Only 3" in body["detail"]
        assert await stock_of(session, cable) == 3

    async def test_short_stock_is_a_409_naming_product_and_quantity_and_leaves_nothing(
        self,
        customer_client: httpx.AsyncClient,
        session: AsyncSession,
        mouse: Product,
        cable: Product,
    ) -> None:
        response = await customer_client.post("/orders/", json=order_body((mouse, 1), (cable, 4)))

        body = assert_problem(response, 409, "insufficient_stock")
        assert body["detail"] == (f"Only 3 of product {cable.id} (USB Cable) in stock; 4 ordered.")
        assert body["errors"] == [{"field": "items", "message": f"product {cable.id}: available 3"}]
        assert await stock_of(session, mouse) == 10  # the first line's take is undone
        assert await count(session, Order) == 0
        assert await count(session, Notification) == 0

    async def test_unknown_product_is_a_404_and_leaves_nothing(
        self, customer_client: httpx.AsyncClient, session: AsyncSession, mouse: Product
    ) -> None:
        body = order_body((mouse, 1))
        body["items"].append({"product_id": 999_999, "quantity": 1})

        response = await customer_client.post("/orders/", json=body)

        problem = assert_problem(response, 404, "not_found")
        assert "999999" in problem["detail"]
        assert await stock_of(session, mouse) == 10
        assert await count(session, Order) == 0

    async def test_inactive_product_is_a_409(
        self, customer_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        retired = await make_product(session, name="Old Phone", stock=5, is_active=False)

        response = await customer_client.post("/orders/", json=order_body((retired, 1)))

        body = assert_problem(response, 409, "not_for_sale")
        assert "Old Phone" in body["detail"]
        assert await stock_of(session, retired) == 5

    async def test_the_server_sets_prices_totals_status_and_number(
        self, customer_client: httpx.AsyncClient, session: AsyncSession, mouse: Product
    ) -> None:
        body = order_body((mouse, 1)) | {
            "id": 777,
            "total_amount": "0.01",
            "status": "delivered",
            "order_number": "ORD-MINE",
            "created_at": "2000-01-01T00:00:00Z",
        }
        body["items"][0] |= {"unit_price": "0.01", "total_price": "0.01", "id": 5}

        response = await customer_client.post("/orders/", json=body)

        assert response.status_code == 201
        db_order = await session.get(Order, response.json()["id"])
        assert db_order is not None
        assert db_order.id != 777
        assert (db_order.status, db_order.total_amount) == ("pending", Decimal("79.99"))
        assert db_order.order_number != "ORD-MINE"
        assert db_order.created_at.year > 2000
        item = (await session.exec(select(OrderItem))).one()
        assert (item.unit_price, item.total_price) == (Decimal("79.99"), Decimal("79.99"))

    async def test_stock_cannot_be_set_through_an_order(
        self, customer_client: httpx.AsyncClient, session: AsyncSession, mouse: Product
    ) -> None:
        body = order_body((mouse, 1))
        body["items"][0] |= {"stock_quantity": 1000, "price": "0.01"}

        await customer_client.post("/orders/", json=body)

        assert await stock_of(session, mouse) == 9
        assert mouse.price == Decimal("79.99")

    async def test_own_user_id_is_accepted(
        self, customer_client: httpx.AsyncClient, customer: User, mouse: Product
    ) -> None:
        response = await customer_client.post(
            "/orders/", json=order_body((mouse, 1), user_id=customer.id)
        )
        assert response.status_code == 201
        assert response.json()["user_id"] == customer.id

    async def test_another_users_id_is_a_403_and_leaves_nothing(
        self, customer_client: httpx.AsyncClient, session: AsyncSession, mouse: Product
    ) -> None:
        victim = await make_user(session, username="victim")

        response = await customer_client.post(
            "/orders/", json=order_body((mouse, 1), user_id=victim.id)
        )

        assert_problem(response, 403, "forbidden")
        assert await count(session, Order) == 0
        assert await stock_of(session, mouse) == 10

    async def test_a_superuser_orders_for_another_user(
        self, admin_client: httpx.AsyncClient, customer: User, mouse: Product
    ) -> None:
        response = await admin_client.post(
            "/orders/", json=order_body((mouse, 1), user_id=customer.id)
        )
        assert response.status_code == 201
        assert response.json()["user_id"] == customer.id

    async def test_a_superuser_naming_an_unknown_user_is_a_422(
        self, admin_client: httpx.AsyncClient, session: AsyncSession, mouse: Product
    ) -> None:
        response = await admin_client.post("/orders/", json=order_body((mouse, 1), user_id=999_999))

        body = assert_problem(response, 422, "invalid_reference")
        assert error_fields(body) == {"user_id"}
        assert await stock_of(session, mouse) == 10

    async def test_needs_a_token(self, client: httpx.AsyncClient, mouse: Product) -> None:
        response = await client.post("/orders/", json=order_body((mouse, 1)))
        assert_problem(response, 401, "unauthorized")

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({}, "body.items"),
            ({"items": []}, "body.items"),
            ({"items": "mouse"}, "body.items"),
            ({"items": [{"product_id": 1}]}, "body.items.0.quantity"),
            ({"items": [{"product_id": 1, "quantity": 0}]}, "body.items.0.quantity"),
            ({"items": [{"product_id": 1, "quantity": -2}]}, "body.items.0.quantity"),
            ({"items": [{"product_id": 1, "quantity": 1001}]}, "body.items.0.quantity"),
            ({"items": [{"product_id": 1, "quantity": 1.5}]}, "body.items.0.quantity"),
            ({"items": [{"product_id": 0, "quantity": 1}]}, "body.items.0.product_id"),
            ({"items": [{"product_id": 2**31, "quantity": 1}]}, "body.items.0.product_id"),
            ({"items": [{"product_id": 1, "quantity": 1}] * 101}, "body.items"),
            (
                {"items": [{"product_id": 1, "quantity": 1}], "shipping_address": "a\x00b"},
                "body.shipping_address",
            ),
            (
                {"items": [{"product_id": 1, "quantity": 1}], "shipping_address": "a" * 501},
                "body.shipping_address",
            ),
            ({"items": [{"product_id": 1, "quantity": 1}], "user_id": 0}, "body.user_id"),
        ],
    )
    async def test_bad_bodies_are_422_naming_the_field(
        self,
        customer_client: httpx.AsyncClient,
        session: AsyncSession,
        body: dict[str, Any],
        field: str,
    ) -> None:
        response = await customer_client.post("/orders/", json=body)

        problem = assert_problem(response, 422, "validation_error")
        assert field in error_fields(problem)
        assert await count(session, Order) == 0

    async def test_malformed_json_is_a_422(self, customer_client: httpx.AsyncClient) -> None:
        response = await customer_client.post(
            "/orders/", content=b'{"items": [', headers={"content-type": "application/json"}
        )
        assert_problem(response, 422, "validation_error")

    async def test_oversized_body_is_a_413(self, customer_client: httpx.AsyncClient) -> None:
        response = await customer_client.post(
            "/orders/", json={"items": [], "shipping_address": "x" * 2_000_000}
        )
        assert_problem(response, 413, "request_entity_too_large")


async def refuse_notifications(session: AsyncSession) -> None:
    """Make every notification insert fail inside the database (the test's transaction rolls
    the trigger back afterwards)."""
    connection = await session.connection()
    await connection.execute(
        text(
            "CREATE FUNCTION refuse_notifications() RETURNS trigger LANGUAGE plpgsql AS"
            " $$BEGIN RAISE EXCEPTION 'notifications are down'; END$$"
        )
    )
    await connection.execute(
        text(
            "CREATE TRIGGER refuse BEFORE INSERT ON notifications"
            " FOR EACH ROW EXECUTE FUNCTION refuse_notifications()"
        )
    )


class TestNotificationFailure:
    async def test_a_failing_notification_never_loses_the_order(
        self,
        customer_client: httpx.AsyncClient,
        session: AsyncSession,
        mouse: Product,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        await refuse_notifications(session)

        response = await customer_client.post("/orders/", json=order_body((mouse, 2)))

        assert response.status_code == 201, response.text
        assert await session.get(Order, response.json()["id"]) is not None
        assert await stock_of(session, mouse) == 8
        assert await count(session, Notification) == 0
        assert "not written: RaiseError sqlstate=P0001" in caplog.text
        assert "notifications are down" not in caplog.text  # never PostgreSQL's own message

    async def test_a_failing_notification_never_loses_a_cancel(
        self,
        customer_client: httpx.AsyncClient,
        session: AsyncSession,
        mouse: Product,
    ) -> None:
        """The savepoint rolled back leaves the order, its items and products in hand: the
        answer is still built from them."""
        order = await place(customer_client, (mouse, 3))
        await refuse_notifications(session)

        response = await customer_client.patch(f"/orders/{order['id']}/status?new_status=cancelled")

        assert response.status_code == 200, response.text
        assert response.json()["status"] == "cancelled"
        assert response.json()["items"][0]["product"]["stock_quantity"] == 10
        assert await stock_of(session, mouse) == 10
        assert await count(session, Notification) == 1  # the placing's, written before


class TestOrderNumber:
    async def test_a_taken_number_is_drawn_again(
        self,
        customer_client: httpx.AsyncClient,
        mouse: Product,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        numbers = iter(["ORD-20260101000000-AAAAAA"] * 2 + ["ORD-20260101000000-BBBBBB"])
        monkeypatch.setattr(service, "order_number", lambda: next(numbers))

        first = await customer_client.post("/orders/", json=order_body((mouse, 1)))
        second = await customer_client.post("/orders/", json=order_body((mouse, 1)))

        assert first.json()["order_number"] == "ORD-20260101000000-AAAAAA"
        assert second.status_code == 201
        assert second.json()["order_number"] == "ORD-20260101000000-BBBBBB"

    async def test_no_free_number_is_a_409_and_leaves_nothing(
        self,
        customer_client: httpx.AsyncClient,
        session: AsyncSession,
        mouse: Product,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr(service, "order_number", lambda: "ORD-20260101000000-CCCCCC")
        await customer_client.post("/orders/", json=order_body((mouse, 1)))

        response = await customer_client.post("/orders/", json=order_body((mouse, 1)))

        assert_problem(response, 409, "conflict")
        assert await count(session, Order) == 1
        assert await stock_of(session, mouse) == 9


class TestReadOrders:
    async def test_a_user_reads_their_order_with_items_and_products(
        self,
        customer_client: httpx.AsyncClient,
        session: AsyncSession,
        customer: User,
        mouse: Product,
    ) -> None:
        order = await make_order(session, user=customer, products=[mouse], quantity=2)

        response = await customer_client.get(f"/orders/{order.id}")

        assert response.status_code == 200
        body = response.json()
        assert body["total_amount"] == "159.98"
        assert body["items"][0]["product"]["sku"] == mouse.sku

    async def test_details_add_the_user(
        self,
        customer_client: httpx.AsyncClient,
        session: AsyncSession,
        customer: User,
        mouse: Product,
    ) -> None:
        order = await make_order(session, user=customer, products=[mouse])

        response = await customer_client.get(f"/orders/{order.id}/details")

        assert response.status_code == 200
        body = response.json()
        assert body["user"]["username"] == "customer"
        assert "hashed_password" not in body["user"]
        assert body["items"][0]["product"]["id"] == mouse.id

    @pytest.mark.parametrize("suffix", ["", "/details"])
    async def test_another_users_order_is_a_404(
        self,
        customer_client: httpx.AsyncClient,
        session: AsyncSession,
        mouse: Product,
        suffix: str,
    ) -> None:
        stranger = await make_user(session, username="stranger")
        order = await make_order(session, user=stranger, products=[mouse])

        response = await customer_client.get(f"/orders/{order.id}{suffix}")

        assert_problem(response, 404, "not_found")

    async def test_a_superuser_reads_any_order(
        self,
        admin_client: httpx.AsyncClient,
        session: AsyncSession,
        customer: User,
        mouse: Product,
    ) -> None:
        order = await make_order(session, user=customer, products=[mouse])
        response = await admin_client.get(f"/orders/{order.id}/details")
        assert response.json()["user"]["id"] == customer.id

    @pytest.mark.parametrize("order_id", ["0", "-1", "abc", str(2**31)])
    async def test_bad_ids_are_422(self, customer_client: httpx.AsyncClient, order_id: str) -> None:
        response = await customer_client.get(f"/orders/{order_id}")
        assert_problem(response, 422, "validation_error")

    async def test_the_list_is_the_callers_own_newest_first(
        self,
        customer_client: httpx.AsyncClient,
        admin_client: httpx.AsyncClient,
        session: AsyncSession,
        customer: User,
        mouse: Product,
    ) -> None:
        stranger = await make_user(session, username="stranger")
        mine = [await make_order(session, user=customer, products=[mouse]) for _ in range(3)]
        await make_order(session, user=stranger, products=[mouse])

        own = (await customer_client.get("/orders/")).json()
        everyone = (await admin_client.get("/orders/")).json()

        assert [o["id"] for o in own["items"]] == [o.id for o in reversed(mine)]
        assert own["total"] == 3
        assert "items" not in own["items"][0]  # summaries
        assert everyone["total"] == 4

    async def test_orders_of_a_user(
        self,
        customer_client: httpx.AsyncClient,
        admin_client: httpx.AsyncClient,
        session: AsyncSession,
        customer: User,
        mouse: Product,
    ) -> None:
        stranger = await make_user(session, username="stranger")
        await make_order(session, user=customer, products=[mouse])
        await make_order(session, user=stranger, products=[mouse])

        own = await customer_client.get(f"/orders/user/{customer.id}")
        others = await customer_client.get(f"/orders/user/{stranger.id}")
        as_admin = await admin_client.get(f"/orders/user/{stranger.id}")
        unknown = await admin_client.get("/orders/user/999999")

        assert own.json()["total"] == 1
        assert_problem(others, 404, "not_found")
        assert [o["user_id"] for o in as_admin.json()["items"]] == [stranger.id]
        assert_problem(unknown, 404, "not_found")

    async def test_paging_is_bounded(self, customer_client: httpx.AsyncClient) -> None:
        for query in ("size=0", "size=101", "page=0", "page=x"):
            response = await customer_client.get(f"/orders/?{query}")
            assert_problem(response, 422, "validation_error")

    async def test_lists_need_a_token(self, client: httpx.AsyncClient) -> None:
        for path in ("/orders/", "/orders/user/1", "/orders/1", "/orders/1/details"):
            assert_problem(await client.get(path), 401, "unauthorized")


async def place(client: httpx.AsyncClient, *lines: tuple[Product, int]) -> dict[str, Any]:
    response = await client.post("/orders/", json=order_body(*lines))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


class TestStatus:
    async def test_the_happy_path_to_delivered(
        self,
        customer_client: httpx.AsyncClient,
        admin_client: httpx.AsyncClient,
        session: AsyncSession,
        mouse: Product,
    ) -> None:
        order = await place(customer_client, (mouse, 1))

        for new_status in ("confirmed", "shipped", "delivered"):
            response = await admin_client.patch(
                f"/orders/{order['id']}/status", params={"new_status": new_status}
            )
            assert response.status_code == 200, response.text
            assert response.json()["status"] == new_status
            assert response.json()["items"][0]["product_id"] == mouse.id

        db_order = await session.get(Order, order["id"])
        assert db_order is not None
        await session.refresh(db_order)
        assert db_order.status == "delivered"
        assert await stock_of(session, mouse) == 9
        assert await count(session, Notification) == 4  # placed, and three moves

    @pytest.mark.parametrize(
        ("path", "new_status"),
        [
            ([], "shipped"),
            ([], "delivered"),
            ([], "pending"),
            (["confirmed"], "delivered"),
            (["confirmed"], "confirmed"),
            (["confirmed", "shipped"], "cancelled"),
            (["cancelled"], "confirmed"),
            (["confirmed", "shipped", "delivered"], "cancelled"),
        ],
    )
    async def test_illegal_moves_are_a_409_naming_both_states(
        self,
        customer_client: httpx.AsyncClient,
        admin_client: httpx.AsyncClient,
        session: AsyncSession,
        mouse: Product,
        path: list[str],
        new_status: str,
    ) -> None:
        order = await place(customer_client, (mouse, 1))
        for step in path:
            await admin_client.patch(f"/orders/{order['id']}/status?new_status={step}")
        current = path[-1] if path else "pending"

        response = await admin_client.patch(
            f"/orders/{order['id']}/status", params={"new_status": new_status}
        )

        body = assert_problem(response, 409, "invalid_status_transition")
        assert body["detail"] == f"A {current} order cannot become {new_status}."
        db_order = await session.get(Order, order["id"])
        assert db_order is not None
        await session.refresh(db_order)
        assert db_order.status == current

    async def test_cancelling_puts_the_stock_back(
        self,
        customer_client: httpx.AsyncClient,
        admin_client: httpx.AsyncClient,
        session: AsyncSession,
        mouse: Product,
        cable: Product,
    ) -> None:
        order = await place(customer_client, (mouse, 4), (cable, 3))
        await admin_client.patch(f"/orders/{order['id']}/status?new_status=confirmed")

        response = await customer_client.patch(f"/orders/{order['id']}/status?new_status=cancelled")

        assert response.status_code == 200
        assert response.json()["status"] == "cancelled"
        assert (await stock_of(session, mouse), await stock_of(session, cable)) == (10, 3)
        # The answer is built from the rows the cancel locked and changed: it is what a read
        # of the order gives, the products' stock put back included.
        stocks = {i["product_id"]: i["product"]["stock_quantity"] for i in response.json()["items"]}
        assert stocks == {mouse.id: 10, cable.id: 3}
        assert response.json() == (await customer_client.get(f"/orders/{order['id']}")).json()

    async def test_an_owner_may_cancel_but_not_move_on(
        self, customer_client: httpx.AsyncClient, session: AsyncSession, mouse: Product
    ) -> None:
        order = await place(customer_client, (mouse, 1))

        response = await customer_client.patch(f"/orders/{order['id']}/status?new_status=confirmed")

        assert_problem(response, 403, "forbidden")
        db_order = await session.get(Order, order["id"])
        assert db_order is not None
        assert db_order.status == "pending"

    async def test_another_users_order_is_a_404(
        self,
        app: FastAPI,
        customer_client: httpx.AsyncClient,
        session: AsyncSession,
        mouse: Product,
    ) -> None:
        order = await place(customer_client, (mouse, 1))
        stranger = await make_user(session, username="stranger")

        async with client_for(app, stranger) as client:
            response = await client.patch(f"/orders/{order['id']}/status?new_status=cancelled")

        assert_problem(response, 404, "not_found")
        assert await stock_of(session, mouse) == 9

    @pytest.mark.parametrize("query", ["", "?new_status=lost", "?new_status="])
    async def test_a_missing_or_unknown_status_is_a_422(
        self, admin_client: httpx.AsyncClient, query: str
    ) -> None:
        response = await admin_client.patch(f"/orders/1/status{query}")
        assert_problem(response, 422, "validation_error")


class TestStats:
    async def test_counts_and_revenue_leave_out_cancelled_orders(
        self, admin_client: httpx.AsyncClient, session: AsyncSession, mouse: Product
    ) -> None:
        buyer = await make_user(session)
        await make_order(session, user=buyer, products=[mouse], quantity=2)
        await make_order(session, user=buyer, products=[mouse], status=OrderStatus.shipped)
        await make_order(session, user=buyer, products=[mouse], status=OrderStatus.cancelled)

        response = await admin_client.get("/orders/stats/summary")

        assert response.json() == {
            "total_orders": 3,
            "total_revenue": "239.97",
            "orders_by_status": {
                "pending": 1,
                "confirmed": 0,
                "shipped": 1,
                "delivered": 0,
                "cancelled": 1,
            },
        }

    async def test_no_orders(self, admin_client: httpx.AsyncClient) -> None:
        body = (await admin_client.get("/orders/stats/summary")).json()
        assert (body["total_orders"], body["total_revenue"]) == (0, "0.00")

    async def test_is_a_superusers(self, customer_client: httpx.AsyncClient) -> None:
        assert_problem(await customer_client.get("/orders/stats/summary"), 403, "forbidden")


class TestHistoryIsKept:
    @pytest.mark.parametrize(("model", "hint"), [(Product, "deactivate it"), (User, "soft delete")])
    async def test_what_is_on_an_order_cannot_be_deleted(
        self,
        admin_client: httpx.AsyncClient,
        session: AsyncSession,
        customer: User,
        mouse: Product,
        model: type[Product | User],
        hint: str,
    ) -> None:
        await make_order(session, user=customer, products=[mouse])
        row = mouse if model is Product else customer

        response = await admin_client.delete(f"/{model.__tablename__}/{row.id}")

        body = assert_problem(response, 409, "in_use")
        assert hint in body["detail"]
        assert await session.get(model, row.id) is not None

    async def test_deleting_inactive_users_keeps_those_with_orders(
        self, admin_client: httpx.AsyncClient, session: AsyncSession, mouse: Product
    ) -> None:
        buyer = await make_user(session, is_active=False)
        idle = [await make_user(session, is_active=False) for _ in range(2)]
        active = await make_user(session)
        await make_order(session, user=buyer, products=[mouse])

        response = await admin_client.delete("/users/bulk/inactive")

        assert response.status_code == 200
        assert response.json() == {"deleted": 2, "kept_with_orders": 1}
        remaining = set((await session.exec(select(col(User.id)))).all())
        assert {buyer.id, active.id} <= remaining
        assert remaining.isdisjoint({u.id for u in idle})

    async def test_top_spenders_rank_by_orders_not_cancelled(
        self, admin_client: httpx.AsyncClient, session: AsyncSession, mouse: Product
    ) -> None:
        big = await make_user(session, username="big_spender")
        small = await make_user(session, username="small_spender")
        await make_order(session, user=big, products=[mouse], quantity=3)
        await make_order(session, user=small, products=[mouse])
        await make_order(
            session, user=small, products=[mouse], quantity=9, status=OrderStatus.cancelled
        )

        response = await admin_client.get("/users/top-spenders", params={"limit": 5})

        assert [(r["username"], r["order_count"], r["total_spent"]) for r in response.json()] == [
            ("big_spender", 1, "239.97"),
            ("small_spender", 1, "79.99"),
        ]
        limited = await admin_client.get("/users/top-spenders", params={"limit": 1})
        assert len(limited.json()) == 1

    @pytest.mark.parametrize("limit", ["0", "101", "x"])
    async def test_top_spenders_limit_is_bounded(
        self, admin_client: httpx.AsyncClient, limit: str
    ) -> None:
        response = await admin_client.get(f"/users/top-spenders?limit={limit}")
        assert_problem(response, 422, "validation_error")
