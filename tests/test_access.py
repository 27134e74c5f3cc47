"""Every route of the OpenAPI document, called as anonymous, as a user, as another user and as a
superuser, against the access table in docs/api.md."""

import itertools
import re
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlmodel.ext.asyncio.session import AsyncSession

from api.categories.models import Category
from api.products.models import Product
from api.tags.models import Tag
from api.users.models import User
from tests.support.app import ROOT, openapi_routes
from tests.support.client import client_for
from tests.support.factories import make_notification, make_order, make_post, make_user

LEVELS = {"public", "user", "owner", "superuser"}
# Required query parameters, so that a refusal is about who calls, not about what is missing.
QUERIES = {
    "/posts/{post_id}/status": "?new_status=published",
    "/users/search": "?q=owner",
    "/users/bulk/deactivate": "?days=30",
    "/orders/{order_id}/status": "?new_status=cancelled",
}
serial = itertools.count(1)


def access_table() -> dict[tuple[str, str], str]:
    readme = (ROOT / "docs" / "api.md").read_text()
    section = readme.split("\n## Access\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (GET|POST|PUT|PATCH|DELETE) \| (\S+) \| (\w+) \|$", section, re.M)
    return {(method, path): level for method, path, level in rows}


def test_the_table_lists_every_route_and_only_routes() -> None:
    table = access_table()
    assert set(table.values()) <= LEVELS
    assert openapi_routes() - table.keys() == set(), "routes missing from the table in docs/api.md"
    assert table.keys() - openapi_routes() == set(), "the table in docs/api.md lists unknown routes"


async def call(
    app: FastAPI, method: str, path: str, caller: User | None, ids: dict[str, Any]
) -> httpx.Response:
    url = path + QUERIES.get(path, "")
    for name, value in ids.items():
        url = url.replace("{" + name + "}", str(value))
    body: dict[str, Any] = (
        {"data": {}} if path == "/auth/token" else {"json": {}} if method != "GET" else {}
    )
    if method == "DELETE":
        body = {}
    async with client_for(app, caller) as client:
        return await client.request(method, url, **body)


@pytest.mark.parametrize(("method", "path", "level"), [(*k, v) for k, v in access_table().items()])
async def test_route_answers_as_the_table_says(
    app: FastAPI, session: AsyncSession, method: str, path: str, level: str
) -> None:
    owner = await make_user(session, username="owner_user")
    other = await make_user(session, username="other_user")
    superuser = await make_user(session, username="super_user", is_superuser=True)

    async def objects() -> dict[str, Any]:
        """Fresh rows for each caller, so that one caller's DELETE leaves the next its own."""
        n = next(serial)
        tag = Tag(name=f"access-{n}", slug=f"access-{n}")
        category = Category(name=f"Access {n}", slug=f"access-{n}")
        product = Product(
            name=f"Access {n}", slug=f"access-{n}", sku=f"ACCESS-{n}", price=Decimal("1.00")
        )
        session.add_all([tag, category, product])
        await session.flush()
        post = await make_post(session, author=owner, title=f"Owned draft {n}")
        order = await make_order(session, user=owner, products=[product])
        notification = await make_notification(session, user=owner, order=order)
        return {
            "user_id": owner.id,
            "tag_id": tag.id,
            "category_id": category.id,
            "product_id": product.id,
            "sku": product.sku,
            "slug": product.slug,
            "post_id": post.id,
            "email": owner.email,
            "order_id": order.id,
            "notification_id": notification.id,
        }

    anonymous = await call(app, method, path, None, await objects())
    as_owner = await call(app, method, path, owner, await objects())
    as_other = await call(app, method, path, other, await objects())
    as_superuser = await call(app, method, path, superuser, await objects())  # last: may delete
    refused = {401, 403}
    if level == "public":
        assert {
            anonymous.status_code,
            as_owner.status_code,
            as_other.status_code,
        } & refused == set()
    else:
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"] == "Bearer"
    if level == "user":
        assert as_owner.status_code not in refused
        assert as_other.status_code not in refused
    if level == "owner":
        assert as_owner.status_code not in refused | {404}
        assert as_other.status_code == 404
    if level == "superuser":
        assert as_owner.status_code == 403
        assert as_other.status_code == 403
    assert as_superuser.status_code not in refused | {404}
