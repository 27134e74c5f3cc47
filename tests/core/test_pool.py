"""The app-side pool serves waiting requests in order of arrival, against real PostgreSQL."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.log import InstanceLogger
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn
from sqlalchemy.util.queue import Empty

from api.core.db import build_engine
from api.core.pool import FifoQueue, FifoQueuePool
from tests.support.app import settings_for_tests
from tests.support.database import Database, admin_execute


@pytest.fixture
async def engine(database: Database) -> AsyncIterator[AsyncEngine]:
    """An engine whose pool holds one connection, and gives up waiting for it after 0.5 s."""
    settings = settings_for_tests(
        database_url=database.url, db_pool_size=1, db_max_overflow=0, db_pool_timeout=0.5
    )
    engine = build_engine(settings)
    yield engine
    await engine.dispose()


async def checkout(engine: AsyncEngine) -> PoolProxiedConnection:
    return await greenlet_spawn(engine.sync_engine.pool.connect)


async def waiting(queue: FifoQueue[object], count: int) -> None:
    """Until `count` checkouts wait in `queue` (polled every 5 ms, for up to 5 s)."""
    for _ in range(1000):
        if len(queue._waiters) >= count:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{len(queue._waiters)} checkouts wait, not {count}")


def queue_of(engine: AsyncEngine) -> FifoQueue[object]:
    pool = engine.sync_engine.pool
    assert isinstance(pool, FifoQueuePool)
    assert isinstance(pool._pool, FifoQueue)
    return pool._pool


async def test_the_queue_pool_is_the_fifo_one_and_logs_as_sqlalchemys(engine: AsyncEngine) -> None:
    assert isinstance(engine.sync_engine.pool, FifoQueuePool)
    assert isinstance(queue_of(engine), FifoQueue)
    # At SQLAlchemy's level (WARNING), not the app's: no line per checkout at DEBUG.
    logger = engine.sync_engine.pool.logger
    name = logger.logger.name if isinstance(logger, InstanceLogger) else logger.name
    assert name == "sqlalchemy.pool.impl.AsyncAdaptedQueuePool"


async def test_a_connection_given_back_goes_to_the_longest_waiter_not_to_a_newcomer(
    engine: AsyncEngine,
) -> None:
    held = await checkout(engine)
    waiter = asyncio.create_task(checkout(engine))
    await waiting(queue_of(engine), 1)

    def give_back_and_ask_at_once() -> PoolProxiedConnection:
        # No await between the two: the newcomer asks before the waiter has woken up, which
        # is when asyncio.Queue's pool lets it take the connection.
        held.close()
        return engine.sync_engine.pool.connect()

    with pytest.raises(PoolTimeout):
        await greenlet_spawn(give_back_and_ask_at_once)
    served = await waiter
    assert served.dbapi_connection is not None
    await greenlet_spawn(served.close)


async def test_waiters_are_served_in_the_order_they_came(engine: AsyncEngine) -> None:
    """(SQLAlchemy's pool wakes them in order too: the test above is what sets this one
    apart.)"""
    held = await checkout(engine)
    served: list[int] = []

    async def take_and_give_back(number: int) -> None:
        connection = await checkout(engine)
        served.append(number)
        await greenlet_spawn(connection.close)

    tasks = []
    for number in range(5):
        tasks.append(asyncio.create_task(take_and_give_back(number)))
        await waiting(queue_of(engine), number + 1)
    await greenlet_spawn(held.close)
    await asyncio.gather(*tasks)

    assert served == [0, 1, 2, 3, 4]


async def test_a_waiter_that_gives_up_leaves_the_line_and_the_next_is_served(
    engine: AsyncEngine,
) -> None:
    held = await checkout(engine)
    impatient = asyncio.create_task(checkout(engine))
    await waiting(queue_of(engine), 1)
    patient = asyncio.create_task(checkout(engine))
    await waiting(queue_of(engine), 2)

    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    assert len(queue_of(engine)._waiters) == 1
    await greenlet_spawn(held.close)

    served = await patient
    await greenlet_spawn(served.close)
    assert queue_of(engine).qsize() == 1  # the one connection, idle, none made or lost


async def test_a_connection_handed_to_a_waiter_as_it_gives_up_goes_to_the_next() -> None:
    queue: FifoQueue[str] = FifoQueue(maxsize=2)
    first = asyncio.create_task(greenlet_spawn(queue.get, True, 5))
    second = asyncio.create_task(greenlet_spawn(queue.get, True, 5))
    await waiting(queue, 2)  # type: ignore[arg-type]

    queue.put_nowait("connection")  # handed to the first...
    first.cancel()  # ...which is cancelled before it could take it

    with pytest.raises(asyncio.CancelledError):
        await first
    assert await second == "connection"


async def test_a_wait_that_times_out_is_empty_and_leaves_nothing_behind() -> None:
    queue: FifoQueue[str] = FifoQueue(maxsize=1)

    with pytest.raises(Empty):
        await greenlet_spawn(queue.get, True, 0.05)

    assert not queue._waiters
    queue.put_nowait("connection")
    assert queue.get_nowait() == "connection"


async def test_a_connection_handed_over_as_its_waiter_gives_up_is_kept_past_a_full_queue() -> None:
    """The one idle place taken meanwhile: the connection stays, and the waiter's own
    cancellation is what it raises (not the queue's Full)."""
    queue: FifoQueue[str] = FifoQueue(maxsize=1)
    waiter = asyncio.create_task(greenlet_spawn(queue.get, True, 5))
    await waiting(queue, 1)  # type: ignore[arg-type]

    queue.put_nowait("handed")  # to the waiter...
    waiter.cancel()  # ...which gives up before it could take it
    queue.put_nowait("idle")  # nobody waits: the one idle place

    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert sorted([queue.get_nowait(), queue.get_nowait()]) == ["handed", "idle"]


@pytest.mark.parametrize(("pre_ping", "fails"), [(True, False), (False, True)])
async def test_a_connection_its_server_closed_is_replaced_before_it_is_lent(
    database: Database, pre_ping: bool, fails: bool
) -> None:
    """DB_POOL_PRE_PING on: the next checkout gets a new connection; off: the dead one."""
    settings = settings_for_tests(
        database_url=database.url, db_pool_size=1, db_max_overflow=0, db_pool_pre_ping=pre_ping
    )
    engine = build_engine(settings)
    try:
        async with engine.connect() as connection:
            pid = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        await admin_execute(database.url, f"SELECT pg_terminate_backend({pid})")
        await asyncio.sleep(0.2)  # the event loop reads the server's close, as a server's does

        async with engine.connect() as connection:
            if fails:
                with pytest.raises(DBAPIError):
                    await connection.execute(text("SELECT 1"))
            else:
                assert (
                    await connection.execute(text("SELECT pg_backend_pid()"))
                ).scalar_one() != pid
    finally:
        await engine.dispose()
