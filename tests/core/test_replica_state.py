"""The read replica's state, on the suite's database standing in for a replica (the routing on
a real streaming replica is tests/replica/): what a failed connect on a request means."""

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from api.core.db import build_replica
from api.core.replica import Replica, ReplicaState
from tests.support.app import settings_for_tests
from tests.support.database import Database


@pytest.fixture
async def replica(database: Database) -> AsyncIterator[Replica]:
    """A replica with a pool of one connection, checked and found usable."""
    settings = settings_for_tests(
        database_read_url=database.url,
        db_pool="queue",
        db_pool_size=1,
        db_max_overflow=0,
        db_pool_timeout=0.2,
    )
    found = build_replica(settings)
    assert found is not None
    found.state = ReplicaState("ok", 0.0, datetime.now(UTC))
    yield found
    await found.engine.dispose()


async def test_a_busy_pool_sends_that_read_to_the_primary_and_the_replica_stays_usable(
    replica: Replica,
) -> None:
    async with replica.engine.connect():  # the pool's one connection, taken
        assert await replica.open_session() is None

    assert replica.usable
    session = await replica.open_session()
    assert session is not None
    await session.close()


async def test_an_unreachable_replica_is_said_once(
    replica: Replica, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="api.core.replica"):
        for _ in range(3):
            replica.mark_down(ConnectionRefusedError())

    assert replica.state.status == "down"
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
