"""Every route sends a fixed number of SQL statements, written down here: a route that starts
sending one more (a lookup added, a check split from its write, a reload after a write) fails
until its number is changed on purpose.

One successful call per route of the OpenAPI document, on rows arranged for it in a savepoint of
the test's transaction. The count is what the app sends on its connection, the current user's
lookup included (see tests.support.statements.app_statements for what is left out: the
harness's own savepoints, and BEGIN/COMMIT, which asyncpg sends outside any cursor). That the
list and nested routes send as many for fifty rows as for one, and an order of ten lines as
many as one of one line, is tests/test_statement_counts.py's part.
"""

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from api.core.security import password_hash
from api.main import create_app
from api.posts.models import PostStatus
from api.products.models import Product
from api.users.models import User
from tests.support.app import openapi_routes, settings_for_tests
from tests.support.client import client_for
from tests.support.statements import Arena, Caller, app_statements, recording, table_of

PASSWORD = "statement-count-password"


@dataclass(frozen=True)
class Call:
    """One request: `url` is the OpenAPI path (same placeholder names) plus any query, its
    placeholders filled from the rows `arrange` makes."""

    method: str
    url: str
    statements: int
    caller: Caller = "superuser"
    json: Any = None
    form: dict[str, str] | None = None
    # The caller's real password hash, for the routes that verify it (hashing costs time).
    password: bool = False

    @property
    def path(self) -> str:
        return self.url.split("?", 1)[0]

    @property
    def id(self) -> str:
        return f"{self.method} {self.url} as {self.caller}"


async def arrange(arena: Arena, connection: AsyncConnection, call: Call) -> dict[str, Any]:
    """Rows every call can name, the caller's ids among them: the caller (or, for an anonymous
    call, an owner) writes the post, places the order and gets its notification."""
    caller = arena.caller_id() if arena.caller else (await arena.user_ids(1, prefix="owner"))[0]
    [category, empty_category] = await arena.categories(2)
    [product, spare_product] = await arena.products(2, category_ids=[category], stock=100)
    [tag, loose_tag] = await arena.tags(2)
    [post, published] = await arena.posts(
        2, author_ids=[caller], statuses=(PostStatus.draft, PostStatus.published)
    )
    await arena.tag([post, published], [tag])
    [order] = await arena.orders(1, user_ids=[caller], product_ids=[product])
    [notification] = await arena.notifications(1, user_id=caller, order_ids=[order])
    [member] = await arena.users(1, prefix="member")
    products, users = table_of(Product), table_of(User)
    sku, slug = (
        await connection.execute(
            select(products.c.sku, products.c.slug).where(products.c.id == product)
        )
    ).one()
    if call.password and arena.caller:
        hashed = password_hash.hash(PASSWORD)
        await connection.execute(
            update(users).where(users.c.id == caller).values(hashed_password=hashed)
        )
        # The caller's token is issued under the password it has now.
        arena.caller.hashed_password = hashed
    return {
        "category_id": category,
        "empty_category_id": empty_category,
        "product_id": product,
        "spare_product_id": spare_product,
        "sku": sku,
        "slug": slug,
        "tag_id": tag,
        "loose_tag_id": loose_tag,
        "post_id": post,
        "order_id": order,
        "notification_id": notification,
        "user_id": member.id,
        "email": member.email,
        "caller_id": caller,
        "caller_name": arena.caller.username if arena.caller else "",
    }


def filled(value: Any, ids: dict[str, Any]) -> Any:
    """`value` (a URL or a JSON body) with its `{placeholder}` strings filled from `ids`; a
    string that is just one placeholder takes the id's own type."""
    if isinstance(value, str):
        if value.startswith("{") and value.endswith("}") and value[1:-1] in ids:
            return ids[value[1:-1]]
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: filled(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [filled(v, ids) for v in value]
    return value


@asynccontextmanager
async def arranged(
    connection: AsyncConnection, call: Call
) -> AsyncIterator[tuple[User | None, dict[str, Any], dict[str, Any]]]:
    """The call's caller signed in, its rows arranged (their ids) and its request's body,
    in a savepoint rolled back afterwards."""
    savepoint = await connection.begin_nested()
    try:
        arena = Arena(connection)
        caller = await arena.sign_in(call.caller)
        ids = await arrange(arena, connection, call)
        request: dict[str, Any] = {}
        if call.json is not None:
            request["json"] = filled(call.json, ids)
        if call.form is not None:
            request["data"] = filled(call.form, ids)
        yield caller, ids, request
    finally:
        await savepoint.rollback()


def operations_taking(header: str) -> set[tuple[str, str]]:
    """The document's operations (method, path) that take the header."""
    paths = create_app(settings_for_tests()).openapi()["paths"]
    return {
        (method.upper(), path)
        for path, operations in paths.items()
        for method, operation in operations.items()
        if any(p["name"] == header for p in operation.get("parameters", []))
    }


def order_of(product: str) -> dict[str, Any]:
    return {"items": [{"product_id": product, "quantity": 2}]}


CALLS = [
    Call("GET", "/", 0, "anonymous"),
    Call("GET", "/health", 0, "anonymous"),
    Call("GET", "/health/ready", 1, "anonymous"),
    Call("GET", "/health/db", 2),
    # products
    Call("POST", "/products/", 3, json={"name": "Lamp", "price": "12.50", "sku": "lamp-1"}),
    Call("GET", "/products/", 1, "anonymous"),
    Call("GET", "/products/?size=1&cursor={cursor}", 1, "anonymous"),
    Call("GET", "/products/with-categories", 1, "anonymous"),
    Call("GET", "/products/low-stock?threshold=1000", 2),
    Call("GET", "/products/by-category-stats", 2),
    Call("GET", "/products/by-sku/{sku}", 1, "anonymous"),
    Call("GET", "/products/by-slug/{slug}", 1, "anonymous"),
    Call("GET", "/products/{product_id}", 1, "anonymous"),
    Call("PATCH", "/products/{product_id}", 2, json={"price": "9.99"}),
    Call("DELETE", "/products/{spare_product_id}", 3),
    Call("POST", "/products/{product_id}/stock", 2, json={"change": 3}),
    # categories
    Call("POST", "/categories/", 2, json={"name": "Lamps"}),
    Call("GET", "/categories/", 1, "anonymous"),
    Call("GET", "/categories/{category_id}", 2, "anonymous"),
    Call("PATCH", "/categories/{category_id}", 4, json={"name": "Lights"}),
    Call("DELETE", "/categories/{empty_category_id}", 3),
    Call("GET", "/categories/{category_id}/products", 3, "anonymous"),
    # tags
    Call("POST", "/tags/", 2, json={"name": "Lighting"}),
    Call("GET", "/tags/", 1, "anonymous"),
    Call("GET", "/tags/{tag_id}", 1, "anonymous"),
    Call("PATCH", "/tags/{tag_id}", 2, json={"name": "Lighting"}),
    Call("DELETE", "/tags/{loose_tag_id}", 3),
    # posts
    Call("POST", "/posts/", 4, json={"title": "On lamps", "content": "Light."}),
    Call("GET", "/posts/", 2, "anonymous"),
    Call("GET", "/posts/{post_id}", 4),
    Call("PATCH", "/posts/{post_id}", 4, json={"title": "On lights"}),
    Call("DELETE", "/posts/{post_id}", 2),
    Call("PATCH", "/posts/{post_id}/status?new_status=published", 5),
    Call("PUT", "/posts/{post_id}/tags/{loose_tag_id}", 4),
    Call("DELETE", "/posts/{post_id}/tags/{tag_id}", 4),
    # orders
    Call("POST", "/orders/", 8, json=order_of("{product_id}")),
    Call("GET", "/orders/", 2),
    Call("POST", "/orders/with-notifications", 8, json=order_of("{product_id}")),
    Call("GET", "/orders/stats/summary", 2),
    Call("GET", "/orders/user/{caller_id}", 2),
    Call("GET", "/orders/{order_id}", 3),
    Call("GET", "/orders/{order_id}/details", 3),
    Call("PATCH", "/orders/{order_id}/status?new_status=cancelled", 9),
    # auth and users
    # The attempt counted per address and per account, and the user read, on a session of the
    # login's own; then, on the request's, the address's count cleared and the account's
    # attempt taken back in one statement: 4; the second session's join savepoint (SAVEPOINT,
    # RELEASE) is the harness's, counted here because only the first session's is told apart.
    Call(
        "POST",
        "/auth/token",
        6,
        "user",  # the one whose password is set; the route reads no bearer token
        form={"username": "{caller_name}", "password": PASSWORD},
        password=True,
    ),
    Call(
        "POST",
        "/users/",
        2,
        "anonymous",
        json={"username": "newcomer", "email": "newcomer@example.com", "password": PASSWORD},
    ),
    Call("GET", "/users/", 2),
    Call("GET", "/users/me", 1, "user"),
    Call("PATCH", "/users/me", 2, "user", json={"bio": "Lamps."}),
    # The caller read, then its transaction ended before the hashing (release_connection): the
    # UPDATE runs in a second transaction, whose join savepoint the harness counts (2 + 2).
    Call(
        "POST",
        "/users/me/password",
        4,
        "user",
        json={"current_password": PASSWORD, "new_password": "another-password"},
        password=True,
    ),
    # As for the password: the caller read, the hashing with no transaction open, then the
    # inserts in a second transaction (its join savepoint counted by the harness).
    Call(
        "POST",
        "/users/bulk",
        5,
        json=[{"username": "bulk_one", "email": "bulk_one@example.com", "password": PASSWORD}],
    ),
    Call("GET", "/users/search?q=member", 2),
    Call("GET", "/users/by-email/{email}", 2),
    Call("GET", "/users/stats/active-count", 2),
    Call("PATCH", "/users/bulk/deactivate?days=30", 2),
    Call("DELETE", "/users/bulk/inactive", 3),
    Call("GET", "/users/top-spenders", 2),
    Call("GET", "/users/{user_id}/with-posts", 3),
    Call(
        "PUT",
        "/users/{user_id}",
        2,
        json={"username": "renamed", "email": "renamed@example.com", "is_active": True},
    ),
    Call("GET", "/users/{user_id}", 2),
    Call("PATCH", "/users/{user_id}", 2, json={"bio": "Lamps."}),
    Call("DELETE", "/users/{user_id}", 3),
    # A deactivation locks the active superusers first, so that one always stays.
    Call("DELETE", "/users/{user_id}/soft", 3),
    Call("PATCH", "/users/{user_id}", 3, json={"is_active": False}),
    Call("GET", "/users/{caller_id}/notifications", 2),
    Call("POST", "/notifications/{notification_id}/read", 3),
]


def test_every_route_has_a_call() -> None:
    def shape(path: str) -> str:  # placeholders unnamed: calls name the rows they need
        return re.sub(r"\{[^}]+\}", "{}", path)

    routes = {(method, shape(path)) for method, path in openapi_routes()}
    covered = {(call.method, shape(call.path)) for call in CALLS}
    assert routes - covered == set(), "routes without a statement count"
    assert covered - routes == set(), "calls to paths that are not routes"


@pytest.mark.parametrize("call", CALLS, ids=[call.id for call in CALLS])
async def test_route_sends_its_fixed_number_of_statements(
    app: FastAPI, db_connection: AsyncConnection, call: Call
) -> None:
    async with arranged(db_connection, call) as (caller, ids, request):
        async with client_for(app, caller) as client:
            if "{cursor}" in call.url:  # the second page of products, by cursor
                first = await client.get("/products/?size=1")
                ids["cursor"] = first.json()["next_cursor"]
            with recording(db_connection) as sent:
                response = await client.request(call.method, filled(call.url, ids), **request)
        assert response.is_success, response.text
        # The counts are those of answers with rows: a page with none counts the list on its
        # own (apaginate), one statement more.
        body = response.json() if response.content else None
        rows = body.get("items", [None]) if isinstance(body, dict) else body
        assert rows != [], f"an empty answer: {response.text}"
        statements = app_statements(sent)
        print(f"{call.id}: {len(statements)}")
        assert len(statements) == call.statements, "\n".join(statements)


# The POSTs that take an Idempotency-Key, with what they send keyed beyond their count above
# (the key's lock and look-up, the work's SAVEPOINT and RELEASE, the answer's INSERT: 5), and
# what a replay sends in all (the caller's lookup, the lock and the look-up). A keyed bulk
# creation keeps its connection through the hashing, so it loses the second transaction's
# join savepoint (2) that the harness counts without a key.
KEYED = {
    ("POST", "/products/"): (5, 3),
    ("POST", "/products/{product_id}/stock"): (5, 3),
    ("POST", "/categories/"): (5, 3),
    ("POST", "/tags/"): (5, 3),
    ("POST", "/posts/"): (5, 3),
    ("POST", "/orders/"): (5, 3),
    ("POST", "/orders/with-notifications"): (5, 3),
    ("POST", "/users/"): (5, 2),
    ("POST", "/users/bulk"): (5 - 2, 3),
}
KEYED_CALLS = [call for call in CALLS if (call.method, call.path) in KEYED]


def test_every_keyed_route_has_a_count() -> None:
    assert operations_taking("Idempotency-Key") == set(KEYED)
    assert len(KEYED_CALLS) == len(KEYED)


@pytest.mark.parametrize("call", KEYED_CALLS, ids=[call.id for call in KEYED_CALLS])
async def test_a_keyed_request_sends_five_more_and_its_replay_two_after_the_caller(
    app: FastAPI, db_connection: AsyncConnection, call: Call
) -> None:
    added, replay = KEYED[call.method, call.path]
    async with arranged(db_connection, call) as (caller, ids, request):
        request["headers"] = {"Idempotency-Key": "statement-count"}
        counts = []
        async with client_for(app, caller) as client:
            for _ in range(2):
                with recording(db_connection) as sent:
                    response = await client.request(call.method, filled(call.url, ids), **request)
                assert response.is_success, response.text
                counts.append(len(app_statements(sent)))
        assert response.headers["Idempotent-Replayed"] == "true"
        print(f"{call.id} keyed: {counts}")
        assert counts == [call.statements + added, replay]


# The writes that take If-Match, with the GET whose ETag they send and what they send with it
# beyond their count above: the locking read of the row as that GET shows it (1).
IF_MATCH = {
    ("PATCH", "/products/{product_id}"): ("/products/{product_id}", 1),
    ("DELETE", "/products/{spare_product_id}"): ("/products/{spare_product_id}", 0),
    ("POST", "/products/{product_id}/stock"): ("/products/{product_id}", 1),
    # The category and its children: the lock and the children's read.
    ("PATCH", "/categories/{category_id}"): ("/categories/{category_id}", 2),
    ("DELETE", "/categories/{empty_category_id}"): ("/categories/{empty_category_id}", 2),
    ("PATCH", "/tags/{tag_id}"): ("/tags/{tag_id}", 1),
    ("DELETE", "/tags/{loose_tag_id}"): ("/tags/{loose_tag_id}", 0),
    ("PATCH", "/users/me"): ("/users/me", 1),
    ("PUT", "/users/{user_id}"): ("/users/{user_id}", 1),
    ("PATCH", "/users/{user_id}"): ("/users/{user_id}", 1),
    ("DELETE", "/users/{user_id}"): ("/users/{user_id}", 1),
    ("DELETE", "/users/{user_id}/soft"): ("/users/{user_id}", 1),
    # The post and its tags.
    ("PATCH", "/posts/{post_id}"): ("/posts/{post_id}", 2),
    ("DELETE", "/posts/{post_id}"): ("/posts/{post_id}", 2),
    ("PATCH", "/posts/{post_id}/status"): ("/posts/{post_id}", 2),
    ("PUT", "/posts/{post_id}/tags/{loose_tag_id}"): ("/posts/{post_id}", 2),
    ("DELETE", "/posts/{post_id}/tags/{tag_id}"): ("/posts/{post_id}", 2),
    # The status change locks and reads the order as its GET shows it anyway.
    ("PATCH", "/orders/{order_id}/status"): ("/orders/{order_id}", 0),
}
IF_MATCH_CALLS = [call for call in CALLS if (call.method, call.path) in IF_MATCH]


def test_every_conditional_write_has_a_count() -> None:
    def shape(path: str) -> str:
        return re.sub(r"\{[^}]+\}", "{}", path)

    conditional = {(method, shape(path)) for method, path in operations_taking("If-Match")}
    assert conditional == {(method, shape(path)) for method, path in IF_MATCH}
    assert {(call.method, call.path) for call in IF_MATCH_CALLS} == set(IF_MATCH)


@pytest.mark.parametrize("call", IF_MATCH_CALLS, ids=[call.id for call in IF_MATCH_CALLS])
async def test_if_match_adds_at_most_the_locking_read(
    app: FastAPI, db_connection: AsyncConnection, call: Call
) -> None:
    """A delete reads its row anyway: the locking read takes that read's place."""
    read_url, added = IF_MATCH[call.method, call.path]
    async with arranged(db_connection, call) as (caller, ids, request):
        async with client_for(app, caller) as client:
            tag = (await client.get(filled(read_url, ids))).headers["ETag"]
            with recording(db_connection) as sent:
                response = await client.request(
                    call.method, filled(call.url, ids), headers={"If-Match": tag}, **request
                )
        assert response.is_success, response.text
        statements = app_statements(sent)
        print(f"{call.id} with If-Match: {len(statements)}")
        assert len(statements) == call.statements + added, "\n".join(statements)
