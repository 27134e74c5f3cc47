"""The read replica (`DATABASE_READ_URL`): its engine, its state, and the background check that
keeps the state current.

Anonymous reads of the public catalog go to the replica while it is usable (`ReadSessionDep`,
api/core/db.py); everything else, and those reads too when it is not, go to DATABASE_URL. The
replica is the same session machinery on another engine (same pool and statement cache rules).

Usable means: the last check reached it, it streams WAL from the primary (or is a primary
itself, after a failover), and its lag is within `DB_READ_MAX_LAG`. The lag is measured on the
replica, one cheap statement per `DB_READ_CHECK_INTERVAL` (never per request):

- 0 when it has replayed all the WAL it received (`pg_last_wal_replay_lsn()` at or past
  `pg_last_wal_receive_lsn()`): an idle primary sends nothing, and the replica is then as
  current as the primary, however old its last replayed transaction;
- otherwise the age of the last transaction it replayed (`now() - pg_last_xact_replay_timestamp()`,
  the primary's commit time): how long ago the data it serves was current at the latest. After a
  long idle spell this overstates the lag while the first write after it is being replayed
  (milliseconds): a check that lands then skips the replica until the next check. It errs
  towards the primary. The two clocks differ by their skew; a negative lag counts as 0.

A replica with no WAL receiver (disconnected from the primary) has an unknown lag and is skipped,
and so is one not yet checked (until the first check, at start-up).
A request that finds the replica unreachable before the check does (its connect fails) marks it
down and reads from the primary instead: no error is answered for it.
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import text
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from api.core.errors import DATABASE_ERRORS

logger = logging.getLogger(__name__)

# One round trip on the replica, readable by the app's role (pg_stat_wal_receiver shows it the
# receiver's pid, enough to know one runs). NULL LSNs (not a standby) compare as caught up.
STATE_SQL = text(
    """
    SELECT pg_is_in_recovery() AS in_recovery,
           EXISTS (SELECT FROM pg_stat_wal_receiver) AS receiving,
           CASE WHEN coalesce(pg_last_wal_replay_lsn() >= pg_last_wal_receive_lsn(), true)
                THEN 0.0
                ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8
           END AS lag_seconds
    """
)

Status = Literal["unchecked", "ok", "lagging", "down"]


@dataclass(frozen=True)
class ReplicaState:
    """What the last check (or a failed connect) found. `lag_seconds` is None when unknown."""

    status: Status
    lag_seconds: float | None = None
    checked_at: datetime | None = None


def judge(
    *, in_recovery: bool, receiving: bool, lag_seconds: float | None, max_lag: float
) -> ReplicaState:
    """The state a check's figures amount to."""
    now = datetime.now(UTC)
    if not in_recovery:  # promoted: it is a primary, current by definition
        return ReplicaState("ok", 0.0, now)
    if not receiving or lag_seconds is None:
        return ReplicaState("lagging", lag_seconds if receiving else None, now)
    lag = max(lag_seconds, 0.0)  # clocks of two machines: never a negative lag
    return ReplicaState("ok" if lag <= max_lag else "lagging", lag, now)


class Replica:
    """The replica's engine and its sessions (autocommit, as ReadSessionDep's: both made by
    api/core/db.py's `build_replica`), and its state."""

    def __init__(
        self,
        engine: AsyncEngine,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        max_lag: float,
        interval: float,
    ) -> None:
        self.engine = engine
        self.sessionmaker = sessionmaker
        self.max_lag = max_lag
        self.interval = interval
        self.state = ReplicaState("unchecked")

    @property
    def usable(self) -> bool:
        return self.state.status == "ok"

    def _set(self, state: ReplicaState) -> None:
        if state.status != self.state.status:
            logger.info(
                "read replica %s -> %s (lag %s s)",
                self.state.status,
                state.status,
                state.lag_seconds,
            )
        self.state = state

    def mark_down(self, exc: BaseException) -> None:
        """A request could not reach it: skipped until a check reaches it again. Said once,
        not by every request that finds it down."""
        if self.state.status != "down":
            logger.warning(
                "read replica unreachable (%s): reads go to the primary", type(exc).__name__
            )
        self._set(ReplicaState("down", None, datetime.now(UTC)))

    async def check(self) -> ReplicaState:
        """One check: reach the replica, read its recovery state and lag, judge them."""
        try:
            async with self.engine.connect() as connection:
                row = (await connection.execute(STATE_SQL)).one()
        except DATABASE_ERRORS as exc:
            if self.state.status != "down":
                logger.warning("read replica check failed: %s", type(exc).__name__)
            self._set(ReplicaState("down", None, datetime.now(UTC)))
            return self.state
        self._set(
            judge(
                in_recovery=row.in_recovery,
                receiving=row.receiving,
                lag_seconds=row.lag_seconds,
                max_lag=self.max_lag,
            )
        )
        return self.state

    async def open_session(self) -> AsyncSession | None:
        """A session on the replica with its connection made, or None (and the replica marked
        down) when it cannot be reached: the caller reads from the primary instead."""
        session = self.sessionmaker()
        if await self._reached(session.connection()):
            return session
        await session.close()
        return None

    async def connect(self) -> AsyncConnection | None:
        """A connection to the replica (autocommit), or None as `open_session`."""
        engine: AsyncEngine = self.sessionmaker.kw["bind"]
        connection = engine.connect()
        return connection if await self._reached(connection.start()) else None

    async def _reached(self, connecting: Awaitable[object]) -> bool:
        """Whether `connecting` got a connection; one the replica refused marks it down."""
        try:
            await connecting
        except PoolTimeout:
            # Its pool is busy (DB_POOL=queue), the replica is not down: this read alone goes to
            # the primary.
            return False
        except DATABASE_ERRORS as exc:
            self.mark_down(exc)
            return False
        return True

    async def _watch(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:  # a bug here must not end the checks, nor the app
                logger.exception("read replica check raised")
            await asyncio.sleep(self.interval)

    @asynccontextmanager
    async def watching(self) -> AsyncIterator["Replica"]:
        """The background check runs while the block does; at its end it is cancelled and
        awaited, and the engine disposed."""
        task = asyncio.create_task(self._watch(), name="read-replica-check")
        try:
            yield self
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
            await self.engine.dispose()
