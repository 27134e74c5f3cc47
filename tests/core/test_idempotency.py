"""Idempotency-Key in-process, on the test's rolled-back transaction: replays byte for byte and
do nothing twice, another body is a 422, a malformed key a 400, refusals are stored and
validation errors are not, keys are scoped by caller and route, and answers expire (and are
swept a batch at a time). The races (in flight, a dropped answer) are in
tests/core/test_idempotency_races.py, through a live server and PgBouncer."""

from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlmodel import func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.auth.dependencies import KEYED_ANONYMOUS
from api.core.idempotency import SWEEP_BATCH, IdempotencyKey, fingerprint
from api.notifications.models import Notification
from api.orders.models import Order
from api.products.models import Product
from api.users.models import User
from tests.support.app import SECRET_KEY
from tests.support.client import assert_problem, client_for
from tests.support.factories import make_product, make_user

KEY = "4f9c2a6e-1b7d-4c1e-9a55-0d2f6b8e7a31"


@pytest.fixture
async def lamp(session: AsyncSession) -> Product:
    return await make_product(session, name="Desk Lamp", price="12.50", stock=10)


async def count(session: AsyncSession, model: type[Any]) -> int:
    return (await session.exec(select(func.count()).select_from(model))).one()


async def stock_of(session: AsyncSession, product: Product) -> int:
    await session.refresh(product)
    return product.stock_quantity


def order_of(product: Product, quantity: int = 2) -> dict[str, Any]:
    return {"items": [{"product_id": product.id, "quantity": quantity}]}


def keyed(key: str = KEY) -> dict[str, str]:
    return {"Idempotency-Key": key}


def assert_replayed_problem(
    again: httpx.Response, first: httpx.Response, status: int, code: str
) -> None:
    """`again` replays the problem `first` answered, byte for byte but for the request it names:
    the retry's own (assert_problem: its X-Request-ID)."""
    replayed, original = assert_problem(again, status, code), first.json()
    assert replayed["request_id"] != original["request_id"]
    assert list(replayed) == list(original)
    request_ids = original["request_id"].encode(), replayed["request_id"].encode()
    assert again.content == first.content.replace(*request_ids)
    assert again.headers["Idempotent-Replayed"] == "true"


class TestReplay:
    async def test_a_retry_answers_the_same_bytes_and_orders_once(
        self, customer_client: httpx.AsyncClient, session: AsyncSession, lamp: Product
    ) -> None:
        first = await customer_client.post("/orders/", json=order_of(lamp), headers=keyed())
        again = await customer_client.post("/orders/", json=order_of(lamp), headers=keyed())

        assert first.status_code == again.status_code == 201, again.text
        assert again.content == first.content
        assert again.headers["content-type"] == first.headers["content-type"]
        assert again.headers["Idempotent-Replayed"] == "true"
        assert "Idempotent-Replayed" not in first.headers
        assert await count(session, Order) == 1
        assert await count(session, Notification) == 1
        assert await stock_of(session, lamp) == 8

    async def test_the_same_body_in_another_key_order_is_the_same_request(
        self, customer_client: httpx.AsyncClient, session: AsyncSession, lamp: Product
    ) -> None:
        body = {"shipping_address": "1 Main St", **order_of(lamp)}
        first = await customer_client.post("/orders/", json=body, headers=keyed())
        reordered = dict(reversed(list(body.items())))
        again = await customer_client.post("/orders/", json=reordered, headers=keyed())

        assert again.status_code == 201
        assert again.content == first.content
        assert await count(session, Order) == 1

    async def test_without_a_key_nothing_is_stored_and_each_request_orders(
        self, customer_client: httpx.AsyncClient, session: AsyncSession, lamp: Product
    ) -> None:
        for _ in range(2):
            response = await customer_client.post("/orders/", json=order_of(lamp))
            assert response.status_code == 201
            assert "Idempotent-Replayed" not in response.headers

        assert await count(session, Order) == 2
        assert await count(session, IdempotencyKey) == 0

    async def test_a_stock_change_is_made_once(
        self, admin_client: httpx.AsyncClient, session: AsyncSession, lamp: Product
    ) -> None:
        url = f"/products/{lamp.id}/stock"
        first = await admin_client.post(url, json={"change": 5}, headers=keyed())
        again = await admin_client.post(url, json={"change": 5}, headers=keyed())

        assert first.status_code == again.status_code == 200, again.text
        assert again.content == first.content
        assert await stock_of(session, lamp) == 15

    async def test_a_sign_up_is_made_once_and_its_password_is_only_in_an_hmac(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        body = {"username": "newcomer", "email": "new@example.com", "password": "a-password-1"}
        first = await client.post("/users/", json=body, headers=keyed())
        again = await client.post("/users/", json=body, headers=keyed())

        assert first.status_code == again.status_code == 201, again.text
        assert again.content == first.content
        assert await count(session, User) == 1
        stored = (await session.exec(select(IdempotencyKey))).one()
        assert (stored.owner, stored.route, stored.key) == ("anonymous", "POST /users/", KEY)
        assert b"a-password-1" not in stored.body
        assert stored.fingerprint == fingerprint(
            SECRET_KEY.encode(),
            "POST",
            "/users/",
            b'{"email":"new@example.com","password":"a-password-1","username":"newcomer"}',
        )

    async def test_a_bulk_creation_is_made_once(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        body = [
            {"username": f"bulk_{n}", "email": f"b{n}@example.com", "password": "p" * 10}
            for n in (1, 2)
        ]
        first = await admin_client.post("/users/bulk", json=body, headers=keyed())
        again = await admin_client.post("/users/bulk", json=body, headers=keyed())

        assert first.status_code == again.status_code == 201, again.text
        assert again.content == first.content
        assert await count(session, User) == 3  # the superuser and the two


class TestAnotherRequest:
    async def test_another_body_is_a_422_and_does_nothing(
        self, customer_client: httpx.AsyncClient, session: AsyncSession, lamp: Product
    ) -> None:
        await customer_client.post("/orders/", json=order_of(lamp, 2), headers=keyed())
        other = await customer_client.post("/orders/", json=order_of(lamp, 3), headers=keyed())

        assert_problem(other, 422, "idempotency_key_reused")
        assert await count(session, Order) == 1
        assert await stock_of(session, lamp) == 8

    async def test_another_path_of_the_route_is_a_422(
        self, admin_client: httpx.AsyncClient, session: AsyncSession, lamp: Product
    ) -> None:
        other = await make_product(session, name="Floor Lamp", stock=1)
        await admin_client.post(f"/products/{lamp.id}/stock", json={"change": 1}, headers=keyed())
        response = await admin_client.post(
            f"/products/{other.id}/stock", json={"change": 1}, headers=keyed()
        )

        assert_problem(response, 422, "idempotency_key_reused")
        assert await stock_of(session, other) == 1


class TestMalformedKey:
    @pytest.mark.parametrize(
        "value",
        [b"", b"k" * 256, b"caf\xc3\xa9", b"tab\there", b"\x7f"],
        ids=["empty", "256 characters", "not ASCII", "a tab", "DEL"],
    )
    async def test_is_a_400_and_does_nothing(
        self,
        customer_client: httpx.AsyncClient,
        session: AsyncSession,
        lamp: Product,
        value: bytes,
    ) -> None:
        response = await customer_client.post(
            "/orders/", json=order_of(lamp), headers=[(b"Idempotency-Key", value)]
        )

        body = assert_problem(response, 400, "bad_request")
        assert "Idempotency-Key" in body["detail"]
        assert await count(session, Order) == 0
        assert await count(session, IdempotencyKey) == 0

    async def test_two_keys_are_a_400(
        self, customer_client: httpx.AsyncClient, session: AsyncSession, lamp: Product
    ) -> None:
        headers = [(b"Idempotency-Key", b"one"), (b"Idempotency-Key", b"two")]
        response = await customer_client.post("/orders/", json=order_of(lamp), headers=headers)

        assert_problem(response, 400, "bad_request")
        assert await count(session, Order) == 0

    async def test_255_printable_characters_are_a_key(
        self, customer_client: httpx.AsyncClient, lamp: Product
    ) -> None:
        key = ("a b~!" * 51)[:255]
        response = await customer_client.post("/orders/", json=order_of(lamp), headers=keyed(key))

        assert response.status_code == 201, response.text


class TestWhatIsStored:
    async def test_a_refusal_of_the_work_is_replayed_even_once_it_would_pass(
        self, customer_client: httpx.AsyncClient, session: AsyncSession, lamp: Product
    ) -> None:
        refused = await customer_client.post("/orders/", json=order_of(lamp, 11), headers=keyed())
        assert_problem(refused, 409, "insufficient_stock")
        lamp.stock_quantity = 100
        session.add(lamp)
        await session.flush()

        again = await customer_client.post("/orders/", json=order_of(lamp, 11), headers=keyed())

        assert_replayed_problem(again, refused, 409, "insufficient_stock")
        assert await count(session, Order) == 0
        assert await stock_of(session, lamp) == 100
        stored = (await session.exec(select(IdempotencyKey))).one()
        assert stored.status == 409

    async def test_a_refusal_by_a_unique_constraint_is_stored_and_the_rest_still_commits(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        assert (await admin_client.post("/tags/", json={"name": "Lamps"})).status_code == 201
        refused = await admin_client.post("/tags/", json={"name": "Lamps"}, headers=keyed())
        assert_problem(refused, 409, "already_exists")

        again = await admin_client.post("/tags/", json={"name": "Lamps"}, headers=keyed())

        assert_replayed_problem(again, refused, 409, "already_exists")
        assert (await session.exec(select(IdempotencyKey.status))).all() == [409]

    async def test_a_validation_error_is_not_stored(
        self, customer_client: httpx.AsyncClient, session: AsyncSession, lamp: Product
    ) -> None:
        invalid = await customer_client.post("/orders/", json={"items": []}, headers=keyed())
        assert_problem(invalid, 422, "validation_error")
        assert await count(session, IdempotencyKey) == 0

        fixed = await customer_client.post("/orders/", json=order_of(lamp), headers=keyed())

        assert fixed.status_code == 201, fixed.text
        assert "Idempotent-Replayed" not in fixed.headers
        assert await count(session, Order) == 1

    async def test_a_refused_caller_takes_no_key(
        self, app: FastAPI, session: AsyncSession, customer: User
    ) -> None:
        async with client_for(app, customer) as client:
            response = await client.post("/tags/", json={"name": "Lamps"}, headers=keyed())

        assert_problem(response, 403, "forbidden")
        assert await count(session, IdempotencyKey) == 0


class TestScope:
    async def test_the_keys_of_two_users_do_not_collide(
        self,
        app: FastAPI,
        customer_client: httpx.AsyncClient,
        session: AsyncSession,
        lamp: Product,
    ) -> None:
        other = await make_user(session, username="other")
        first = await customer_client.post("/orders/", json=order_of(lamp), headers=keyed())
        async with client_for(app, other) as other_client:
            second = await other_client.post("/orders/", json=order_of(lamp), headers=keyed())

        assert first.status_code == second.status_code == 201
        assert "Idempotent-Replayed" not in second.headers
        assert first.json()["user_id"] != second.json()["user_id"]
        assert await count(session, Order) == 2
        assert await stock_of(session, lamp) == 6

    async def test_the_same_key_on_two_routes_does_not_collide(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        tag = await admin_client.post("/tags/", json={"name": "Lamps"}, headers=keyed())
        category = await admin_client.post("/categories/", json={"name": "Lamps"}, headers=keyed())

        assert tag.status_code == category.status_code == 201, category.text
        assert "Idempotent-Replayed" not in category.headers
        routes = (await session.exec(select(IdempotencyKey.route))).all()
        assert sorted(routes) == ["POST /categories/", "POST /tags/"]

    async def test_the_two_order_routes_do_not_share_keys(
        self, customer_client: httpx.AsyncClient, session: AsyncSession, lamp: Product
    ) -> None:
        await customer_client.post("/orders/", json=order_of(lamp), headers=keyed())
        other = await customer_client.post(
            "/orders/with-notifications", json=order_of(lamp), headers=keyed()
        )

        assert other.status_code == 201
        assert await count(session, Order) == 2


class TestExpiry:
    async def test_an_expired_answer_is_not_replayed(
        self, customer_client: httpx.AsyncClient, session: AsyncSession, lamp: Product
    ) -> None:
        first = await customer_client.post("/orders/", json=order_of(lamp), headers=keyed())
        await age_answers(session, timedelta(hours=24, seconds=1))

        again = await customer_client.post("/orders/", json=order_of(lamp), headers=keyed())

        assert again.status_code == 201
        assert "Idempotent-Replayed" not in again.headers
        assert again.json()["id"] != first.json()["id"]
        assert await count(session, Order) == 2
        # The key's answer is the new one, written over the expired one.
        stored = (await session.exec(select(IdempotencyKey))).one()
        assert stored.body == again.content

    async def test_an_answer_younger_than_the_setting_is_replayed(
        self, customer_client: httpx.AsyncClient, session: AsyncSession, lamp: Product
    ) -> None:
        await customer_client.post("/orders/", json=order_of(lamp), headers=keyed())
        await age_answers(session, timedelta(hours=23, minutes=59))

        again = await customer_client.post("/orders/", json=order_of(lamp), headers=keyed())

        assert again.headers["Idempotent-Replayed"] == "true"
        assert await count(session, Order) == 1

    async def test_each_answer_written_deletes_a_batch_of_expired_ones(
        self, customer_client: httpx.AsyncClient, session: AsyncSession, lamp: Product
    ) -> None:
        await (await session.connection()).execute(
            text(
                "INSERT INTO idempotency_keys (owner, route, key, fingerprint, status, headers,"
                " body, created_at) SELECT 'user:0', 'POST /orders/', 'old-' || n, '', 201,"
                " '[]', '', now() - interval '25 hours' - n * interval '1 second'"
                " FROM generate_series(1, :n) AS n"
            ).bindparams(n=SWEEP_BATCH + 5)
        )

        await customer_client.post("/orders/", json=order_of(lamp), headers=keyed("a"))
        assert await count(session, IdempotencyKey) == 1 + 5
        await customer_client.post("/orders/", json=order_of(lamp), headers=keyed("b"))
        assert (await session.exec(select(IdempotencyKey.key))).all() == ["a", "b"]


async def age_answers(session: AsyncSession, age: timedelta) -> None:
    await (await session.connection()).execute(
        text("UPDATE idempotency_keys SET created_at = now() - :age").bindparams(age=age)
    )


class TestWhatIsNotStored:
    async def test_an_unexpected_error_of_the_work_is_not_stored_and_its_retry_runs(
        self, customer_client: httpx.AsyncClient, session: AsyncSession, lamp: Product
    ) -> None:
        connection = await session.connection()
        await connection.execute(
            text(
                "CREATE FUNCTION refuse_orders() RETURNS trigger LANGUAGE plpgsql AS"
                " $$BEGIN RAISE EXCEPTION 'orders are down'; END$$"
            )
        )
        await connection.execute(
            text(
                "CREATE TRIGGER refuse BEFORE INSERT ON orders"
                " FOR EACH ROW EXECUTE FUNCTION refuse_orders()"
            )
        )
        failed = await customer_client.post("/orders/", json=order_of(lamp), headers=keyed())
        assert_problem(failed, 500, "internal_error")
        assert await count(session, IdempotencyKey) == 0
        await connection.execute(text("DROP TRIGGER refuse ON orders"))

        retried = await customer_client.post("/orders/", json=order_of(lamp), headers=keyed())

        assert retried.status_code == 201, retried.text
        assert "Idempotent-Replayed" not in retried.headers
        assert await count(session, Order) == 1
        assert await stock_of(session, lamp) == 8


class TestKeyedRouteClass:
    async def test_a_key_taker_on_a_route_that_cannot_store_answers_fails_loudly(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        """A keyed route must be an IdempotentRoute: elsewhere its answer could not be stored
        nor a replay answered, so the taker refuses to run, key or no key."""

        async def create_nothing() -> dict[str, str]:
            return {}

        app.router.add_api_route(
            "/plain", create_nothing, methods=["POST"], dependencies=[KEYED_ANONYMOUS]
        )

        # The in-process transport raises what the app answers as a 500.
        for headers in (keyed(), {}):
            with pytest.raises(RuntimeError, match="must be an IdempotentRoute"):
                await client.post("/plain", json={}, headers=headers)
