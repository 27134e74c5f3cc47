"""No N+1 anywhere: every list route and every nested read sends as many SQL statements for one
row as for fifty.

Each case names a route, who calls it and how to arrange rows (with their related rows: products
with categories, posts with tags, categories with children, users with posts). A paged route is
called with `?size=1` and `?size=50` over the same 50 arranged rows; a route that answers one
object with a nested list is called for an object with 1 related row and for one with 50. The two
statement counts must be equal, and each answer must really hold 1 and 50 items.

Every measurement arranges its rows in a savepoint of the test's transaction and rolls it back
afterwards, so each one sees exactly its own rows. Rows are bulk-inserted (one statement per
table), which keeps the whole file to a few seconds.

Lazy loading cannot hide here either: the relationships are `lazy="raise"`, so a route that
loaded one implicitly would answer a 500, and every case asserts a 200.

To cover a new route (the orders, the notifications), add a `Case` to `CASES` with an arrange
function; `test_every_list_and_nested_get_has_a_case` fails until there is one. The counts are
printed and recorded as the `statements` property: `pytest tests/test_statement_counts.py -rP`
shows them.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncConnection

from api.main import create_app
from api.posts.models import PostStatus
from tests.support.app import settings_for_tests
from tests.support.client import client_for
from tests.support.statements import Arena, Caller, app_statements, fresh, recording

Ids = dict[str, int]
Arrange = Callable[["Arena", int], Awaitable[Ids]]

LARGE = 50  # the "many" of every case; at least this many rows are arranged for a page of 50


# How to arrange `n` rows, with their related rows, for each case. Each returns the ids that the
# case's URL names.


async def users_with_posts(arena: Arena, n: int) -> Ids:
    """n users named shopper_*, each the author of two tagged posts."""
    authors = await arena.user_ids(n, prefix="shopper")
    posts = await arena.posts(2 * n, author_ids=authors)
    await arena.tag(posts, await arena.tags(2))
    return {}


async def own_posts(arena: Arena, n: int) -> Ids:
    """The caller with n posts (drafts and published ones), each with three tags."""
    author = arena.caller_id()
    statuses = (PostStatus.draft, PostStatus.published, PostStatus.archived)
    posts = await arena.posts(n, author_ids=[author], statuses=statuses)
    await arena.tag(posts, await arena.tags(3))
    return {"user_id": author}


async def someone_elses_posts(arena: Arena, n: int) -> Ids:
    """Another user (not the caller) with n posts, each with three tags."""
    [author] = await arena.user_ids(1)
    posts = await arena.posts(n, author_ids=[author], statuses=(PostStatus.draft,))
    await arena.tag(posts, await arena.tags(3))
    return {"user_id": author}


async def categories_with_children(arena: Arena, n: int) -> Ids:
    """n top-level categories, each with a child category and a product."""
    parents = await arena.categories(n)
    children = await arena.categories(n, parent_ids=parents)
    await arena.products(n, category_ids=children)
    return {}


async def a_category_with_children(arena: Arena, n: int) -> Ids:
    """One category with n children, each with a child and a product of its own."""
    [parent] = await arena.categories(1)
    children = await arena.categories(n, parent_ids=[parent])
    grandchildren = await arena.categories(n, parent_ids=children)
    await arena.products(n, category_ids=children + grandchildren)
    return {"category_id": parent}


async def a_category_with_products(arena: Arena, n: int) -> Ids:
    """One category (with a child) holding n products."""
    [category] = await arena.categories(1)
    await arena.categories(1, parent_ids=[category])
    await arena.products(n, category_ids=[category])
    return {"category_id": category}


async def products_in_categories(arena: Arena, n: int) -> Ids:
    """n products, each in a category of its own (itself under a parent), low on stock."""
    parents = await arena.categories(n)
    categories = await arena.categories(n, parent_ids=parents)
    await arena.products(n, category_ids=categories, stock=3)
    return {}


async def categories_with_products(arena: Arena, n: int) -> Ids:
    """n categories, each with three active products."""
    categories = await arena.categories(n)
    await arena.products(3 * n, category_ids=categories)
    return {}


async def tags_on_posts(arena: Arena, n: int) -> Ids:
    """n tags, each on two posts."""
    [author] = await arena.user_ids(1)
    await arena.tag(await arena.posts(2, author_ids=[author]), await arena.tags(n))
    return {}


async def published_posts_with_tags(arena: Arena, n: int) -> Ids:
    """n published posts by several authors, each with three tags (one shared by all)."""
    authors = await arena.user_ids(5)
    posts = await arena.posts(n, author_ids=authors)
    tags = await arena.tags(3)
    await arena.tag(posts, tags)
    return {"tag_id": tags[0]}


async def own_drafts_with_tags(arena: Arena, n: int) -> Ids:
    """The caller's n drafts, each with three tags, and another user's drafts beside them."""
    author = arena.caller_id()
    [other] = await arena.user_ids(1)
    posts = await arena.posts(n, author_ids=[author], statuses=(PostStatus.draft,))
    posts += await arena.posts(n, author_ids=[other], statuses=(PostStatus.draft,))
    await arena.tag(posts, await arena.tags(3))
    return {"author_id": author}


async def a_post_with_tags(arena: Arena, n: int) -> Ids:
    """One published post with n tags."""
    [author] = await arena.user_ids(1)
    [post] = await arena.posts(1, author_ids=[author])
    await arena.tag([post], await arena.tags(n))
    return {"post_id": post}


async def own_orders(arena: Arena, n: int) -> Ids:
    """The caller's n orders with two items each, and another user's orders beside them."""
    caller = arena.caller_id()
    [other] = await arena.user_ids(1)
    products = await arena.products(2, category_ids=[None])
    await arena.orders(n, user_ids=[caller], product_ids=products)
    await arena.orders(n, user_ids=[other], product_ids=products)
    return {"user_id": caller}


async def orders_of_many_users(arena: Arena, n: int) -> Ids:
    """n orders of five users, two items each."""
    products = await arena.products(2, category_ids=[None])
    await arena.orders(n, user_ids=await arena.user_ids(5), product_ids=products)
    return {}


async def an_order_with_items(arena: Arena, n: int) -> Ids:
    """One order of the caller with n items (products in categories)."""
    products = await arena.products(n, category_ids=await arena.categories(2))
    [order] = await arena.orders(1, user_ids=[arena.caller_id()], product_ids=products)
    return {"order_id": order}


async def spenders(arena: Arena, n: int) -> Ids:
    """n users with two orders each."""
    products = await arena.products(1, category_ids=[None])
    await arena.orders(2 * n, user_ids=await arena.user_ids(n), product_ids=products)
    return {}


async def own_notifications(arena: Arena, n: int) -> Ids:
    """The caller's n notifications about their orders, and another user's beside them."""
    caller = arena.caller_id()
    [other] = await arena.user_ids(1)
    products = await arena.products(1, category_ids=[None])
    orders = await arena.orders(2, user_ids=[caller], product_ids=products)
    await arena.notifications(n, user_id=caller, order_ids=orders)
    await arena.notifications(n, user_id=other, order_ids=[None])
    return {"user_id": caller}


@dataclass(frozen=True)
class Case:
    """One request to measure.

    `url` is the OpenAPI path (same placeholder names) plus any query; its placeholders are
    filled from the ids `arrange` returns. A paged case (`paged=True`) arranges `LARGE` rows and
    is called with `size=1` and `size=LARGE`; a nested case is called on an object arranged with
    1 related row and on one arranged with `LARGE`. `items` is the dotted path of the list in the
    answer that must hold that many entries ("" for an answer that is itself the list).
    """

    url: str
    caller: Caller
    arrange: Arrange
    items: str = "items"
    paged: bool = True

    @property
    def path(self) -> str:
        return self.url.split("?", 1)[0]

    @property
    def id(self) -> str:
        return f"GET {self.url} as {self.caller}"


def nested(url: str, caller: Caller, arrange: Arrange, *, items: str) -> Case:
    return Case(url, caller, arrange, items=items, paged=False)


PRODUCT_FILTERS = "category_id={category_id}&min_price=1&max_price=100&is_active=true&q=widget"

CASES = [
    Case("/users/", "superuser", users_with_posts),
    Case("/users/?is_active=true&search=shopper", "superuser", users_with_posts),
    Case("/users/search?q=shopper", "superuser", users_with_posts),
    nested("/users/{user_id}/with-posts", "user", own_posts, items="posts"),
    nested("/users/{user_id}/with-posts", "superuser", someone_elses_posts, items="posts"),
    Case("/categories/", "anonymous", categories_with_children),
    nested("/categories/{category_id}", "anonymous", a_category_with_children, items="children"),
    Case(
        "/categories/{category_id}/products",
        "anonymous",
        a_category_with_products,
        items="products.items",
    ),
    Case("/products/", "anonymous", products_in_categories),
    Case(f"/products/?{PRODUCT_FILTERS}&sort=-price", "anonymous", a_category_with_products),
    Case("/products/?sort=-created_at", "anonymous", products_in_categories),
    Case("/products/with-categories", "anonymous", products_in_categories),
    Case("/products/low-stock?threshold=10", "superuser", products_in_categories),
    nested("/products/by-category-stats", "superuser", categories_with_products, items=""),
    Case("/tags/", "anonymous", tags_on_posts),
    Case("/posts/", "anonymous", published_posts_with_tags),
    Case("/posts/", "superuser", published_posts_with_tags),
    Case("/posts/?tag_id={tag_id}", "anonymous", published_posts_with_tags),
    Case("/posts/?status=draft&author_id={author_id}", "user", own_drafts_with_tags),
    nested("/posts/{post_id}", "anonymous", a_post_with_tags, items="tags"),
    Case("/orders/", "user", own_orders),
    Case("/orders/", "superuser", orders_of_many_users),
    Case("/orders/user/{user_id}", "user", own_orders),
    nested("/orders/{order_id}", "user", an_order_with_items, items="items"),
    nested("/orders/{order_id}/details", "user", an_order_with_items, items="items"),
    nested("/users/top-spenders?limit=100", "superuser", spenders, items=""),
    Case("/users/{user_id}/notifications", "user", own_notifications),
]


def items_at(body: Any, path: str) -> list[Any]:
    for key in filter(None, path.split(".")):
        body = body[key]
    assert isinstance(body, list), body
    return body


@dataclass
class Measurement:
    related: int  # rows arranged (nested) or the page size asked for (paged)
    statements: list[str]

    @property
    def count(self) -> int:
        return len(self.statements)


async def measure(
    app: FastAPI, connection: AsyncConnection, case: Case, *, rows: int, size: int | None
) -> Measurement:
    """Arrange `rows` in a savepoint, send the case's request (with `size` when paged), count the
    statements the app sends, check the answer's items, and roll the rows back."""
    savepoint = await connection.begin_nested()
    try:
        arena = Arena(connection)
        caller = await arena.sign_in(case.caller)
        url = case.url.format(**await case.arrange(arena, rows))
        if size is not None:
            url += f"{'&' if '?' in url else '?'}size={size}"
        async with client_for(app, caller) as client:
            with recording(connection) as sent:
                response = await client.get(url)
        assert response.status_code == 200, response.text
        expected = rows if size is None else size
        assert len(items_at(response.json(), case.items)) == expected, url
        return Measurement(expected, app_statements(sent))
    finally:
        await savepoint.rollback()


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_one_and_many_send_as_many_statements(
    app: FastAPI,
    db_connection: AsyncConnection,
    case: Case,
    record_property: Callable[[str, object], None],
) -> None:
    if case.paged:
        one = await measure(app, db_connection, case, rows=LARGE, size=1)
        many = await measure(app, db_connection, case, rows=LARGE, size=LARGE)
    else:
        one = await measure(app, db_connection, case, rows=1, size=None)
        many = await measure(app, db_connection, case, rows=LARGE, size=None)

    record_property("statements", {one.related: one.count, many.related: many.count})
    print(f"{case.id}: {one.count} statements for {one.related}, {many.count} for {many.related}")
    assert one.count == many.count, (
        f"{case.id} sends {one.count} statements for {one.related} and {many.count} for "
        f"{many.related}:\n" + "\n".join(many.statements)
    )


def array_in(schema: Any, components: dict[str, Any], seen: frozenset[str] = frozenset()) -> bool:
    """Whether an OpenAPI schema holds a list anywhere, following its references."""
    if isinstance(schema, list):
        return any(array_in(item, components, seen) for item in schema)
    if not isinstance(schema, dict):
        return False
    if schema.get("type") == "array":
        return True
    ref = schema.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        return name not in seen and array_in(components[name], components, seen | {name})
    return any(array_in(value, components, seen) for value in schema.values())


def list_and_nested_gets() -> set[str]:
    """The GET paths whose successful answer holds a list: a page, a list, a nested list."""
    spec = create_app(settings_for_tests()).openapi()
    components = spec.get("components", {}).get("schemas", {})
    return {
        path
        for path, operations in spec["paths"].items()
        for status, answer in operations.get("get", {}).get("responses", {}).items()
        if status.startswith("2") and array_in(answer.get("content", {}), components)
    }


def test_every_list_and_nested_get_has_a_case() -> None:
    routes = list_and_nested_gets()
    covered = {case.path for case in CASES}
    assert routes - covered == set(), "list or nested GET routes without a statement-count case"
    assert covered - routes == set(), "cases for paths that are not list or nested GET routes"


async def test_bulk_sign_up_sends_as_many_statements_for_one_user_as_for_fifty(
    app: FastAPI, db_connection: AsyncConnection
) -> None:
    async def statements_for(n: int) -> int:
        savepoint = await db_connection.begin_nested()
        try:
            caller = await Arena(db_connection).sign_in("superuser")
            body = [
                {"username": f"bulk_{k}", "email": f"bulk_{k}@example.com", "password": "x" * 10}
                for k in fresh(n)
            ]
            async with client_for(app, caller) as client:
                with recording(db_connection) as sent:
                    response = await client.post("/users/bulk", json=body)
            assert response.status_code == 201, response.text
            assert len(response.json()) == n
            return len(app_statements(sent))
        finally:
            await savepoint.rollback()

    one, many = await statements_for(1), await statements_for(LARGE)
    print(f"POST /users/bulk: {one} statements for 1, {many} for {LARGE}")
    assert one == many


async def test_an_order_of_ten_lines_sends_as_many_statements_as_one_of_one(
    app: FastAPI, db_connection: AsyncConnection
) -> None:
    async def statements_for(lines: int) -> list[str]:
        savepoint = await db_connection.begin_nested()
        try:
            arena = Arena(db_connection)
            caller = await arena.sign_in("user")
            products = await arena.products(lines, category_ids=[None], stock=100)
            body = {"items": [{"product_id": p, "quantity": 2} for p in products]}
            async with client_for(app, caller) as client:
                with recording(db_connection) as sent:
                    response = await client.post("/orders/", json=body)
            assert response.status_code == 201, response.text
            assert len(response.json()["items"]) == lines
            return app_statements(sent)
        finally:
            await savepoint.rollback()

    one, ten = await statements_for(1), await statements_for(10)
    print(f"POST /orders/: {len(one)} statements for 1 line, {len(ten)} for 10")
    assert len(one) == len(ten), "\n".join(ten)
