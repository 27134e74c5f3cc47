"""Counting the SQL statements a request sends: rows bulk-inserted on the test's connection
(Arena), the statements recorded, and the test harness's own savepoints left out of them."""

import itertools
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, TypeVar

from sqlalchemy import Table, event, insert
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import SQLModel

from api.categories.models import Category
from api.notifications.models import Notification
from api.orders.models import Order, OrderItem
from api.posts.models import Post, PostStatus, PostTagLink
from api.products.models import Product
from api.tags.models import Tag
from api.users.models import User

Caller = Literal["anonymous", "user", "superuser"]
T = TypeVar("T")

serial = itertools.count(1)


def fresh(n: int) -> list[int]:
    """`n` numbers never handed out before, for unique names, slugs and SKUs."""
    return [next(serial) for _ in range(n)]


def cycle(values: Sequence[T], n: int) -> list[T]:
    """`n` values taken round-robin from `values`."""
    return [values[i % len(values)] for i in range(n)]


def table_of(model: type[SQLModel]) -> Table:
    table: Table = model.__table__  # type: ignore[attr-defined]
    return table


@dataclass
class Arena:
    """Bulk inserts on the test's connection: one INSERT per call, whatever the number of rows.
    New tables (orders and their items, notifications) get a method of their own here."""

    connection: AsyncConnection
    caller: User | None = None

    async def insert(self, model: type[SQLModel], rows: list[dict[str, Any]]) -> list[int]:
        """Insert `rows` into `model`'s table; their ids, in the order of `rows`."""
        table = table_of(model)
        query = insert(table).returning(table.c.id, sort_by_parameter_order=True)
        return list((await self.connection.execute(query, rows)).scalars())

    async def sign_in(self, caller: Caller) -> User | None:
        """The caller of a request: nobody, an active user or a superuser."""
        if caller == "anonymous":
            return None
        self.caller = (await self.users(1, is_superuser=caller == "superuser"))[0]
        return self.caller

    async def users(
        self, n: int, *, prefix: str = "shopper", is_superuser: bool = False
    ) -> list[User]:
        users = [
            User(
                username=f"{prefix}_{k}",
                email=f"{prefix}_{k}@example.com",
                # Nobody logs in here: tokens are made from the row (tests.support.client.bearer).
                hashed_password="not-a-password-hash",
                is_superuser=is_superuser,
            )
            for k in fresh(n)
        ]
        ids = await self.insert(User, [user.model_dump(exclude_none=True) for user in users])
        for user, user_id in zip(users, ids, strict=True):
            user.id = user_id
        return users

    async def user_ids(self, n: int, *, prefix: str = "author") -> list[int]:
        return [user.id for user in await self.users(n, prefix=prefix) if user.id is not None]

    async def categories(self, n: int, *, parent_ids: Sequence[int | None] = (None,)) -> list[int]:
        rows = [
            {"name": f"Shelf {k}", "slug": f"shelf-{k}", "parent_id": parent_id}
            for k, parent_id in zip(fresh(n), cycle(parent_ids, n), strict=True)
        ]
        return await self.insert(Category, rows)

    async def products(
        self, n: int, *, category_ids: Sequence[int | None], stock: int = 5
    ) -> list[int]:
        rows = [
            {
                "name": f"Widget {k}",
                "slug": f"widget-{k}",
                "sku": f"WIDGET-{k}",
                "price": Decimal(f"{k % 90 + 1}.99"),
                "stock_quantity": stock,
                "is_active": True,
                "category_id": category_id,
            }
            for k, category_id in zip(fresh(n), cycle(category_ids, n), strict=True)
        ]
        return await self.insert(Product, rows)

    async def tags(self, n: int) -> list[int]:
        rows = [{"name": f"topic {k}", "slug": f"topic-{k}"} for k in fresh(n)]
        return await self.insert(Tag, rows)

    async def posts(
        self,
        n: int,
        *,
        author_ids: Sequence[int],
        statuses: Sequence[PostStatus] = (PostStatus.published,),
    ) -> list[int]:
        rows = [
            {
                "title": f"Post {k}",
                "slug": f"post-{k}",
                "content": f"About {k}.",
                "author_id": author_id,
                "status": status,
            }
            for k, author_id, status in zip(
                fresh(n), cycle(author_ids, n), cycle(statuses, n), strict=True
            )
        ]
        return await self.insert(Post, rows)

    async def tag(self, post_ids: Sequence[int], tag_ids: Sequence[int]) -> None:
        """Every post gets every tag."""
        rows = [{"post_id": p, "tag_id": t} for p in post_ids for t in tag_ids]
        await self.connection.execute(insert(table_of(PostTagLink)), rows)

    async def orders(
        self, n: int, *, user_ids: Sequence[int], product_ids: Sequence[int]
    ) -> list[int]:
        """n orders round-robin over the users, each with one item of every product."""
        rows = [
            {"order_number": f"ORD-COUNT-{k}", "user_id": user_id, "total_amount": Decimal("9.99")}
            for k, user_id in zip(fresh(n), cycle(user_ids, n), strict=True)
        ]
        orders = await self.insert(Order, rows)
        items = [
            {
                "order_id": order,
                "product_id": product,
                "quantity": 1,
                "unit_price": Decimal("9.99"),
                "total_price": Decimal("9.99"),
            }
            for order in orders
            for product in product_ids
        ]
        await self.connection.execute(insert(table_of(OrderItem)), items)
        return orders

    async def notifications(
        self, n: int, *, user_id: int, order_ids: Sequence[int | None]
    ) -> list[int]:
        rows = [
            {"user_id": user_id, "message": f"Note {k}", "order_id": order}
            for k, order in zip(fresh(n), cycle(order_ids, n), strict=True)
        ]
        return await self.insert(Notification, rows)

    def caller_id(self) -> int:
        assert self.caller is not None, "the case needs a caller"
        assert self.caller.id is not None
        return self.caller.id


# The test harness runs each request's session in a savepoint of the test's transaction
# (tests.support.database.savepoint_sessions, join_transaction_mode="create_savepoint"): where
# production sends BEGIN and COMMIT, which asyncpg issues itself and no cursor event sees, the
# harness sends "SAVEPOINT sa_savepoint_N" first and "RELEASE SAVEPOINT sa_savepoint_N" (or
# "ROLLBACK TO SAVEPOINT") last. Those are dropped, by the name of the first savepoint of the
# request; a savepoint the app itself makes (a notification's) has another name and is counted.
HARNESS_SAVEPOINT = re.compile(r"^\s*(?:RELEASE |ROLLBACK TO )?SAVEPOINT (\w+)\s*$", re.I)


def app_statements(statements: list[str]) -> list[str]:
    first = HARNESS_SAVEPOINT.match(statements[0]) if statements else None
    if first is None:
        return statements
    harness = first.group(1)
    return [
        s for s in statements if not ((m := HARNESS_SAVEPOINT.match(s)) and m.group(1) == harness)
    ]


@contextmanager
def recording(connection: AsyncConnection) -> Iterator[list[str]]:
    """Every statement sent on `connection` inside the block, in order."""
    sent: list[str] = []
    sync = connection.sync_connection
    assert sync is not None

    def record(conn: Connection, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    event.listen(sync, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(sync, "before_cursor_execute", record)
