"""A bare asyncpg handler for `GET /products/{id}`, and a bare `GET /health`: make bench's
yardsticks. The first is what SQLAlchemy and our code cost on top of the driver: issue 6 sets
its 0.12x target as "close to what a bare driver handler reaches, so the ORM and our code cost
at most about a quarter on top"; this measures that handler on the same machine, in the same
run, instead of assuming the ratio. The second answers the API's liveness model with no
middleware: the framework's floor, so that 1/rps(the API's /health) - 1/rps(this one) is what
the API's middleware stack costs a request.

FastAPI and uvicorn with uvicorn's defaults but its access log, the API's response model and
path parameter, the API's query (compiled from the model by SQLAlchemy's asyncpg dialect, as the
API sends it) and the API's connect arguments (`tls_context`, `client_encoding`, a statement
cache only where PgBouncer keeps statements); no SQLAlchemy at run time, no middleware, no
logging set-up of ours.
One connection per request on DB_POOL=null (as NullPool), an asyncpg pool otherwise.
Served by make bench only: `uvicorn --factory bench.bare:create_app`.
"""

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import asyncpg
from fastapi import FastAPI, HTTPException, Path
from sqlalchemy import bindparam
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.engine import make_url
from sqlmodel import select
from sqlmodel.sql.expression import SelectOfScalar

from api.core.config import Settings
from api.core.db import connect_args
from api.core.models import MAX_ID
from api.health.routes import Liveness
from api.products.models import Product, ProductRead


def product_query() -> SelectOfScalar[Product]:
    """`GET /products/{id}`'s statement, the id a bound parameter (here and in pgbench's script)."""
    return select(Product).where(Product.id == bindparam("id"))


def product_sql() -> str:
    """`GET /products/{id}`'s statement as the API's engine sends it (`$1::INTEGER`)."""
    dialect = asyncpg_dialect.dialect()  # type: ignore[no-untyped-call]
    return str(product_query().compile(dialect=dialect))


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

    async def fetchrow(query: str, *args: Any) -> asyncpg.Record | None:
        if pool is not None:
            return await pool.fetchrow(query, *args)
        connection = await asyncpg.connect(**arguments)
        try:
            return await connection.fetchrow(query, *args)
        finally:
            await connection.close()

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

    return app
