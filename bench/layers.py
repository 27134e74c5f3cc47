"""`python -m bench.layers [--pool-mode queue|null] [--requests N]`: what each layer of a
`GET /products/{id}` costs the app, in CPU milliseconds per request.

The app is called in-process as an ASGI app on uvloop (no HTTP, no uvicorn, no access log), on
make bench's stack and dataset (embedded PostgreSQL, PgBouncer in transaction mode). Probe
routes, added to the app here and nowhere else, peel the request apart one layer at a time:

- `/health`: the framework floor;
- `plain`: the same path parameter and response model, answering a fixed product;
- `session`: + ReadSessionDep, a session opened and closed, unused;
- `connection`: + the session's connection checked out (a connect on NullPool);
- `orm`: + the ORM read (`session.get`), what `GET /products/{id}` does;
- `core`: the same row by a Core select on the session's connection;
- `no session`: a Core select on the engine's connection, no ORM session at all;
- `driver`: asyncpg's own fetchrow on that connection, SQLAlchemy's execution skipped;
- `GET /products/{id}`: the real route.

Rounds are interleaved and the median of each is printed, with its ratio to /health. The figures
are not make bench's (no HTTP server, a loop without wrk beside it) but their differences are
what each layer costs, between layers that wait on the database alike. One request at a time,
the process goes idle while it waits, and waking costs CPU that a loaded worker does not pay: a
probe whose statement was `pg_sleep(0.005)` cost 1.5 ms more CPU than `pg_sleep(0)`, and
`pg_sleep(0.02)` 1.7 ms more. So a NullPool connect, or a statement PostgreSQL works on for
milliseconds (a page's count), looks dearer here than it is under load; make bench's CPU column
is the check. Not to be run beside make bench: both use `.data/bench`.
"""

import argparse
import asyncio
import os
import pathlib
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

import uvloop
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, FastAPI, Path, Request
from sqlalchemy import select

from api.core.db import ReadSessionDep
from api.products import service
from api.products.models import Product, ProductRead
from bench.dataset import DATABASE, prepare_database
from bench.stack import running_pgbouncer, running_postgres

ROWS = 1_000  # ids probed, all present in make bench's dataset
PRODUCTS = Product.__table__  # type: ignore[attr-defined]


def probe_router() -> APIRouter:
    router = APIRouter(prefix="/layers")
    now = datetime.now(UTC)
    fixed = ProductRead(
        id=1, name="Lamp", slug="lamp", description="", price=Decimal("12.50"), sku="LAMP-1",
        stock_quantity=3, is_active=True, category_id=None, created_at=now, updated_at=now,
    )  # fmt: skip
    Id = Annotated[int, Path(gt=0)]

    @router.get("/plain/{i}", response_model=ProductRead)
    async def plain(i: Id) -> Any:
        return fixed

    @router.get("/session/{i}", response_model=ProductRead)
    async def session_only(i: Id, session: ReadSessionDep) -> Any:
        return fixed

    @router.get("/connection/{i}", response_model=ProductRead)
    async def connection(i: Id, session: ReadSessionDep) -> Any:
        await session.connection()
        return fixed

    @router.get("/orm/{i}", response_model=ProductRead)
    async def orm(i: Id, session: ReadSessionDep) -> Any:
        return await service.get_product(session=session, product_id=i)

    @router.get("/core/{i}", response_model=ProductRead)
    async def core(i: Id, session: ReadSessionDep) -> Any:
        result = await (await session.connection()).execute(
            select(PRODUCTS).where(PRODUCTS.c.id == i)
        )
        return result.first()

    @router.get("/no-session/{i}", response_model=ProductRead)
    async def no_session(i: Id, request: Request) -> Any:
        async with request.app.state.read_sessionmaker.kw["bind"].connect() as conn:
            return (await conn.execute(select(PRODUCTS).where(PRODUCTS.c.id == i))).first()

    @router.get("/driver/{i}", response_model=ProductRead)
    async def driver(i: Id, request: Request) -> Any:
        async with request.app.state.read_sessionmaker.kw["bind"].connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            return dict(await raw.fetchrow("SELECT * FROM products WHERE id = $1", i))

    return router


async def get(app: FastAPI, path: str) -> None:
    """One GET straight through the ASGI app; anything but a 200 stops the run."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"host", b"layers")], "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80), "state": {},
    }  # fmt: skip
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    if sent[0]["status"] != 200:
        raise SystemExit(f"{path} answered {sent[0]['status']}: {sent[-1].get('body', b'')!r}")


async def measure(app: FastAPI, requests: int, rounds: int) -> dict[str, list[float]]:
    layers: dict[str, Callable[[int], str]] = {
        "/health": lambda i: "/health",
        "plain": lambda i: f"/layers/plain/{i}",
        "session": lambda i: f"/layers/session/{i}",
        "connection": lambda i: f"/layers/connection/{i}",
        "orm": lambda i: f"/layers/orm/{i}",
        "core": lambda i: f"/layers/core/{i}",
        "no session": lambda i: f"/layers/no-session/{i}",
        "driver": lambda i: f"/layers/driver/{i}",
        "GET /products/{id}": lambda i: f"/products/{i}",
    }
    cpu: dict[str, list[float]] = {name: [] for name in layers}
    for round_ in range(rounds + 1):  # round 0 warms up
        for name, path in layers.items():
            calls: list[Awaitable[None]] = [
                get(app, path(n % ROWS + 1)) for n in range(requests)
            ]  # built before the clock starts
            started = time.process_time()
            for call in calls:
                await call
            if round_:
                cpu[name].append((time.process_time() - started) / requests * 1000)
    return cpu


async def main(url: str, pool_mode: str, requests: int, rounds: int) -> None:
    os.environ.update(
        DATABASE_URL=url,
        DB_POOL=pool_mode,
        DB_STATEMENT_CACHE="false",
        DB_POOL_SIZE="10",
        DB_POOL_PRE_PING="false",
        LOG_LEVEL="WARNING",
    )
    from api.main import create_app  # settings read from the environment set above

    app = create_app()
    app.include_router(probe_router())
    async with LifespanManager(app) as manager:
        cpu = await measure(manager.app, requests, rounds)  # type: ignore[arg-type]
    floor = statistics.median(cpu["/health"])
    print(f"\n{pool_mode} pool through PgBouncer, {requests} requests x {rounds} rounds")
    print(f"{'layer':<20} {'CPU ms/req':>10} {'x /health':>9}  (each round's figure)")
    for name, figures in cpu.items():
        median = statistics.median(figures)
        rounds_cell = " ".join(f"{f:.2f}" for f in figures)
        print(f"{name:<20} {median:>10.3f} {floor / median:>9.3f}  ({rounds_cell})")


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool-mode", choices=["queue", "null"], default="queue")
    parser.add_argument("--requests", type=int, default=300, help="per layer and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data-dir", default=".data/bench")
    args = parser.parse_args()
    data_dir = pathlib.Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    with running_postgres(data_dir) as postgres, running_pgbouncer(data_dir, postgres) as bouncer:
        env = {
            **os.environ,
            "ENVIRONMENT": "production",
            "SECRET_KEY": secrets.token_urlsafe(48),
            "MIGRATIONS_DATABASE_URL": postgres.url(DATABASE),
            "DATABASE_URL": bouncer.url(DATABASE),
        }
        prepare_database(postgres, env)
        os.environ.update(ENVIRONMENT="production", SECRET_KEY=env["SECRET_KEY"])
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main(bouncer.url(DATABASE), args.pool_mode, args.requests, args.rounds))


if __name__ == "__main__":
    run()
