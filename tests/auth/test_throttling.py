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
def limits() -> dict[str, int]:
    """The apps' throttle settings (a test may ask for others)."""
    return {"login_max_failures": 3}


@pytest.fixture
async def two_processes(
    committed: Database, limits: dict[str, int]
) -> AsyncIterator[list[FastAPI]]:
    """Two apps with engines of their own: what two API processes share is the database."""
    apps = []
    for _ in range(2):
        app = create_app(settings_for_tests(database_url=committed.url, **limits))
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


async def attempt(
    app: FastAPI, password: str, username: str = "erin", address: str = "127.0.0.1"
) -> httpx.Response:
    """A login from a client at `address` (as uvicorn resolves it, a trusted proxy's included)."""
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post("/auth/token", data={"username": username, "password": password})


async def address_rows(database: Database) -> list[dict[str, object]]:
    """The per-address counts (`address:<address> <account>`), by key."""
    rows = await query(
        database.url,
        "SELECT key, failures, locked_until, known_until FROM login_throttles"
        " WHERE key LIKE 'address:%' ORDER BY key",
    )
    return [dict(row) for row in rows]


async def test_failures_across_processes_lock_the_address_out(
    two_processes: list[FastAPI], committed: Database
) -> None:
    first, second = two_processes

    assert (await attempt(first, "wrong-1")).status_code == 401
    assert (await attempt(second, "wrong-2")).status_code == 401
    assert (await attempt(first, "wrong-3")).status_code == 401

    locked = await attempt(second, PASSWORD)  # even the right password, from there, waits
    assert_problem(locked, 429, "too_many_requests")
    assert 1 <= int(locked.headers["retry-after"]) <= 300
    rows = await address_rows(committed)
    assert [(r["key"], r["failures"]) for r in rows] == [("address:127.0.0.1 erin", 3)]
    assert rows[0]["locked_until"] is not None


async def test_a_success_before_the_limit_starts_the_count_over(
    two_processes: list[FastAPI], committed: Database
) -> None:
    first, second = two_processes

    assert (await attempt(first, "wrong-1")).status_code == 401
    assert (await attempt(second, "wrong-2")).status_code == 401
    assert (await attempt(first, PASSWORD)).status_code == 200
    [row] = await address_rows(committed)
    assert (row["failures"], row["locked_until"]) == (0, None)
    assert row["known_until"] is not None  # and the address is one erin logged in from
    assert (await attempt(second, "wrong-3")).status_code == 401
    assert (await attempt(first, PASSWORD)).status_code == 200


async def test_the_longest_name_from_the_longest_address_is_counted(
    two_processes: list[FastAPI], committed: Database
) -> None:
    """A key holds 255 characters of name and 45 of address (an IPv6 address's text; longer
    is no address, whatever a proxy forwarded)."""
    first, _ = two_processes
    name, address = "n" * 300, "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255" + "x" * 15
    assert (await attempt(first, "guess", username=name, address=address)).status_code == 401
    [row] = await address_rows(committed)
    assert row["key"] == f"address:{address[:45]} {'n' * 255}"


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
    rows = await address_rows(committed)
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
    rows = await address_rows(committed)
    assert [(r["key"], r["failures"]) for r in rows] == [
        (f"address:127.0.0.1 u{n}", 1) for n in range(8)
    ]


async def test_a_guesser_elsewhere_does_not_lock_the_owner_out(
    two_processes: list[FastAPI],
) -> None:
    first, second = two_processes
    for n in range(3):
        guess = await attempt((first, second)[n % 2], f"wrong-{n}", address="203.0.113.66")
        assert guess.status_code == 401

    assert_problem(await attempt(first, PASSWORD, address="203.0.113.66"), 429, "too_many_requests")
    assert (await attempt(second, PASSWORD, address="198.51.100.7")).status_code == 200


@pytest.mark.parametrize(
    "limits",
    [{"login_max_failures": 3, "login_account_max_failures": 4, "login_account_delay_seconds": 7}],
)
async def test_guessing_spread_over_addresses_delays_new_addresses_not_the_owners(
    two_processes: list[FastAPI], committed: Database
) -> None:
    first, second = two_processes
    assert (await attempt(first, PASSWORD, address="198.51.100.7")).status_code == 200  # erin
    for n in range(4):  # one guess from each of four addresses: the account's ceiling
        guess = await attempt((first, second)[n % 2], "wrong", address=f"203.0.113.{n}")
        assert guess.status_code == 401

    delayed = await attempt(first, PASSWORD, address="203.0.113.99")  # new: waits
    assert_problem(delayed, 429, "too_many_requests")
    assert 1 <= int(delayed.headers["retry-after"]) <= 7  # a delay, not a lockout
    assert (await attempt(second, PASSWORD, address="198.51.100.7")).status_code == 200
    [account] = await query(
        committed.url,
        "SELECT failures, locked_until FROM login_throttles WHERE key = $1",
        "account:erin",
    )
    assert account["failures"] == 4
    assert account["locked_until"] is not None


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
