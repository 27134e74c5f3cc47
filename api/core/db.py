"""The one engine/session module: engine construction, the request's session, unique-violation
handling.

Behind PgBouncer in transaction mode (`DB_POOL=null`) the app keeps no connections of its own
(NullPool). Whether asyncpg may keep prepared statements (`DB_STATEMENT_CACHE`) depends on the
PgBouncer:

- 1.18 (Debian 12; `DB_STATEMENT_CACHE=false`) hands each transaction to any server connection,
  so a named statement prepared on one would be missing (or already exist) on the next. With
  `statement_cache_size=0` asyncpg uses the unnamed statement and leaves nothing behind on the
  server (tests/core/test_pgbouncer.py shows both).
- 1.21 and later with `max_prepared_statements` > 0 (`DB_STATEMENT_CACHE=true`; what compose.yaml
  and deploy/k8s run) track protocol-level prepared statements per client and prepare them on
  whichever server connection runs them, so asyncpg keeps its statement cache: a statement
  repeated on one connection is parsed and planned once.

A small app-side pool in front of PgBouncer (`DB_POOL=queue`) follows the same rule. It is safe in
transaction mode because nothing crosses a transaction: the app sets no session state, and named
statements only exist where PgBouncer tracks them. It hands its connections out in order of
arrival (api/core/pool.py).
"""

import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import cache
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Request
from sqlalchemy import ColumnElement, Row, Select, bindparam, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select as sql_select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool
from sqlmodel import SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from api.core import metrics
from api.core.config import Settings
from api.core.errors import (
    FOREIGN_KEY_VIOLATION,
    RESTRICT_VIOLATION,
    UNIQUE_VIOLATION,
    AlreadyExists,
    AppError,
    FieldError,
    InUse,
    InvalidReference,
    NotFound,
    OutcomeUnknown,
    is_connection_error,
    violated_constraint,
)
from api.core.pool import FifoQueuePool, replace_closed_connections
from api.core.replica import Replica


def tls_context(settings: Settings) -> ssl.SSLContext | bool:
    """What asyncpg's `ssl` gets: False, or one context for every connection (asyncpg would
    otherwise build one, loading certificates, on each connect)."""
    if settings.db_tls == "disable":
        return False
    context = ssl.create_default_context(cafile=settings.db_tls_ca_file)
    if settings.db_tls == "require":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def connect_args(settings: Settings) -> dict[str, Any]:
    """asyncpg's connect arguments: the engine's, and make bench's bare handler's."""
    arguments: dict[str, Any] = {
        "timeout": settings.db_connect_timeout,
        "command_timeout": settings.db_command_timeout,
        "ssl": tls_context(settings),
        # Spelled as the server reports it: asyncpg's own 'utf-8' differs, and PgBouncer then
        # prefixes every transaction with SET client_encoding.
        "server_settings": {"client_encoding": "UTF8"},
    }
    if not settings.db_statement_cache:
        arguments["statement_cache_size"] = 0
    return arguments


def build_engine(
    settings: Settings, url: str | None = None, *, database: str = "primary"
) -> AsyncEngine:
    """The engine of `url` (DATABASE_URL by default); `database` names it in the metrics."""
    pool: dict[str, Any]
    if settings.db_pool == "null":
        pool = {"poolclass": NullPool}
    else:
        pool = {
            "poolclass": FifoQueuePool,
            "pool_size": settings.db_pool_size,
            "max_overflow": settings.db_max_overflow,
            "pool_timeout": settings.db_pool_timeout,
            "pool_recycle": 1800,
        }
    if settings.metrics_enabled and settings.db_pool == "queue":
        # A wait for the app's pool is timed; on NullPool every checkout is a connect, which
        # time_connects times.
        pool["poolclass"] = metrics.timed_pool(pool["poolclass"], database)
    engine = create_async_engine(
        url or settings.database_url,
        echo=settings.db_echo,
        # Statement parameters (password hashes, emails) never reach an error message or a log.
        hide_parameters=True,
        connect_args=connect_args(settings),
        **pool,
    )
    if settings.metrics_enabled:
        metrics.time_connects(engine, database)
    if settings.db_pool == "queue" and settings.db_pool_pre_ping:
        replace_closed_connections(engine)
    return engine


def build_sessionmaker(
    engine: AsyncEngine, *, autocommit: bool = False
) -> async_sessionmaker[AsyncSession]:
    """Sessions on `engine`; `autocommit=True` for ReadSessionDep's (no BEGIN, no COMMIT)."""
    bind = engine.execution_options(isolation_level="AUTOCOMMIT") if autocommit else engine
    return async_sessionmaker(bind, class_=AsyncSession, expire_on_commit=False)


def build_replica(settings: Settings) -> Replica | None:
    """The read replica of DATABASE_READ_URL (None without one): an engine with the same pool
    and statement cache settings as the primary's, and autocommit sessions, as ReadSessionDep's
    on the primary."""
    if settings.database_read_url is None:
        return None
    engine = build_engine(settings, url=settings.database_read_url, database="replica")
    return Replica(
        engine,
        build_sessionmaker(engine, autocommit=True),
        max_lag=settings.db_read_max_lag,
        interval=settings.db_read_check_interval,
    )


def use_engine(app: FastAPI, engine: AsyncEngine, replica: Replica | None = None) -> None:
    """The app's requests get their sessions and connections from `engine`: SessionDep's,
    ReadSessionDep's and ReadConnectionDep's; with a `replica`, the read ones of anonymous
    requests from it while it is usable."""
    app.state.sessionmaker = build_sessionmaker(engine)
    app.state.read_sessionmaker = build_sessionmaker(engine, autocommit=True)
    app.state.read_connection = app.state.read_sessionmaker.kw["bind"].connect
    app.state.replica = replica


# Methods that change nothing: a commit of theirs that fails has nothing to lose.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's transaction: committed before the response is sent, rolled back on error.
    A change whose COMMIT loses its connection or times out may have been made or not: that is
    `outcome_unknown`, not the `database_unavailable` of a change that certainly was not."""
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        try:
            await session.commit()
        except BaseException as exc:
            await session.rollback()
            if request.method not in SAFE_METHODS and is_connection_error(exc):
                raise OutcomeUnknown() from exc
            raise


# scope="function": the commit runs when the route returns, before the response goes out,
# so a failed commit becomes an error answer instead of following a 2xx.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


def _replica_for(request: Request) -> Replica | None:
    """The replica a read request goes to: one that is usable, for a request without an
    Authorization header (ReadSessionDep's docstring says why); else None, the primary."""
    replica: Replica | None = getattr(request.app.state, "replica", None)
    if replica is not None and replica.usable and "authorization" not in request.headers:
        return replica
    return None


async def get_read_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The session of a route that only reads, in autocommit: the driver sends no BEGIN before
    its statements and no COMMIT after them, two round trips of the four a single-row read made
    (docs/benchmarks.md). The route loses nothing: at
    READ COMMITTED, PostgreSQL's default and ours, each statement of a transaction takes its own
    snapshot anyway. Not for a route that writes or locks, nor for one that also depends on
    SessionDep (the current user's lookup does): two sessions would be two connections.

    With a read replica (DATABASE_READ_URL) an anonymous request, one without an Authorization
    header, reads from it while it is usable (api/core/replica.py). A request with the header
    reads from the primary, so a client that has logged in always reads its own writes. The
    header's presence decides, not its validity: these routes do not read who calls, so a bad
    token is ignored here as it always was (a route that reads the caller, OptionalUser,
    answers it with a 401). A replica that cannot be reached sends the read to the primary."""
    replica = _replica_for(request)
    session = None if replica is None else await replica.open_session()
    if session is None:
        sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.read_sessionmaker
        session = sessionmaker()
    async with session:
        yield session


# scope="function": the session closes, and its connection goes back to the pool, once the
# response is built (the rows serialized), before it is sent. With the default it would close
# after the send, and the next request on a keep-alive connection could find the pool still
# short of that connection and queue for one: the tail latency of a pooled app under load.
ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session, scope="function")]


async def get_read_connection(request: Request) -> AsyncIterator[AsyncConnection]:
    """The connection of a route that reads flat rows with SQLAlchemy Core (no ORM session:
    docs/design.md, "Two styles of query"): autocommit as ReadSessionDep's session, and from
    the replica on the same terms."""
    replica = _replica_for(request)
    connection = None if replica is None else await replica.connect()
    if connection is None:
        async with request.app.state.read_connection() as connection:
            yield connection
        return
    try:
        yield connection
    finally:
        await connection.close()


# scope="function": closed once the answer is built, as ReadSessionDep's session.
ReadConnectionDep = Annotated[AsyncConnection, Depends(get_read_connection, scope="function")]


async def release_connection(session: AsyncSession) -> None:
    """End the request's transaction, which has only read so far (the caller's user), and
    give its connection back (closed on NullPool): for slow work that needs no database,
    such as hashing passwords (argon2, tens of milliseconds each). Held through it, the
    connection is a PgBouncer server connection idle in a transaction, which no other client
    can use. The session's next statement opens a new transaction, at the price of a COMMIT
    and a BEGIN (and on NullPool a second connect). The one commit a service makes: refused
    when the session holds changes (a statement already sent, an UPDATE say, cannot be seen
    here: call it before any)."""
    if session.new or session.dirty or session.deleted:
        raise RuntimeError("release_connection would commit unflushed changes")
    if session.in_nested_transaction():
        # The work of a request with an Idempotency-Key, in its savepoint: committing would
        # free the key's lock and write the work apart from its stored answer. The connection
        # is held through the slow work instead.
        return
    await session.commit()


@asynccontextmanager
async def constraint_errors(
    session: AsyncSession,
    *,
    unique: Mapping[str, str] | None = None,
    references: Mapping[str, str] | None = None,
    in_use: str | None = None,
) -> AsyncIterator[None]:
    """Flush the block's changes and let the database's constraints decide: a broken unique
    constraint is a 409 naming its field, a foreign key to a missing row a 422 naming its field,
    a delete that a RESTRICT foreign key refuses a 409 saying what still refers to the row. No
    check-then-write race. `unique` and `references` go from constraint name to field name;
    `in_use` is the message of a refused delete, for a block that only deletes: the package
    whose row it is does not know the names of the keys other packages point at it.

    No savepoint: the answer ends the request, whose transaction is rolled back, so nothing has
    to stay usable after the error (a savepoint cost every create and delete two statements, the
    SAVEPOINT and its RELEASE). A block whose error the request survives needs one of its own.
    """
    async with constraint_answers(unique=unique, references=references, in_use=in_use):
        yield
        await session.flush()


@asynccontextmanager
async def constraint_answers(
    *,
    unique: Mapping[str, str] | None = None,
    references: Mapping[str, str] | None = None,
    in_use: str | None = None,
) -> AsyncIterator[None]:
    """`constraint_errors` without its flush, for a block whose statements run as they are sent
    (an UPDATE ... RETURNING): a broken constraint the maps name is raised as its answer, any
    other as it came."""
    try:
        yield
    except IntegrityError as exc:
        error = constraint_error(exc, unique=unique, references=references, in_use=in_use)
        if error is None:
            raise
        raise error from exc


def constraint_error(
    exc: IntegrityError,
    *,
    unique: Mapping[str, str] | None = None,
    references: Mapping[str, str] | None = None,
    in_use: str | None = None,
) -> AppError | None:
    """The answer for a broken constraint named in the maps (see `constraint_errors`), or None
    for one they do not name."""
    sqlstate, constraint = violated_constraint(exc)
    unique, references = unique or {}, references or {}
    if sqlstate == UNIQUE_VIOLATION and constraint in unique:
        field = unique[constraint or ""]
        return AlreadyExists(
            f"{field} is already taken.",
            errors=[FieldError(field=field, message="already taken")],
        )
    if sqlstate == FOREIGN_KEY_VIOLATION and constraint in references:
        field = references[constraint or ""]
        return InvalidReference(
            f"{field} does not name an existing row.",
            errors=[FieldError(field=field, message="does not exist")],
        )
    if sqlstate in (RESTRICT_VIOLATION, FOREIGN_KEY_VIOLATION) and in_use is not None:
        return InUse(in_use)
    return None


M = TypeVar("M", bound=SQLModel)


@cache
def _by_key(model: type[M]) -> SelectOfScalar[M]:
    (primary_key,) = sa_inspect(model).primary_key
    return select(model).where(primary_key == bindparam("key"))


async def get_by_key(session: AsyncSession, model: type[M], key: Any) -> M | None:
    """The row of `model` with primary key `key`, or None. What `session.get` does for a row
    not yet in the session, by a statement built once per model: SQLAlchemy computes a
    statement's cache key once per statement object, and `session.get` builds a new one per
    call. A row the session already holds (the current user, looked up again by id) is
    `session.get`'s: no statement."""
    if sa_inspect(model).identity_key_from_primary_key((key,)) in session.identity_map:
        return await session.get(model, key)
    return (await session.exec(_by_key(model), params={"key": key})).one_or_none()


@cache
def columns_where(model: type[SQLModel], field: str | None = None) -> Select[Any]:
    """A Core select of `model`'s table's columns, of the row whose `field` (the primary key
    by default) is the bind parameter `value`: built once, so SQLAlchemy computes its cache
    key once."""
    table = model.__table__  # type: ignore[attr-defined]
    if field is None:
        (column,) = table.primary_key
    else:
        column = table.c[field]
    return sql_select(*table.c).where(column == bindparam("value"))


async def read_or_404(connection: AsyncConnection, model: type[SQLModel], key: int) -> Row[Any]:
    """The row of `model`'s table with primary key `key`, as a Core row of its columns, or a
    404 naming the resource and the id."""
    row: Row[Any] | None = (
        await connection.execute(columns_where(model), {"value": key})
    ).one_or_none()
    if row is None:
        raise NotFound(model.__name__, key)
    return row


async def get_or_404(session: AsyncSession, model: type[M], key: int) -> M:
    """The row of `model` with primary key `key`, or a 404 naming the resource and the id."""
    row = await get_by_key(session, model, key)
    if row is None:
        raise NotFound(model.__name__, key)
    return row


async def update_or_404(
    session: AsyncSession,
    model: type[M],
    key: int,
    changes: Mapping[str, Any],
    *,
    where: ColumnElement[bool] | None = None,
    unique: Mapping[str, str] | None = None,
    references: Mapping[str, str] | None = None,
) -> M:
    """The row of `model` with primary key `key` after `changes`, in one UPDATE ... RETURNING
    (no read before it, no savepoint around it), or a 404 naming the resource and the id. A
    broken constraint is the answer `constraint_errors` gives; it ends the request, whose
    transaction is rolled back, so nothing has to stay usable after it. No changes: the row as
    it is, and its `updated_at` untouched. `where`: a row it excludes (another author's) is a
    404 too.
    """
    if not changes and where is None:
        return await get_or_404(session, model, key)
    (primary_key,) = sa_inspect(model).primary_key
    criteria = [primary_key == key] if where is None else [primary_key == key, where]
    row: M | None
    if not changes:
        row = (await session.exec(select(model).where(*criteria))).one_or_none()
    else:
        # populate_existing: a row the session already holds (the current user) takes every
        # value the UPDATE returns, not only those SQLAlchemy could not work out (updated_at).
        statement = (
            update(model)
            .where(*criteria)
            .values(changes)
            .returning(model)
            .execution_options(populate_existing=True)
        )
        async with constraint_answers(unique=unique, references=references):
            row = (await session.exec(statement)).scalars().one_or_none()
    if row is None:
        raise NotFound(model.__name__, key)
    return row
