"""Orders: queries and rules. Functions flush, never commit.

Who sees what is part of every query: a user's orders are theirs (and a superuser's); anyone
else's order is a 404. Products are locked `FOR UPDATE ... ORDER BY id` whenever stock moves, so
two orders over the same products queue in the same order and cannot deadlock, and stock checked
under the lock cannot be oversold.
"""

import secrets
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    column,
    delete,
    exists,
    func,
    true,
    type_coerce,
    update,
    values,
)
from sqlalchemy import select as sql_select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import joinedload, selectinload
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from api.core import conditional, metrics
from api.core.conditional import Condition
from api.core.db import constraint_answers, constraint_errors
from api.core.errors import (
    Conflict,
    FieldError,
    Forbidden,
    InsufficientStock,
    InvalidStatusTransition,
    NotForSale,
    NotFound,
)
from api.core.pagination import Page, PageParams, apaginate
from api.notifications.service import notify
from api.orders.models import (
    REFERENCES,
    TRANSITIONS,
    InactiveDeleted,
    Order,
    OrderCreate,
    OrderItem,
    OrderRead,
    OrderStats,
    OrderStatus,
    TopSpender,
)
from api.products.models import Product
from api.users.models import IN_USE as USER_IN_USE
from api.users.models import User

NUMBER_ATTEMPTS = 5


def owned_by(caller: User) -> ColumnElement[bool]:
    return true() if caller.is_superuser else col(Order.user_id) == caller.id


def with_items(query: SelectOfScalar[Order], *, user: bool = False) -> SelectOfScalar[Order]:
    """Items and their products in one more statement (the user joined in), never one per row."""
    query = query.options(
        selectinload(Order.items).joinedload(OrderItem.product)  # type: ignore[arg-type]
    )
    if user:
        query = query.options(joinedload(Order.user))  # type: ignore[arg-type]
    return query.execution_options(populate_existing=True)


async def get_order(
    *, session: AsyncSession, order_id: int, caller: User, details: bool = False
) -> Order:
    query = with_items(select(Order).where(Order.id == order_id, owned_by(caller)), user=details)
    order = (await session.exec(query)).first()
    if order is None:
        raise NotFound("Order", order_id)
    return order


def order_number() -> str:
    """`ORD-<UTC timestamp>-<6 hex>`; a collision is retried, not answered."""
    return f"ORD-{datetime.now(UTC):%Y%m%d%H%M%S}-{secrets.token_hex(3).upper()}"


async def _lock_products(session: AsyncSession, product_ids: list[int]) -> dict[int, Product]:
    query = (
        select(Product)
        .where(col(Product.id).in_(product_ids))
        .order_by(col(Product.id))
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return {product.id: product for product in await session.exec(query) if product.id}


def _check_line(product: Product, quantity: int) -> None:
    if not product.is_active:
        raise NotForSale(
            f"Product {product.id} ({product.name}) is not for sale.",
            errors=[FieldError(field="items", message=f"product {product.id}: inactive")],
        )
    if product.stock_quantity < quantity:
        raise InsufficientStock(
            f"Only {product.stock_quantity} of product {product.id} ({product.name}) in stock;"
            f" {quantity} ordered.",
            errors=[
                FieldError(
                    field="items",
                    message=f"product {product.id}: available {product.stock_quantity}",
                )
            ],
        )


async def create_order(*, session: AsyncSession, caller: User, order_in: OrderCreate) -> Order:
    """One transaction: lock the products in id order, check them, take the stock, write the
    order and its items at today's prices, then the owner's notification (in a savepoint).

    Eight statements whatever the number of lines: the caller, the lock, one UPDATE for all the
    stock, the order, all its items, and the notification's savepoint; the answer is built from
    the rows these returned, not read back.
    """
    user_id = order_in.user_id or caller.id
    assert user_id is not None
    if user_id != caller.id and not caller.is_superuser:
        raise Forbidden("An order is placed for oneself; only a superuser may name another user.")
    quantities = Counter[int]()
    for line in order_in.items:  # repeated lines of one product are one item
        quantities[line.product_id] += line.quantity
    products = await _lock_products(session, sorted(quantities))
    for product_id, quantity in sorted(quantities.items()):
        if product_id not in products:
            raise NotFound("Product", product_id)
        _check_line(products[product_id], quantity)
    await _take_stock(session, quantities)
    order = await _insert(
        session,
        user_id=user_id,
        shipping_address=order_in.shipping_address,
        total_amount=sum((products[p].price * q for p, q in quantities.items()), Decimal("0.00")),
    )
    items = await session.exec(
        insert(OrderItem).returning(OrderItem, sort_by_parameter_order=True),
        params=[
            {
                "order_id": order.id,
                "product_id": product_id,
                "quantity": quantity,
                "unit_price": products[product_id].price,
                "total_price": products[product_id].price * quantity,
            }
            for product_id, quantity in sorted(quantities.items())
        ],
    )
    # The answer's relationships, from rows already in hand (loaded, so never lazy).
    items_list = list(items.scalars())
    for item in items_list:
        set_committed_value(item, "product", products[item.product_id])
    set_committed_value(order, "items", items_list)
    await notify(
        session=session,
        user_id=user_id,
        message=f"Order {order.order_number} received: {order.total_amount} in total.",
        order_id=order.id,
    )
    metrics.count_on_commit(session, metrics.ORDERS_PLACED)
    return order


async def _take_stock(session: AsyncSession, quantities: Mapping[int, int]) -> None:
    """One UPDATE for every line (rows already locked and checked; a negative quantity puts
    stock back); the products come back."""
    lines = values(column("id", Integer), column("quantity", Integer), name="lines").data(
        list(quantities.items())
    )
    await session.exec(
        update(Product)
        .where(col(Product.id) == lines.c.id)
        .values(stock_quantity=col(Product.stock_quantity) - lines.c.quantity)
        .returning(Product)
        .execution_options(synchronize_session=False, populate_existing=True)
    )


async def _insert(session: AsyncSession, **fields: Any) -> Order:
    """Insert the order under a fresh number, drawing again on the rare collision (ON CONFLICT
    DO NOTHING: no savepoint needed). An unknown user is a 422."""
    for _ in range(NUMBER_ATTEMPTS):
        statement = (
            insert(Order)
            .values(order_number=order_number(), **fields)
            .on_conflict_do_nothing(index_elements=["order_number"])
            .returning(Order)
        )
        async with constraint_answers(references=REFERENCES):
            order: Order | None = (await session.exec(statement)).scalars().first()
        if order is not None:
            return order
    raise Conflict("Could not draw a free order number; try again.")


async def list_orders(
    *, session: AsyncSession, params: PageParams, caller: User, user_id: int | None = None
) -> Page[Order]:
    """Newest first: the caller's own orders (a superuser's: everyone's), or one user's."""
    query = select(Order).where(owned_by(caller))
    if user_id is not None:
        query = query.where(Order.user_id == user_id)
    page: Page[Order] = await apaginate(session, query.order_by(col(Order.id).desc()), params)
    return page


async def change_status(
    *,
    session: AsyncSession,
    order_id: int,
    caller: User,
    new_status: OrderStatus,
    if_match: Condition | None = None,
) -> Order:
    """Move an order along its status machine under a row lock, so that of two racing moves the
    second sees the first's result. Cancelling puts the items back in stock.

    The order is locked and read with its items and their products (the answer, and what a
    cancel puts back), the status written by one UPDATE ... RETURNING: the answer is built from
    rows in hand, not read back. If-Match is compared with that locked read, as GET shows it
    (no statement added); the products' stock it shows is as read, their rows not locked."""
    locked = select(Order).where(Order.id == order_id, owned_by(caller)).with_for_update(of=Order)
    order = (await session.exec(with_items(locked))).first()
    if order is None:
        raise NotFound("Order", order_id)
    if new_status != OrderStatus.cancelled and not caller.is_superuser:
        raise Forbidden(f"Only a superuser can mark an order {new_status}.")
    conditional.require(if_match, OrderRead, order, resource="Order", key=order_id)
    current = OrderStatus(order.status)
    if new_status not in TRANSITIONS.get(current, set()):
        raise InvalidStatusTransition(f"A {current} order cannot become {new_status}.")
    if new_status == OrderStatus.cancelled:
        await _restock(session, order.items)
    moved = (
        update(Order)
        .where(col(Order.id) == order_id)
        .values(status=new_status)
        .returning(col(Order.status), col(Order.updated_at))
        .execution_options(synchronize_session=False)
    )
    # The order in hand takes what the row now holds (loading the whole row again would reset
    # the items it carries).
    for name, value in (await session.exec(moved)).one()._mapping.items():
        set_committed_value(order, name, value)
    await notify(
        session=session,
        user_id=order.user_id,
        message=f"Order {order.order_number} is now {new_status}.",
        order_id=order_id,
    )
    if new_status == OrderStatus.cancelled:
        metrics.count_on_commit(session, metrics.ORDERS_CANCELLED)
    return order


async def _restock(session: AsyncSession, items: Sequence[OrderItem]) -> None:
    """Put a cancelled order's items back, under locks taken in id order like an order's."""
    await _lock_products(session, sorted(item.product_id for item in items))
    await _take_stock(session, {item.product_id: -item.quantity for item in items})


async def stats(*, session: AsyncSession) -> OrderStats:
    """Order count and revenue (cancelled orders excluded) with counts by status, in one query."""
    query = sql_select(
        col(Order.status), func.count(col(Order.id)), func.sum(col(Order.total_amount))
    ).group_by(col(Order.status))
    rows = (await (await session.connection()).execute(query)).all()
    by_status = dict.fromkeys(OrderStatus, 0)
    revenue = Decimal("0.00")
    for status, count, total in rows:
        by_status[OrderStatus(status)] = count
        if status != OrderStatus.cancelled:
            revenue += total
    return OrderStats(
        total_orders=sum(by_status.values()), total_revenue=revenue, orders_by_status=by_status
    )


# Users by their orders: the queries that read orders to answer about users.


async def delete_inactive_users(*, session: AsyncSession) -> InactiveDeleted:
    """Delete the inactive users without orders, in one statement; count those kept."""
    has_orders = exists().where(col(Order.user_id) == col(User.id))
    async with constraint_errors(session, in_use=USER_IN_USE):  # an order placed meanwhile
        deleted = await session.exec(
            delete(User).where(col(User.is_active).is_(False), ~has_orders).returning(col(User.id))
        )
        count = len(deleted.all())
    kept = select(func.count()).select_from(User).where(col(User.is_active).is_(False))
    return InactiveDeleted(deleted=count, kept_with_orders=(await session.exec(kept)).one())


async def top_spenders(*, session: AsyncSession, limit: int) -> list[TopSpender]:
    """Users by what their orders not cancelled add up to, highest first."""
    total = func.sum(col(Order.total_amount))
    query = (
        sql_select(
            type_coerce(col(User.id), Integer).label("user_id"),
            col(User.username),
            col(User.email),
            func.count(col(Order.id)).label("order_count"),
            total.label("total_spent"),
        )
        .join(Order, col(Order.user_id) == col(User.id))
        .where(col(Order.status) != OrderStatus.cancelled)
        .group_by(col(User.id))
        .order_by(total.desc(), col(User.id))
        .limit(limit)
    )
    rows = (await (await session.connection()).execute(query)).all()
    return [TopSpender.model_validate(row, from_attributes=True) for row in rows]
