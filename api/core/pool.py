"""The app-side connection pool (`DB_POOL=queue`): SQLAlchemy's async queue pool, first come
first served.

SQLAlchemy's `AsyncAdaptedQueuePool` keeps its idle connections in an `asyncio.Queue`. A
connection given back while requests wait for one is put in the queue and the longest waiter
is woken, but any checkout that runs before that waiter does takes it first: under load the
newest requests are served and the oldest wait on, one lost race after another, for seconds
(python/cpython#83055 and MagicStack/asyncpg#1247 describe the same barging). Here a connection
given back goes straight to the longest waiter, and a checkout that finds others waiting for
an idle connection does not take one ahead of them, so a request's wait for a connection is the
queue ahead of it and no more. (With room to grow, `DB_MAX_OVERFLOW`, a checkout opens a new
connection instead of waiting, as SQLAlchemy's does.)

A pooled connection the server has closed (PgBouncer or PostgreSQL restarted, an idle timeout)
is replaced before it is lent (`DB_POOL_PRE_PING`, on by default). asyncpg marks a connection
closed once the event loop has read the server's close, so the check costs no round trip; a
checkout in the very turn the close arrives still gets the dead connection, and its request
fails as without the check. SQLAlchemy's own
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
        if self._hand_over(item):
            return
        if self.full():
            raise Full()
        self._items.append(item)

    def _hand_over(self, item: T) -> bool:
        """Give `item` to the longest waiter still waiting, if there is one."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # a cancelled one has not removed itself yet
                waiter.set_result(item)
                return True
        return False

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
                # to the next in line, or back among the idle ones even past `maxsize` (the
                # next one given back to a full queue is closed), never lost.
                item = waiter.result()
                if not self._hand_over(item):
                    self._items.append(item)
            else:
                waiter.cancel()
                with suppress(ValueError):  # put_nowait may have dropped it already
                    self._waiters.remove(waiter)
                # Those behind it take what it left; what no one waits for stays idle.
                while self._items and self._hand_over(self._items[0]):
                    self._items.popleft()
            if isinstance(exc, TimeoutError):
                raise Empty() from None
            raise


class FifoQueuePool(AsyncAdaptedQueuePool):
    """`AsyncAdaptedQueuePool` with its connections handed out in order of arrival; its log
    lines under SQLAlchemy's name for that pool, so at SQLAlchemy's level (WARNING)."""

    _queue_class: type[QueueCommon[ConnectionPoolEntry]] = FifoQueue
    _sqla_logger_namespace = "sqlalchemy.pool.impl.AsyncAdaptedQueuePool"


def replace_closed_connections(engine: AsyncEngine) -> None:
    """Before the pool lends a connection, replace it if its server has closed it: the pool's
    `checkout` event, where a DisconnectionError makes the pool invalidate the connection and
    connect its entry again (a connect that fails fails the checkout)."""

    @event.listens_for(engine.sync_engine, "checkout")
    def closed_is_replaced(
        _dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
    ) -> None:
        if record.driver_connection is None or record.driver_connection.is_closed():
            raise DisconnectionError("the server closed this pooled connection")
