"""Products: queries and rules. Functions flush, never commit."""

from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Row, and_, cast, func, or_, update
from sqlalchemy import select as sql_select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import joinedload
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from api.categories import service as category_service
from api.categories.models import Category
from api.core import conditional
from api.core.conditional import Condition
from api.core.db import (
    columns_where,
    constraint_errors,
    get_or_404,
    read_or_404,
    update_or_404,
)
from api.core.errors import AlreadyExists, FieldError, InsufficientStock, NotFound, StockLimit
from api.core.pagination import Page, PageParams, apaginate
from api.products.models import (
    IN_USE,
    MAX_STOCK,
    REFERENCES,
    UNIQUE_FIELDS,
    CategoryStats,
    Product,
    ProductCreate,
    ProductRead,
    ProductSort,
    ProductUpdate,
)

ORDERINGS: dict[str, Any] = {
    "id": col(Product.id).asc(),
    "price": col(Product.price).asc(),
    "-price": col(Product.price).desc(),
    "name": col(Product.name).asc(),
    "-name": col(Product.name).desc(),
    "created_at": col(Product.created_at).asc(),
    "-created_at": col(Product.created_at).desc(),
}


async def create_product(*, session: AsyncSession, product_in: ProductCreate) -> Product:
    db_product = Product.model_validate(product_in)
    async with constraint_errors(session, unique=UNIQUE_FIELDS, references=REFERENCES):
        session.add(db_product)
    await session.refresh(db_product)
    return db_product


async def get_product(*, session: AsyncSession, product_id: int) -> Product:
    return await get_or_404(session, Product, product_id)


async def read_product(*, connection: AsyncConnection, product_id: int) -> Row[Any]:
    """The product's columns, for an answer (Core: no ORM object is made)."""
    return await read_or_404(connection, Product, product_id)


async def read_product_by(*, connection: AsyncConnection, field: str, value: str) -> Row[Any]:
    """The columns of the product whose `field` (sku, any case, or slug) is `value`."""
    lookup = value.upper() if field == "sku" else value
    row: Row[Any] | None = (
        await connection.execute(columns_where(Product, field), {"value": lookup})
    ).one_or_none()
    if row is None:
        raise NotFound("Product", value, by=field)
    return row


def filtered(
    *,
    category_id: int | None = None,
    min_price: Decimal | None = None,
    max_price: Decimal | None = None,
    is_active: bool | None = None,
    q: str | None = None,
    sort: ProductSort = "id",
) -> SelectOfScalar[Product]:
    query = select(Product)
    if category_id is not None:
        query = query.where(Product.category_id == category_id)
    if min_price is not None:
        query = query.where(col(Product.price) >= min_price)
    if max_price is not None:
        query = query.where(col(Product.price) <= max_price)
    if is_active is not None:
        query = query.where(Product.is_active == is_active)
    if q:  # case-insensitive, with the text's own % and _ taken literally
        query = query.where(
            or_(
                col(Product.name).icontains(q, autoescape=True),
                col(Product.description).icontains(q, autoescape=True),
                col(Product.sku).icontains(q, autoescape=True),
            )
        )
    if sort == "id":
        return query.order_by(ORDERINGS[sort])
    # id breaks ties, so pages never overlap or skip.
    return query.order_by(ORDERINGS[sort], col(Product.id).asc())


async def list_products(
    *, session: AsyncSession, params: PageParams, query: SelectOfScalar[Product]
) -> Page[Product]:
    page: Page[Product] = await apaginate(session, query, params)
    return page


async def read_products(
    *, connection: AsyncConnection, params: PageParams, query: SelectOfScalar[Product]
) -> Page[Any]:
    """A page of `query`'s products, for an answer: by number, Core rows of their columns."""
    return await apaginate(connection, query, params)


async def list_with_categories(*, session: AsyncSession, params: PageParams) -> Page[Product]:
    """Active products with their category, joined in the same statement."""
    query = (
        select(Product)
        .where(Product.is_active == True)  # noqa: E712
        .options(joinedload(Product.category))  # type: ignore[arg-type]
        .order_by(col(Product.id))
    )
    page: Page[Product] = await apaginate(session, query, params)
    return page


async def low_stock(*, session: AsyncSession, params: PageParams, threshold: int) -> Page[Product]:
    query = (
        select(Product)
        .where(col(Product.stock_quantity) < threshold, Product.is_active == True)  # noqa: E712
        .order_by(col(Product.stock_quantity), col(Product.id))
    )
    page: Page[Product] = await apaginate(session, query, params)
    return page


async def category_stats(*, session: AsyncSession) -> list[CategoryStats]:
    """Count and price figures of the active products, per category."""
    count = func.count(col(Product.id))
    query = (
        sql_select(
            col(Category.name),
            count,
            func.round(func.avg(col(Product.price)), 2),
            func.min(col(Product.price)),
            func.max(col(Product.price)),
        )
        .join(Product, and_(col(Product.category_id) == Category.id, col(Product.is_active)))
        .group_by(col(Category.id), col(Category.name))
        .order_by(count.desc(), col(Category.name))
    )
    rows = (await (await session.connection()).execute(query)).all()
    return [
        CategoryStats(category=name, product_count=n, avg_price=avg, min_price=low, max_price=high)
        for name, n, avg, low, high in rows
    ]


async def check_unchanged(
    *, session: AsyncSession, product_id: int, if_match: Condition | None
) -> Product | None:
    """A write's If-Match: the product locked and its tag compared (a 412 when stale); the
    locked row, or None without a condition."""
    return await conditional.check(session, if_match, Product, product_id, ProductRead)


async def update_product(
    *,
    session: AsyncSession,
    product_id: int,
    product_in: ProductUpdate,
    if_match: Condition | None = None,
) -> Product:
    await check_unchanged(session=session, product_id=product_id, if_match=if_match)
    changes = product_in.model_dump(exclude_unset=True)
    return await update_or_404(
        session, Product, product_id, changes, unique=UNIQUE_FIELDS, references=REFERENCES
    )


async def delete_product(
    *, session: AsyncSession, product_id: int, if_match: Condition | None = None
) -> None:
    """A product on an order is a 409 (the database decides)."""
    db_product = await check_unchanged(
        session=session, product_id=product_id, if_match=if_match
    ) or await get_product(session=session, product_id=product_id)
    async with constraint_errors(session, in_use=IN_USE):
        await session.delete(db_product)


async def change_stock(
    *, session: AsyncSession, product_id: int, change: int, if_match: Condition | None = None
) -> Product:
    """Add `change` to the stock in one statement that answers the updated row, never below
    zero, and never above MAX_STOCK by an addition (a take from a stock above it is allowed; no
    read-modify-write). Only a refusal reads the row again, to say why."""
    await check_unchanged(session=session, product_id=product_id, if_match=if_match)
    # In bigint: a stock set before MAX_STOCK existed may be near the column's limit.
    after = cast(col(Product.stock_quantity), BigInteger) + change
    result = await session.exec(
        update(Product)
        .where(col(Product.id) == product_id, after <= MAX_STOCK if change > 0 else after >= 0)
        .values(stock_quantity=col(Product.stock_quantity) + change)
        .returning(Product)
        # The row If-Match locked, already in the session, takes the returned values.
        .execution_options(populate_existing=True)
    )
    updated: Product | None = result.scalars().one_or_none()
    if updated is None:
        db_product = await get_product(session=session, product_id=product_id)
        if change > 0:
            raise StockLimit(
                f"{db_product.stock_quantity} in stock; adding {change} would pass the"
                f" maximum of {MAX_STOCK}.",
                errors=[FieldError(field="change", message=f"at most {MAX_STOCK} in stock")],
            )
        raise InsufficientStock(
            f"Only {db_product.stock_quantity} in stock; cannot take {-change}.",
            errors=[FieldError(field="change", message=f"available: {db_product.stock_quantity}")],
        )
    return updated


async def delete_category(
    *, session: AsyncSession, category_id: int, if_match: Condition | None = None
) -> None:
    """Delete a category and uncategorise its products (their foreign key's ON DELETE SET NULL).
    A product whose name an uncategorised product already has would collide: that is a 409
    naming it (and the unique constraint guards the race). The category's products are locked
    first, in id order like an order's: the cascade alone would take them in whatever order it
    finds them, and could deadlock with an order. If-Match is checked first, with the category
    locked FOR NO KEY UPDATE (which products referring to it do not wait for)."""
    await category_service.check_unchanged(
        session=session, category_id=category_id, if_match=if_match
    )
    uncategorised = select(Product.name).where(col(Product.category_id).is_(None))
    products = (
        select(col(Product.name), col(Product.name).in_(uncategorised))
        .where(col(Product.category_id) == category_id)
        .order_by(col(Product.id))
        .with_for_update()
    )
    clash = next((name for name, clashes in await session.exec(products) if clashes), None)
    if clash is not None:
        raise AlreadyExists(
            f"Product {clash!r} would collide with an uncategorised product of the same name.",
            errors=[FieldError(field="name", message=f"{clash} exists without a category")],
        )
    async with constraint_errors(session, unique=UNIQUE_FIELDS):
        await category_service.delete_category(session=session, category_id=category_id)
