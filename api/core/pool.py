"""The app-side connection pool (`DB_POOL=queue`): SQLAlchemy's async queue pool, first come
first served.

SQLAlchemy's `AsyncAdaptedQueuePool` keeps its idle connections in an `asyncio.Queue`. A
connection given back while requests wait for one is put in the queue and the longest waiter
is woken, but any checkout that runs before that waiter does takes it first: under load the
newest requests are served and the oldest wait on, one lost race after another, for seconds
(python/cpython#83055 and MagicStack/asyncpg#1247 describe the same barging). Here a connection
given back goes straight to the longest waiter, and a checkout that finds others waiting
waits behind them, so a request's wait for a connection is the queue ahead of it and no more.

A pooled connection the server has closed (PgBouncer or PostgreSQL restarted, an idle timeout)
is replaced before it is lent (`DB_POOL_PRE_PING`, on by default). asyncpg marks a connection
closed as soon as the close reaches it, so the check costs no round trip. SQLAlchemy's own
`pool_pre_ping` asks the server instead, and through PgBouncer in transaction mode its asyncpg
dialect pings inside a transaction: BEGIN, an empty query and ROLLBACK, three round trips before
every request's one statement. Neither notices a peer that vanished without closing (a network
partition): a statement on such a connection waits for `DB_COMMAND_TIMEOUT`, and the request
answers 503.
"""

import asyncio
from collections import deque
from contextlib import suppress
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.util import await_
from sqlalchemy.util.queue import Empty, Full, QueueCommon

T = TypeVar("T")


class FifoQueue(QueueCommon[T]):
    """The pool's idle connections and its waiters, served in order of arrival. Called by the
    pool from SQLAlchemy's greenlet (`await_`), on the event loop's thread."""

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        self.maxsize = maxsize
        self.use_lifo = use_lifo
        self._items: deque[T] = deque()
        # Waiters in order of arrival; one handed an item leaves at once, one that gives up
        # (timed out, cancelled) removes itself.
        self._waiters: deque[asyncio.Future[T]] = deque()

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return 0 < self.maxsize <= len(self._items)

    def qsize(self) -> int:
        return len(self._items)

    def put_nowait(self, item: T) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # a cancelled one has not removed itself yet
                waiter.set_result(item)
                return
        if self.full():
            raise Full()
        self._items.append(item)

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        # The pool gives connections back without blocking: a full queue closes the surplus one.
        self.put_nowait(item)

    def get_nowait(self) -> T:
        if self._waiters or not self._items:
            raise Empty()
        return self._items.pop() if self.use_lifo else self._items.popleft()

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        try:
            return self.get_nowait()
        except Empty:
            if not block:
                raise
        item: T = await_(self._wait(timeout))
        return item

    async def _wait(self, seconds: float | None) -> T:
        waiter: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(seconds):
                return await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                # Handed a connection just as the wait ended (timed out, cancelled): it goes
                # to the next in line, never lost.
                self.put_nowait(waiter.result())
            else:
                waiter.cancel()
                with suppress(ValueError):  # put_nowait may have dropped it already
                    self._waiters.remove(waiter)
                while self._items and self._waiters:  # those behind it take what it left
                    self.put_nowait(self._items.popleft())
            if isinstance(exc, TimeoutError):
                raise Empty() from None
            raise


class FifoQueuePool(AsyncAdaptedQueuePool):
    """`AsyncAdaptedQueuePool` with its connections handed out in order of arrival."""

    _queue_class: Any = FifoQueue


def replace_closed_connections(engine: AsyncEngine) -> None:
    """Before the pool lends a connection, replace it if its server has closed it: the pool's
    `checkout` event, where a DisconnectionError makes the pool discard the connection and
    check out another."""

    @event.listens_for(engine.sync_engine, "checkout")
    def closed_is_replaced(
        _dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
    ) -> None:
        if record.driver_connection is None or record.driver_connection.is_closed():
            raise DisconnectionError("the server closed this pooled connection")
