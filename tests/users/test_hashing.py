"""Password hashing holds no database connection. A request that hashed with its transaction
open kept a connection (through PgBouncer, a server connection idle in a transaction) for the
25-60 ms of each argon2 hash, and a bulk create for up to 100 of them."""

from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from api.auth import service as auth_service
from api.core.security import password_hash
from api.users import service as users_service
from api.users.models import User
from tests.support.client import client_for
from tests.support.database import Database, query, scalar

pytestmark = pytest.mark.concurrent

OLD = "the-old-password"


def count_connections_during(
    monkeypatch: pytest.MonkeyPatch, engine: AsyncEngine, module: ModuleType, name: str
) -> list[int]:
    """Replace `module.name` (a hashing coroutine) with one that first notes how many of the
    pool's connections are checked out; the list of those counts, one per call."""
    pool = engine.sync_engine.pool
    assert isinstance(pool, QueuePool)
    held: list[int] = []
    original: Callable[..., Awaitable[Any]] = getattr(module, name)

    async def counting(*args: Any) -> Any:
        held.append(pool.checkedout())
        return await original(*args)

    monkeypatch.setattr(module, name, counting)
    return held


async def insert_user(database_url: str, username: str, *, superuser: bool = False) -> User:
    """The user as written, its hash included: a token is issued under that password."""
    hashed = password_hash.hash(OLD)
    user_id = await scalar(
        database_url,
        "INSERT INTO users (username, email, hashed_password, is_superuser)"
        " VALUES ($1, $2, $3, $4) RETURNING id",
        username,
        f"{username}@example.com",
        hashed,
        superuser,
    )
    return User(
        id=user_id, username=username, email=f"{username}@example.com", hashed_password=hashed
    )


async def test_changing_a_password_hashes_with_no_connection_held(
    app_on_committed: tuple[FastAPI, AsyncEngine],
    committed: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, engine = app_on_committed
    verified = count_connections_during(monkeypatch, engine, auth_service, "verify_password")
    hashed = count_connections_during(monkeypatch, engine, auth_service, "hash_password")
    fay = await insert_user(committed.url, "fay")

    async with client_for(app, fay) as client:
        response = await client.post(
            "/users/me/password",
            json={"current_password": OLD, "new_password": "the-new-password"},
        )

    assert response.status_code == 204, response.text
    assert (verified, hashed) == ([0], [0])
    stored = await scalar(committed.url, "SELECT hashed_password FROM users WHERE id = $1", fay.id)
    assert password_hash.verify("the-new-password", stored)


async def test_creating_users_in_bulk_hashes_with_no_connection_held(
    app_on_committed: tuple[FastAPI, AsyncEngine],
    committed: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, engine = app_on_committed
    hashed = count_connections_during(monkeypatch, engine, users_service, "hash_password")
    boss = await insert_user(committed.url, "boss", superuser=True)
    users = [
        {"username": f"new_{n}", "email": f"new{n}@example.com", "password": f"password-{n}"}
        for n in range(3)
    ]

    async with client_for(app, boss) as client:
        response = await client.post("/users/bulk", json=users)

    assert response.status_code == 201, response.text
    assert hashed == [0, 0, 0]
    rows = await query(committed.url, "SELECT username FROM users WHERE username LIKE 'new%'")
    assert sorted(r["username"] for r in rows) == ["new_0", "new_1", "new_2"]
