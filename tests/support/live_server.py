"""A real server for the tests that commit: a superuser written straight to its database and
logged in through it."""

import httpx

from api.core.security import password_hash
from tests.support.client import log_in
from tests.support.database import query

ADMIN_PASSWORD = "admin-password-for-tests"


async def live_admin(client: httpx.AsyncClient, database_url: str) -> dict[str, str]:
    """A superuser written straight to the database, logged in through the live server."""
    await query(
        database_url,
        "INSERT INTO users (username, email, hashed_password, is_superuser)"
        " VALUES ('boss', 'boss@example.com', $1, true)",
        password_hash.hash(ADMIN_PASSWORD),
    )
    return await log_in(client, "boss", ADMIN_PASSWORD)
