"""A tutorial-style app for `GET /products/{id}` and `GET /products/`: make bench's yardstick of
what users would write instead of this API, written the way the FastAPI + SQLAlchemy tutorials
write it (a declarative model, a pydantic schema as `response_model`, an async engine, a session
per request from `Depends(get_db)` that commits on success, `session.get` for a row, offset and
limit plus `count(*)` for a page) and measured beside the API in the same run, on the same data.

It mirrors the API's `products` table with a model of its own and answers the same JSON for a
product (make bench checks that before measuring) and for a page's items; its page envelope is
the tutorials' `{items, total, page, size, pages}`, counted exactly.

Two arrangements, chosen by the environment make bench gives it:

- BENCH_TUTORIAL_DATABASE_URL set: QueuePool straight to PostgreSQL, as the tutorials connect
  (no connect arguments: asyncpg's defaults, its statement cache on). The pool takes the API's
  DB_POOL_SIZE, DB_MAX_OVERFLOW and DB_POOL_PRE_PING and recycles after 30 minutes, as the
  tutorials' production engine does, so that the pool's size is not what the rows compare.
- otherwise: DATABASE_URL, the PgBouncer the API uses, with the API's connect arguments
  (`api.core.db.connect_args`: the statement cache where that PgBouncer keeps statements, off
  where it does not), NullPool on DB_POOL=null and the same QueuePool on DB_POOL=queue.

Served by make bench only, as bare.py's app is: `uvicorn --factory bench.tutorial:create_app`.
"""

import os
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, FastAPI, HTTPException, Query
from pydantic import BaseModel, ConfigDict
from sqlalchemy import DateTime, Numeric, String, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import NullPool

from api.core.config import Settings
from api.core.db import connect_args

T = TypeVar("T")


class Base(DeclarativeBase):
    pass


class Product(Base):
    __tablename__ = "products"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str | None] = mapped_column(String(5000))
    price: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    sku: Mapped[str] = mapped_column(String(50), unique=True)
    stock_quantity: Mapped[int] = mapped_column(default=0)
    is_active: Mapped[bool] = mapped_column(default=True)
    category_id: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ProductOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    slug: str
    description: str | None
    price: Decimal
    sku: str
    stock_quantity: int
    is_active: bool
    category_id: int | None
    created_at: datetime
    updated_at: datetime


class PaginatedResponse(BaseModel, Generic[T]):
    items: list[T]
    total: int
    page: int
    size: int
    pages: int


def engine_arguments(settings: Settings) -> tuple[str, dict[str, Any]]:
    """The URL and create_async_engine's arguments of this arrangement (see the docstring)."""
    pooled = {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_pre_ping": settings.db_pool_pre_ping,
        "pool_recycle": 1800,
    }
    direct = os.environ.get("BENCH_TUTORIAL_DATABASE_URL")
    if direct:
        return direct, pooled
    through_pgbouncer: dict[str, Any] = {"connect_args": connect_args(settings)}
    if settings.db_pool == "null":
        return settings.database_url, {**through_pgbouncer, "poolclass": NullPool}
    return settings.database_url, {**through_pgbouncer, **pooled}


def create_app() -> FastAPI:
    url, arguments = engine_arguments(Settings())
    engine = create_async_engine(url, **arguments)
    SessionLocal = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)

    async def get_db() -> AsyncIterator[AsyncSession]:
        async with SessionLocal() as session:
            try:
                yield session
                await session.commit()
            except Exception:
                await session.rollback()
                raise

    DB = Annotated[AsyncSession, Depends(get_db)]

    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/health/ready")
    async def ready(db: DB) -> dict[str, str]:
        await db.execute(text("SELECT 1"))
        return {"status": "ok"}

    @app.get("/products/{product_id}", response_model=ProductOut)
    async def read_product(product_id: int, db: DB) -> Any:
        product = await db.get(Product, product_id)
        if product is None:
            raise HTTPException(status_code=404, detail="Product not found")
        return product

    @app.get("/products/", response_model=PaginatedResponse[ProductOut])
    async def list_products(
        db: DB,
        page: int = Query(default=1, ge=1),
        size: int = Query(default=20, ge=1, le=100),
    ) -> Any:
        offset = (page - 1) * size
        total = (await db.execute(select(func.count()).select_from(Product))).scalar_one()
        query = select(Product).order_by(Product.id).offset(offset).limit(size)
        items = (await db.execute(query)).scalars().all()
        return PaginatedResponse(
            items=items,
            total=total,
            page=page,
            size=size,
            pages=(total + size - 1) // size,
        )

    return app
