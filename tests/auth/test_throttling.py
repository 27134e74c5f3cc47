"""Failed logins are counted in PostgreSQL, so the limit holds across API processes; these tests
commit (the count must survive the failed request's rollback)."""

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from api.core.db import build_engine, build_sessionmaker, use_engine
from api.core.security import password_hash
from api.main import create_app, create_first_superuser
from tests.support.app import settings_for_tests
from tests.support.client import assert_problem
from tests.support.database import Database, query

pytestmark = pytest.mark.concurrent

PASSWORD = "the-right-password"


@pytest.fixture
async def two_processes(committed: Database) -> AsyncIterator[list[FastAPI]]:
    """Two apps with engines of their own: what two API processes share is the database."""
    apps = []
    for _ in range(2):
        app = create_app(settings_for_tests(database_url=committed.url, login_max_failures=3))
        app.state.engine = build_engine(app.state.settings)
        use_engine(app, app.state.engine)
        apps.append(app)
    await query(
        committed.url,
        "INSERT INTO users (username, email, hashed_password)"
        " VALUES ('erin', 'erin@example.com', $1)",
        password_hash.hash(PASSWORD),
    )
    yield apps
    for app in apps:
        await app.state.engine.dispose()


async def attempt(app: FastAPI, password: str, username: str = "erin") -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post("/auth/token", data={"username": username, "password": password})


async def test_failures_across_processes_lock_the_account(
    two_processes: list[FastAPI], committed: Database
) -> None:
    first, second = two_processes

    assert (await attempt(first, "wrong-1")).status_code == 401
    assert (await attempt(second, "wrong-2")).status_code == 401
    assert (await attempt(first, "wrong-3")).status_code == 401

    locked = await attempt(second, PASSWORD)  # even the right password now waits
    assert_problem(locked, 429, "too_many_requests")
    assert 1 <= int(locked.headers["retry-after"]) <= 300
    rows = await query(committed.url, "SELECT key, failures, locked_until FROM login_throttles")
    assert [(r["key"], r["failures"]) for r in rows] == [("erin", 3)]
    assert rows[0]["locked_until"] is not None


async def test_a_success_before_the_limit_starts_the_count_over(
    two_processes: list[FastAPI], committed: Database
) -> None:
    first, second = two_processes

    assert (await attempt(first, "wrong-1")).status_code == 401
    assert (await attempt(second, "wrong-2")).status_code == 401
    assert (await attempt(first, PASSWORD)).status_code == 200
    assert await query(committed.url, "SELECT * FROM login_throttles") == []
    assert (await attempt(second, "wrong-3")).status_code == 401
    assert (await attempt(first, PASSWORD)).status_code == 200


async def test_unknown_accounts_are_counted_and_throttled_too(
    two_processes: list[FastAPI], committed: Database
) -> None:
    first, _ = two_processes
    for _ in range(3):
        assert (await attempt(first, "guess", username="Ghost")).status_code == 401

    assert_problem(await attempt(first, "guess", username="ghost"), 429, "too_many_requests")


async def test_guesses_sent_at_once_are_checked_no_more_than_the_limit(
    two_processes: list[FastAPI], committed: Database
) -> None:
    # Each check takes tens of milliseconds of hashing: counted only after it, all twenty
    # guesses were checked before the first failure was written.
    first, second = two_processes

    answers = await asyncio.gather(
        *(attempt((first, second)[n % 2], f"wrong-{n}") for n in range(20))
    )

    assert sorted(a.status_code for a in answers) == [401] * 3 + [429] * 17
    rows = await query(committed.url, "SELECT failures, locked_until FROM login_throttles")
    assert [r["failures"] for r in rows] == [3]
    assert rows[0]["locked_until"] is not None


async def test_failing_logins_never_wait_for_a_second_connection(committed: Database) -> None:
    # Two pooled connections and eight failing logins at once. A login that held its
    # connection through the hashing and then asked for another to count the failure left
    # every connection waiting on the pool until its timeout (an error, the failure lost).
    settings = settings_for_tests(
        database_url=committed.url,
        login_max_failures=100,
        db_pool="queue",
        db_pool_size=2,
        db_max_overflow=0,
        db_pool_timeout=2.0,
    )
    app = create_app(settings)
    app.state.engine = build_engine(settings)
    use_engine(app, app.state.engine)
    try:
        answers = await asyncio.gather(*(attempt(app, "wrong", username=f"u{n}") for n in range(8)))
    finally:
        await app.state.engine.dispose()

    assert [a.status_code for a in answers] == [401] * 8
    rows = await query(committed.url, "SELECT key, failures FROM login_throttles ORDER BY key")
    assert [(r["key"], r["failures"]) for r in rows] == [(f"u{n}", 1) for n in range(8)]


async def test_first_superuser_is_created_once_even_by_racing_processes(
    committed: Database,
) -> None:
    settings = settings_for_tests(
        database_url=committed.url,
        first_superuser_email="Root@Example.com",
        first_superuser_password="root-password",
    )
    engines = [build_engine(settings) for _ in range(3)]
    try:
        await asyncio.gather(
            *(create_first_superuser(settings, build_sessionmaker(engine)) for engine in engines)
        )
        await create_first_superuser(settings, build_sessionmaker(engines[0]))  # a restart
    finally:
        for engine in engines:
            await engine.dispose()

    rows = await query(committed.url, "SELECT username, email, is_superuser FROM users")
    assert [tuple(r) for r in rows] == [("admin", "Root@example.com", True)]  # domain normalised
