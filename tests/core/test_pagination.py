"""Paging by page and by cursor: the same envelope, cursors that walk a whole list once in its
sort order whatever is inserted meanwhile, and foreign or forged cursors refused with a 422."""

import base64
from typing import Any

import httpx
import pytest
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.core import pagination
from api.products.models import Product
from api.users.models import User
from tests.support.client import assert_problem, error_fields
from tests.support.factories import make_order, make_product, make_user

PRICES = ["5.00", "1.00", "5.00", "3.00", "1.00", "9.00", "5.00"]


@pytest.fixture
async def products(session: AsyncSession) -> list[Product]:
    return [
        await make_product(session, name=f"Item {n}", price=price) for n, price in enumerate(PRICES)
    ]


async def walk(client: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every page of `path` by cursor, starting from page 1; each page checked on the way."""
    first = (await client.get(path, params=params)).json()
    pages = [first]
    while pages[-1]["next_cursor"]:
        response = await client.get(path, params=params | {"cursor": pages[-1]["next_cursor"]})
        assert response.status_code == 200, response.text
        page = response.json()
        assert (page["total"], page["page"], page["pages"]) == (None, None, None)
        assert len(page["items"]) <= params["size"]
        pages.append(page)
    return [item for page in pages for item in page["items"]]


@pytest.mark.parametrize("sort", ["id", "price", "-price", "name", "-created_at"])
async def test_a_cursor_walk_matches_the_page_walk(
    client: httpx.AsyncClient, products: list[Product], sort: str
) -> None:
    by_cursor = await walk(client, "/products/", size=2, sort=sort)
    by_page = (await client.get("/products/", params={"size": 100, "sort": sort})).json()

    assert [p["id"] for p in by_cursor] == [p["id"] for p in by_page["items"]]
    assert len(by_cursor) == len(PRICES)


async def test_the_last_page_has_no_next_cursor(
    client: httpx.AsyncClient, products: list[Product]
) -> None:
    whole = (await client.get("/products/", params={"size": 100})).json()
    assert whole["next_cursor"] is None
    first = (await client.get("/products/", params={"size": 3})).json()
    assert first["next_cursor"]
    assert (first["total"], first["page"], first["pages"]) == (7, 1, 3)


async def test_a_cursor_is_not_shifted_by_rows_inserted_before_it(
    client: httpx.AsyncClient, session: AsyncSession, products: list[Product]
) -> None:
    first = (await client.get("/products/", params={"size": 3, "sort": "price"})).json()
    cursor = first["next_cursor"]
    expected = await client.get("/products/", params={"size": 3, "sort": "price", "page": 2})
    await make_product(session, name="Cheapest", price="0.50")  # lands on page 1

    by_cursor = await client.get(
        "/products/", params={"size": 3, "sort": "price", "cursor": cursor}
    )
    by_offset = await client.get("/products/", params={"size": 3, "sort": "price", "page": 2})

    assert [p["id"] for p in by_cursor.json()["items"]] == [
        p["id"] for p in expected.json()["items"]
    ]
    assert by_offset.json()["items"][0]["id"] == first["items"][-1]["id"]  # shifted by one


async def test_orders_newest_first_by_cursor(
    session: AsyncSession, admin_client: httpx.AsyncClient, admin: User
) -> None:
    product = await make_product(session, name="Gadget", price="2.00")
    orders = [await make_order(session, user=admin, products=[product]) for _ in range(5)]

    walked = await walk(admin_client, "/orders/", size=2)

    assert [o["id"] for o in walked] == [o.id for o in reversed(orders)]


async def test_users_by_cursor(
    session: AsyncSession, admin_client: httpx.AsyncClient, admin: User
) -> None:
    users = [await make_user(session) for _ in range(4)]
    walked = await walk(admin_client, "/users/", size=3)
    assert [u["id"] for u in walked] == [admin.id] + [u.id for u in users]


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def unb64(cursor: str) -> str:
    return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()


async def forged(client: httpx.AsyncClient, bookmark: str, sort: str = "id") -> str:
    """A cursor of `bookmark` behind the checksum of the products in `sort`, taken from a real
    next_cursor: what follows the checksum is what the list accepts or refuses."""
    real = (await client.get("/products/", params={"size": 1, "sort": sort})).json()
    return b64(unb64(real["next_cursor"])[: pagination.SCOPE] + bookmark)


@pytest.mark.parametrize(
    ("cursor", "scoped"),
    [
        ("!!!", False),  # not base64url
        ("x" * 513, False),  # too long
        (b64(">i:3"), False),  # a bookmark that fits the list, without the list's checksum
        (b64("hello"), True),  # the list's checksum, then no direction marker
        (b64(">i:abc"), True),  # an integer that is not one
        (b64(">"), True),  # no values
        (b64(">i:3~i:4"), True),  # two values where the list sorts by one column
        (b64(">s:abc"), True),  # a string where the list sorts by an integer
        (b64("<i:3"), True),  # fits the list, but backwards, which no answer hands out
    ],
)
async def test_malformed_cursors_are_422(
    client: httpx.AsyncClient, products: list[Product], cursor: str, scoped: bool
) -> None:
    """Forged cursors; the `scoped` ones open with this list's checksum, taken from a real
    next_cursor, so that what follows it is what gets refused."""
    if scoped:
        cursor = await forged(client, unb64(cursor))

    response = await client.get("/products/", params={"cursor": cursor})

    body = assert_problem(response, 422, "validation_error")
    assert "query.cursor" in error_fields(body)


@pytest.mark.parametrize(
    ("sort", "bookmark"),
    [
        ("id", ">i:2147483648"),  # past the integer column
        ("id", ">i:-2147483649"),
        ("price", ">n:1E+999999~i:1"),  # past any numeric
        ("price", ">n:100000000~i:1"),  # past NUMERIC(10, 2)
        ("price", ">n:99999999.995~i:1"),  # rounds to past it
        ("price", ">n:NaN~i:1"),
        ("price", ">n:Infinity~i:1"),
        ("name", ">s:a\x00b~i:1"),  # NUL, which no PostgreSQL text holds
        ("created_at", ">dt:2020-01-01 00:00:00~i:1"),  # no time zone, for a timestamptz
        ("created_at", ">dt:0001-01-01 00:00:00+01:00~i:1"),  # before year 1 in UTC
        ("created_at", ">dt:9999-12-31 23:59:59-01:00~i:1"),  # after year 9999 in UTC
        ("id", ">b:true"),  # bytes for an integer
    ],
)
async def test_cursor_values_postgresql_would_refuse_are_422(
    client: httpx.AsyncClient, products: list[Product], sort: str, bookmark: str
) -> None:
    """Values of the right kind that the database would still refuse (a DataError, a 500),
    behind the checksum of the list in that sort."""
    cursor = await forged(client, bookmark, sort)

    response = await client.get("/products/", params={"cursor": cursor, "sort": sort})

    body = assert_problem(response, 422, "validation_error")
    assert "query.cursor" in error_fields(body)


@pytest.mark.parametrize(
    ("sort", "bookmark"),
    [
        ("id", ">i:2147483647"),
        ("price", ">n:99999999.99~i:1"),
        ("name", ">s:zzz~i:1"),
        ("created_at", ">dt:2999-01-01 00:00:00+00:00~i:1"),
    ],
)
async def test_cursor_values_at_the_edge_of_their_column_read_an_empty_page(
    client: httpx.AsyncClient, products: list[Product], sort: str, bookmark: str
) -> None:
    """The counterpart: the largest values the columns take are cursors like any other."""
    cursor = await forged(client, bookmark, sort)

    response = await client.get("/products/", params={"cursor": cursor, "sort": sort})

    assert response.status_code == 200, response.text
    assert response.json()["items"] == []


async def test_a_forged_cursor_with_the_lists_checksum_reads_on_from_its_values(
    client: httpx.AsyncClient, products: list[Product]
) -> None:
    """The counterpart of the forged cursors above: the same checksum with a well-formed
    bookmark is a cursor like any other."""
    cursor = await forged(client, f">i:{products[2].id}")

    response = await client.get("/products/", params={"cursor": cursor, "size": 2})

    assert response.status_code == 200, response.text
    assert [p["id"] for p in response.json()["items"]] == [p.id for p in products[3:5]]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"page": 0}, "query.page"),
        ({"page": 1_000_001}, "query.page"),
        ({"page": "x"}, "query.page"),
        ({"size": 0}, "query.size"),
        ({"size": 101}, "query.size"),
        ({"cursor": "a" * 513}, "query.cursor"),
        ({"cursor": "not/base64"}, "query.cursor"),
    ],
)
async def test_out_of_range_paging_names_its_parameter(
    client: httpx.AsyncClient, params: dict[str, Any], field: str
) -> None:
    """The paging parameters are one query model; a bad one is still reported by its own name,
    alone, with the other parameters' values valid."""
    for path in ("/products/", "/tags/", "/categories/"):
        body = assert_problem(await client.get(path, params=params), 422, "validation_error")
        assert error_fields(body) == {field}, path


async def test_a_cursor_of_another_sort_or_list_is_422(
    client: httpx.AsyncClient,
    admin_client: httpx.AsyncClient,
    products: list[Product],
    session: AsyncSession,
) -> None:
    by_price = (await client.get("/products/", params={"size": 2, "sort": "price"})).json()
    by_id = (await client.get("/products/", params={"size": 2})).json()
    for _ in range(3):
        await make_user(session)
    users = (await admin_client.get("/users/", params={"size": 1})).json()

    wrong_type = await client.get(
        "/products/", params={"sort": "name", "cursor": by_price["next_cursor"]}
    )
    wrong_length = await client.get(
        "/products/", params={"sort": "price", "cursor": by_id["next_cursor"]}
    )

    assert_problem(wrong_type, 422, "validation_error")
    assert_problem(wrong_length, 422, "validation_error")
    # One integer id, as the products' own cursors by id hold: only the checksum tells them apart.
    reused = await client.get("/products/", params={"cursor": users["next_cursor"]})
    assert_problem(reused, 422, "validation_error")


async def test_a_list_longer_than_the_count_cap_is_not_counted(
    client: httpx.AsyncClient,
    session: AsyncSession,
    products: list[Product],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past COUNT_CAP rows `total` and `pages` are null and `total_capped` true; the database
    counts no more than the cap and one row, and paging by page and by cursor go on."""
    monkeypatch.setattr(pagination, "COUNT_CAP", 5)
    assert await session.scalar(pagination.capped_count(select(Product))) == 6

    first = (await client.get("/products/", params={"size": 3})).json()
    assert (first["total"], first["total_capped"], first["page"], first["pages"]) == (
        None,
        True,
        1,
        None,
    )
    assert first["next_cursor"]
    last = (await client.get("/products/", params={"size": 3, "page": 3})).json()
    assert len(last["items"]) == 1
    assert last["next_cursor"] is None
    by_cursor = await walk(client, "/products/", size=3)
    assert [p["id"] for p in by_cursor] == [p.id for p in products]

    monkeypatch.setattr(pagination, "COUNT_CAP", len(PRICES))
    exact = (await client.get("/products/", params={"size": 3})).json()
    assert (exact["total"], exact["total_capped"], exact["pages"]) == (7, False, 3)
