"""The one transaction boundary and the engine's life, against real PostgreSQL."""

import asyncio
import gc
import ssl
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.core.db import (
    ReadConnectionDep,
    ReadSessionDep,
    SessionDep,
    build_engine,
    get_read_connection,
    get_read_session,
    get_session,
    release_connection,
    tls_context,
    use_engine,
)
from api.core.errors import DATABASE_ERRORS, Conflict
from api.main import create_app
from api.users.models import User
from tests.support.app import api_routes, dependency_calls, settings_for_tests
from tests.support.client import assert_problem
from tests.support.database import Database, admin_execute, savepoint_sessions, scalar


def ghost() -> User:
    return User(username="ghost", email="ghost@example.com", hashed_password="not-a-hash")


@pytest.mark.concurrent
async def test_a_route_that_flushes_then_fails_leaves_nothing(
    app_on_committed: tuple[FastAPI, AsyncEngine], committed: Database
) -> None:
    app, _ = app_on_committed

    @app.post("/flush-then-fail")
    async def flush_then_fail(session: SessionDep) -> None:
        session.add(ghost())
        await session.flush()
        raise Conflict("changed my mind")

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        response = await client.post("/flush-then-fail")

    assert_problem(response, 409, "conflict")
    assert await scalar(committed.url, "SELECT count(*) FROM users") == 0


async def test_releasing_the_connection_refuses_to_commit_unflushed_changes(
    session: AsyncSession,
) -> None:
    person = ghost()
    session.add(person)

    with pytest.raises(RuntimeError, match="unflushed changes"):
        await release_connection(session)
    assert person in session.new  # not flushed, not committed


@pytest.mark.concurrent
async def test_a_successful_route_commits_before_answering(
    app_on_committed: tuple[FastAPI, AsyncEngine], committed: Database
) -> None:
    app, _ = app_on_committed
    seen_during_request: list[int] = []

    @app.post("/write")
    async def write(session: SessionDep) -> None:
        session.add(ghost())
        await session.flush()
        seen_during_request.append(await scalar(committed.url, "SELECT count(*) FROM users"))

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        response = await client.post("/write")

    assert response.status_code == 200
    assert seen_during_request == [0]  # not visible to others before the commit
    assert await scalar(committed.url, "SELECT count(*) FROM users") == 1


@pytest.mark.concurrent
async def test_a_failed_commit_is_never_a_2xx(
    app_on_committed: tuple[FastAPI, AsyncEngine], committed: Database
) -> None:
    app, _ = app_on_committed

    @app.post("/commit-fails")
    async def commit_fails(session: SessionDep) -> dict[str, bool]:
        session.add(ghost())
        await session.flush()
        pid = (await session.exec(select(func.pg_backend_pid()))).one()
        # Another connection ends this one: the route returns normally, the commit cannot.
        await admin_execute(committed.url, f"SELECT pg_terminate_backend({pid})", database=None)
        return {"ok": True}

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        response = await client.post("/commit-fails")

    # The connection went before the COMMIT: the API cannot tell whether it was made.
    assert_problem(response, 503, "outcome_unknown")
    assert await scalar(committed.url, "SELECT count(*) FROM users") == 0


@pytest.mark.concurrent
@pytest.mark.parametrize("reader", ["session", "connection"])
async def test_a_read_gives_its_connection_back_before_the_answer_is_sent(
    app_on_committed: tuple[FastAPI, AsyncEngine], reader: str
) -> None:
    """ReadSessionDep's and ReadConnectionDep's scope="function": the connection is back in the
    pool once the response is built, not after it has gone out (a keep-alive client's next
    request would otherwise find the pool short of it)."""
    app, engine = app_on_committed
    events: list[str] = []
    event.listen(engine.sync_engine, "checkin", lambda *_: events.append("checkin"))

    if reader == "session":

        @app.get("/read")
        async def read(session: ReadSessionDep) -> dict[str, int]:
            return {"one": (await session.exec(select(1))).one()}

    else:

        @app.get("/read")
        async def read_core(connection: ReadConnectionDep) -> dict[str, int]:
            return {"one": (await connection.execute(select(1))).scalar_one()}

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        async def send_and_record(message: Any) -> None:
            events.append(message["type"])
            await send(message)

        await app(scope, receive, send_and_record)

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=recording), base_url="http://test"
    ) as client:
        response = await client.get("/read")

    assert response.json() == {"one": 1}
    assert events == ["checkin", "http.response.start", "http.response.body"]


async def test_a_database_error_logs_no_row_values(
    db_connection: AsyncConnection, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither the statement's parameters nor the row PostgreSQL quotes in its message."""
    app = create_app(settings_for_tests())
    app.state.sessionmaker = savepoint_sessions(db_connection)
    secret = "s3cret-parameter-value"

    @app.post("/not-null")
    async def not_null(session: SessionDep) -> None:
        connection = await session.connection()
        await connection.execute(text("INSERT INTO users (username) VALUES (:u)"), {"u": secret})

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post("/not-null")

    assert_problem(response, 500, "internal_error")
    assert secret not in response.text
    assert "NotNullViolationError sqlstate=23502" in caplog.text  # logged, identified...
    assert secret not in caplog.text  # ...without the values


async def test_an_exhausted_pool_is_a_prompt_503(database: Database) -> None:
    settings = settings_for_tests(
        database_url=database.url, db_pool_size=1, db_max_overflow=0, db_pool_timeout=0.3
    )
    app = create_app(settings)
    engine = build_engine(settings)
    use_engine(app, engine)
    try:
        transport = httpx.ASGITransport(app=app)
        async with (
            engine.connect(),  # the only connection, held
            httpx.AsyncClient(transport=transport, base_url="http://test") as client,
        ):
            response = await client.post(
                "/users/", json={"username": "abc", "email": "a@b.co", "password": "x" * 10}
            )
    finally:
        await engine.dispose()

    assert_problem(response, 503, "database_unavailable")


async def test_lifespan_builds_the_engine_and_disposes_it(database: Database) -> None:
    app = create_app(settings_for_tests(database_url=database.url, db_pool="queue"))
    collector = (gc.get_freeze_count(), gc.get_threshold())

    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/health/ready")).status_code == 200
        engine = app.state.sessionmaker.kw["bind"]
        assert engine.pool.checkedin() == 1
        # The process's tuning is the launch's (api/launch.py), not the app's.
        assert (gc.get_freeze_count(), gc.get_threshold()) == collector

    assert engine.pool.checkedin() == 0


@pytest.mark.concurrent
def utility_statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The first word of each statement asyncpg's `Connection.execute` sends from now on:
    BEGIN, COMMIT, ROLLBACK and the like (queries with parameters go another way)."""
    sent: list[str] = []
    execute = asyncpg.Connection.execute

    async def spy(self: asyncpg.Connection, query: str, *args: Any, **kwargs: Any) -> Any:
        sent.append(query.split()[0].rstrip(";").upper())
        return await execute(self, query, *args, **kwargs)

    monkeypatch.setattr(asyncpg.Connection, "execute", spy)
    return sent


@pytest.mark.parametrize("pool", ["null", "queue"])
async def test_a_one_statement_read_sends_no_begin_and_no_commit(
    app_on_committed: tuple[FastAPI, AsyncEngine],
    committed: Database,
    monkeypatch: pytest.MonkeyPatch,
    pool: str,
) -> None:
    """GET /products/{id} reads through ReadConnectionDep, in autocommit; GET /posts/ (which looks
    the caller up through SessionDep) still runs in a transaction, which shows that the spy sees
    them. On NullPool, the production default, and on the queue pool with its pre-ping on,
    which asks the server nothing (SQLAlchemy's would send BEGIN, `;` and ROLLBACK)."""
    app, _ = app_on_committed
    settings = app.state.settings.model_copy(update={"db_pool": pool, "db_pool_pre_ping": True})
    engine = build_engine(settings)
    use_engine(app, engine)
    product_id = await scalar(
        committed.url,
        "INSERT INTO products (name, slug, price, sku, stock_quantity, is_active)"
        " VALUES ('Lamp', 'lamp', 12.50, 'LAMP-1', 3, true) RETURNING id",
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        # The engine's first connection runs the dialect's own queries in a transaction.
        assert (await client.get(f"/products/{product_id}")).status_code == 200
        sent = utility_statements(monkeypatch)
        one = await client.get(f"/products/{product_id}")
        assert one.status_code == 200, one.text
        assert one.json()["sku"] == "LAMP-1"
        assert sent == []
        page = await client.get("/posts/")
        assert page.status_code == 200, page.text
        assert sent == ["BEGIN", "COMMIT"]
    await engine.dispose()


async def test_core_pages_by_number_and_by_cursor_send_no_begin_and_hold_no_connection(
    app_on_committed: tuple[FastAPI, AsyncEngine],
    committed: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GET /products/ reads its pages on ReadConnectionDep's autocommit connection (by cursor
    through a session bound to it): no BEGIN or COMMIT either way, and every
    connection given back. On NullPool, the production default (a queue pool's pre-ping
    adds a BEGIN/ROLLBACK)."""
    app, _ = app_on_committed
    engine = build_engine(app.state.settings.model_copy(update={"db_pool": "null"}))
    use_engine(app, engine)
    pool: list[str] = []
    event.listen(engine.sync_engine, "checkout", lambda *_: pool.append("checkout"))
    event.listen(engine.sync_engine, "checkin", lambda *_: pool.append("checkin"))
    for n in (1, 2, 3):
        await scalar(
            committed.url,
            "INSERT INTO products (name, slug, price, sku, stock_quantity, is_active)"
            f" VALUES ('Lamp {n}', 'lamp-{n}', 12.50, 'LAMP-{n}', 3, true) RETURNING id",
        )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        assert (await client.get("/products/?size=1")).status_code == 200  # the dialect's start
        sent = utility_statements(monkeypatch)
        first = await client.get("/products/?size=2")
        assert first.status_code == 200, first.text
        second = await client.get(
            "/products/", params={"size": 2, "cursor": first.json()["next_cursor"]}
        )
        assert second.status_code == 200, second.text

    assert [item["sku"] for item in first.json()["items"]] == ["LAMP-1", "LAMP-2"]
    assert first.json()["total"] == 3
    assert [item["sku"] for item in second.json()["items"]] == ["LAMP-3"]
    assert second.json()["next_cursor"] is None
    assert sent == []
    assert pool == ["checkout", "checkin"] * 3
    await engine.dispose()


SSL_REQUEST = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")


async def first_bytes_sent(settings_overrides: dict[str, Any]) -> bytes:
    """The first 8 bytes the engine sends to a server that answers nothing and hangs up."""
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def listen(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not received.done():
            received.set_result(await reader.read(8))
        writer.close()

    server = await asyncio.start_server(listen, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = settings_for_tests(
        database_url=f"postgresql+asyncpg://postgres:x@127.0.0.1:{port}/db",
        db_connect_timeout=2,
        **settings_overrides,
    )
    engine = build_engine(settings)
    try:
        with pytest.raises(DATABASE_ERRORS):  # the fake server hangs up
            async with engine.connect():
                pass
        return await asyncio.wait_for(received, 5)
    finally:
        await engine.dispose()
        server.close()
        await server.wait_closed()


async def test_tls_is_off_by_default_so_no_ssl_request_is_sent() -> None:
    assert settings_for_tests().db_tls == "disable"
    assert await first_bytes_sent({}) != SSL_REQUEST


async def test_tls_require_asks_for_tls_first() -> None:
    assert await first_bytes_sent({"db_tls": "require"}) == SSL_REQUEST


def test_the_tls_context_is_built_once_per_setting() -> None:
    assert tls_context(settings_for_tests()) is False
    required = tls_context(settings_for_tests(db_tls="require"))
    assert isinstance(required, ssl.SSLContext)
    assert (required.verify_mode, required.check_hostname) == (ssl.CERT_NONE, False)
    verified = tls_context(settings_for_tests(db_tls="verify-full"))
    assert isinstance(verified, ssl.SSLContext)
    assert (verified.verify_mode, verified.check_hostname) == (ssl.CERT_REQUIRED, True)


async def test_tls_required_from_a_server_without_it_is_a_503(database: Database) -> None:
    app = create_app(settings_for_tests(database_url=database.url, db_tls="require"))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/health/ready")

    assert_problem(response, 503, "database_unavailable")


def test_read_sessions_serve_only_reads_that_need_no_other_session() -> None:
    """ReadSessionDep and ReadConnectionDep (autocommit) only on GET routes, and never next to
    SessionDep: the
    current user's lookup takes SessionDep, and two sessions would be two connections."""
    app = create_app(settings_for_tests())
    routes = list(api_routes(app.routes))
    operations = sum(len(item) for item in app.openapi()["paths"].values())
    documented = [route for route in routes if route.include_in_schema]  # not /metrics
    assert sum(len(route.methods or ()) for route in documented) == operations  # none missed
    readers = []
    for route in routes:
        calls = dependency_calls(route.dependant)
        if {get_read_session, get_read_connection} & calls:
            readers.append(route.path)
            assert route.methods == {"GET"}, route.path
            assert get_session not in calls, route.path
    assert {"/products/{product_id}", "/products/", "/categories/{category_id}/products"} <= set(
        readers
    )
