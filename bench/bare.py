"""Bare asyncpg handlers for `GET /products/{id}` and `GET /products/` (page 1 by page, a deep
page by cursor), and a bare `GET /health`: make bench's yardsticks. The handlers are the driver's
ceiling on the API's own path: what SQLAlchemy and our code cost on top of the driver is the
API's rate over theirs, measured on the same machine in the same run (issue 23's targets: 0.8x
for the row on NullPool, 0.5x pooled and for the pages). `/health` answers the API's liveness
model with no middleware: the framework's floor, so that 1/rps(the API's /health) -
1/rps(this one) is what the API's middleware stack costs a request.

FastAPI and uvicorn with uvicorn's defaults but its access log, the API's response models and
parameters' bounds, the API's statements (compiled from its own query builders by SQLAlchemy's
asyncpg dialect, as the API sends them: `product_sql`, `page_sql`, `cursor_sql`), the same JSON
(a page's `next_cursor` encoded by the API's pagination) and the API's connect arguments
(`tls_context`, `client_encoding`, a statement cache only where PgBouncer keeps statements); no
SQLAlchemy at run time, no middleware, no logging set-up of ours.
One connection per request on DB_POOL=null (as NullPool), an asyncpg pool otherwise.
Served by make bench only: `uvicorn --factory bench.bare:create_app`.
"""

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from math import ceil
from typing import Annotated, Any

import asyncpg
from fastapi import FastAPI, HTTPException, Path, Query
from sqlakeyset import serialize_bookmark, unserialize_bookmark
from sqlakeyset.columns import parse_ob_clause
from sqlakeyset.paging import prepare_paging
from sqlalchemy import Select, bindparam
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.engine import make_url
from sqlalchemy.sql.compiler import SQLCompiler
from sqlmodel import select
from sqlmodel.sql.expression import SelectOfScalar

from api.core import pagination
from api.core.config import Settings
from api.core.db import connect_args
from api.core.errors import InvalidQuery
from api.core.models import MAX_ID
from api.core.pagination import COUNT_CAP, MAX_CURSOR, MAX_PAGE, Page
from api.health.routes import Liveness
from api.products import service
from api.products.models import Product, ProductRead

DIALECT = asyncpg_dialect.dialect()  # type: ignore[no-untyped-call]


def product_query() -> SelectOfScalar[Product]:
    """`GET /products/{id}`'s statement, the id a bound parameter (here and in pgbench's script)."""
    return select(Product).where(Product.id == bindparam("id"))


def product_sql() -> str:
    """`GET /products/{id}`'s statement as the API's engine sends it (`$1::INTEGER`)."""
    return str(product_query().compile(dialect=DIALECT))


def compiled(statement: Select[Any]) -> tuple[str, list[Any]]:
    """A statement as the API's engine sends it, and its parameters in their order ($1, $2...)."""
    found: SQLCompiler = statement.compile(dialect=DIALECT)
    return str(found), [found.params[name] for name in found.positiontup or []]


# GET /products/ without filters, as the route asks the service for it: ordered by id.
LIST = service.filtered()
ORDER = parse_ob_clause(LIST)  # the list's sort columns, which a cursor carries


@cache
def page_sql(page: int, size: int) -> tuple[str, list[Any]]:
    """`GET /products/?page=&size=`'s statement as the API's pagination builds it: the
    page's rows, the list's capped count riding on each, in one statement."""
    count = pagination.capped_count(LIST)
    statement = LIST.add_columns(count.scalar_subquery()).limit(size).offset(size * (page - 1))
    return compiled(statement)


@cache
def cursor_sql(size: int) -> str:
    """`GET /products/?cursor=&size=`'s statement as sqlakeyset builds it for the API (its
    `select_page`): the rows after the cursor's place, one more than the page to see whether
    another follows. Its parameters: the place's values, then size + 1."""
    place = tuple(0 for _ in ORDER)
    statement = prepare_paging(LIST, size, place, False, orm=False, dialect=DIALECT).select
    sql, parameters = compiled(statement)
    if parameters != [*place, size + 1]:
        raise RuntimeError(f"sqlakeyset's cursor statement changed its parameters: {sql}")
    return sql


def next_cursor(row: asyncpg.Record) -> str:
    """The `next_cursor` of the page that ends with `row`, as the API encodes it."""
    place = tuple(row[column.comparable_value.key] for column in ORDER)
    return pagination.encode_cursor(ORDER, serialize_bookmark((place, False)))


def cursor_place(cursor: str) -> tuple[Any, ...]:
    """The place after which a `next_cursor` of this list continues (a 422 for another's)."""
    try:
        place, _ = unserialize_bookmark(pagination.cursor_bookmark(ORDER, cursor))
    except InvalidQuery as exc:
        raise HTTPException(422, "not a cursor of this list") from exc
    assert place is not None  # cursor_bookmark refuses a bookmark without one
    return tuple(place)


async def keep_as_is(connection: asyncpg.Connection) -> None:
    """A pooled connection goes back as it is."""


def create_app() -> FastAPI:
    settings = Settings()
    dsn = make_url(settings.database_url).set(drivername="postgresql")
    arguments = {"dsn": dsn.render_as_string(hide_password=False), **connect_args(settings)}
    # make bench --connect-args: the experiment's arguments here too, as serve.py gives the API.
    arguments.update(json.loads(os.environ.get("BENCH_CONNECT_ARGS") or "{}"))
    sql = product_sql()
    pool: asyncpg.Pool | None = None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal pool
        if settings.db_pool != "null":
            size = settings.db_pool_size + settings.db_max_overflow
            # No reset on release (asyncpg's default sends four statements, RESET ALL among
            # them): like the API's pool, which sets no session state and sends none.
            pool = await asyncpg.create_pool(
                min_size=0, max_size=size, reset=keep_as_is, **arguments
            )
        try:
            yield
        finally:
            if pool is not None:
                await pool.close()

    async def fetch(query: str, *args: Any) -> list[asyncpg.Record]:
        if pool is not None:
            rows: list[asyncpg.Record] = await pool.fetch(query, *args)
            return rows
        connection = await asyncpg.connect(**arguments)
        try:
            rows = await connection.fetch(query, *args)
            return rows
        finally:
            await connection.close()

    async def fetchrow(query: str, *args: Any) -> asyncpg.Record | None:
        rows = await fetch(query, *args)
        return rows[0] if rows else None

    app = FastAPI(lifespan=lifespan)

    @app.get("/health")
    async def health() -> Liveness:
        return Liveness()

    @app.get("/health/ready")
    async def ready() -> dict[str, str]:
        await fetchrow("SELECT 1")
        return {"status": "ok"}

    @app.get("/products/{product_id}", response_model=ProductRead)
    async def get_product(product_id: Annotated[int, Path(gt=0, le=MAX_ID)]) -> Any:
        row = await fetchrow(sql, product_id)
        if row is None:
            raise HTTPException(404)
        return dict(row)

    @app.get("/products/", response_model=Page[ProductRead])
    async def list_products(
        page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
        size: Annotated[int, Query(ge=1, le=100)] = 20,
        cursor: Annotated[str | None, Query(min_length=1, max_length=MAX_CURSOR)] = None,
    ) -> Any:
        if cursor is not None:
            rows = await fetch(cursor_sql(size), *cursor_place(cursor), size + 1)
            return {
                "items": [dict(row) for row in rows[:size]],
                "total": None,
                "page": None,
                "size": size,
                "pages": None,
                "next_cursor": next_cursor(rows[size - 1]) if len(rows) > size else None,
            }
        sql, parameters = page_sql(page, size)
        rows = await fetch(sql, *parameters)
        if rows:
            total = rows[0][-1]  # the capped count, the last column of every row
        else:  # past the end: the count alone, as the API counts it
            sql, parameters = compiled(pagination.capped_count(LIST))
            count = await fetchrow(sql, *parameters)
            total = count[0] if count else 0
        capped = total > COUNT_CAP
        pages = None if capped else ceil(total / size)
        more = len(rows) == size if pages is None else page < pages
        return {
            # The count's column is left out by the response model, as any other extra key.
            "items": [dict(row) for row in rows],
            "total": None if capped else total,
            "total_capped": capped,
            "page": page,
            "size": size,
            "pages": pages,
            "next_cursor": next_cursor(rows[-1]) if more and rows else None,
        }

    return app
