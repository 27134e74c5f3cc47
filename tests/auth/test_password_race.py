"""Two password changes at once, with the same current password: through uvicorn and PgBouncer."""

import asyncio

import httpx
import pytest

from api.core.security import password_hash
from tests.support.database import Database, query

pytestmark = [pytest.mark.concurrent, pytest.mark.pgbouncer]

OLD = "the-old-password"


async def test_two_changes_at_once_never_both_succeed(
    live_server: str, committed: Database
) -> None:
    await query(
        committed.url,
        "INSERT INTO users (username, email, hashed_password)"
        " VALUES ('fay', 'fay@example.com', $1)",
        password_hash.hash(OLD),
    )
    async with httpx.AsyncClient(base_url=live_server, timeout=60) as client:
        login = await client.post("/auth/token", data={"username": "fay", "password": OLD})
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        # Both check the same current password, each hashing for tens of milliseconds before
        # it writes: without a compare-and-set both were 204 and the last write won unseen.
        current = OLD
        for attempt in range(3):
            news = [f"new-password-{attempt}-a", f"new-password-{attempt}-b"]
            answers = await asyncio.gather(
                *(
                    client.post(
                        "/users/me/password",
                        json={"current_password": current, "new_password": new},
                        headers=headers,
                    )
                    for new in news
                )
            )
            statuses = sorted(a.status_code for a in answers)
            # The loser is refused: by the compare-and-set (409), by the current password the
            # winner replaced (400), or by its token, which the winner's change ended (401).
            assert statuses in ([204, 400], [204, 401], [204, 409]), [a.text for a in answers]
            won = news[[a.status_code for a in answers].index(204)]
            lost = news[1 - news.index(won)]
            signed_in = await client.post("/auth/token", data={"username": "fay", "password": won})
            assert signed_in.status_code == 200
            # The change ended the token the attempt was made with: the next uses a fresh one.
            headers = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
            refused = await client.post("/auth/token", data={"username": "fay", "password": lost})
            assert refused.status_code == 401
            current = won
