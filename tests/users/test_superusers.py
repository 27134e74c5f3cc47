"""No self-lockout: a superuser cannot delete or deactivate their own account, and no pair of
requests can leave the system without an active superuser."""

import asyncio

import httpx
import pytest
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.core.security import password_hash
from api.users.models import User
from tests.support.client import assert_problem, log_in
from tests.support.database import Database, query, scalar
from tests.support.factories import make_user
from tests.support.live_server import ADMIN_PASSWORD


class TestOwnAccount:
    @pytest.mark.parametrize(
        ("method", "suffix", "body"),
        [
            ("DELETE", "", None),
            ("DELETE", "/soft", None),
            ("PATCH", "", {"is_active": False}),
            (
                "PUT",
                "",
                {"username": "root_admin", "email": "root@example.com", "is_active": False},
            ),
        ],
    )
    async def test_a_superuser_cannot_remove_their_own_account(
        self,
        admin_client: httpx.AsyncClient,
        admin: User,
        session: AsyncSession,
        method: str,
        suffix: str,
        body: dict[str, object] | None,
    ) -> None:
        response = await admin_client.request(method, f"/users/{admin.id}{suffix}", json=body)

        assert_problem(response, 409, "own_account")
        db_admin = await session.get(User, admin.id, populate_existing=True)
        assert db_admin is not None
        assert (db_admin.is_active, db_admin.is_superuser) == (True, True)

    async def test_other_changes_to_their_own_account_still_work(
        self, admin_client: httpx.AsyncClient, admin: User
    ) -> None:
        response = await admin_client.patch(
            f"/users/{admin.id}", json={"is_active": True, "bio": "Still here."}
        )

        assert response.status_code == 200
        assert response.json()["bio"] == "Still here."

    @pytest.mark.parametrize(
        ("method", "suffix", "body", "status"),
        [
            ("DELETE", "", None, 204),
            ("DELETE", "/soft", None, 200),
            ("PATCH", "", {"is_active": False}, 200),
        ],
    )
    async def test_another_superuser_can_be_removed(
        self,
        admin_client: httpx.AsyncClient,
        session: AsyncSession,
        method: str,
        suffix: str,
        body: dict[str, object] | None,
        status: int,
    ) -> None:
        other = await make_user(session, username="second_admin", is_superuser=True)

        response = await admin_client.request(method, f"/users/{other.id}{suffix}", json=body)

        assert response.status_code == status, response.text
        active = select(func.count()).where(
            col(User.is_superuser).is_(True), col(User.is_active).is_(True)
        )
        assert (await session.exec(active)).one() == 1


ROUNDS = 8


async def superuser(client: httpx.AsyncClient, database_url: str, name: str) -> dict[str, str]:
    """A superuser written straight to the database, logged in through the live server."""
    await query(
        database_url,
        "INSERT INTO users (username, email, hashed_password, is_superuser)"
        " VALUES ($1, $2, $3, true)",
        name,
        f"{name}@example.com",
        password_hash.hash(ADMIN_PASSWORD),
    )
    return await log_in(client, name, ADMIN_PASSWORD)


@pytest.mark.concurrent
@pytest.mark.pgbouncer
@pytest.mark.parametrize("suffix", ["", "/soft"])
async def test_the_last_two_superusers_removing_each_other_at_once_leave_one(
    live_server: str, committed: Database, suffix: str
) -> None:
    async with httpx.AsyncClient(base_url=live_server, timeout=60) as client:
        keeper = await superuser(client, committed.url, "first_admin")
        for n in range(ROUNDS):
            newcomer = await superuser(client, committed.url, f"admin_{n}")
            ids = {
                row["username"]: row["id"]
                for row in await query(
                    committed.url, "SELECT id, username FROM users WHERE is_active"
                )
            }
            keeper_id = next(i for name, i in ids.items() if name != f"admin_{n}")
            newcomer_id = ids[f"admin_{n}"]

            answers = await asyncio.gather(
                client.delete(f"/users/{newcomer_id}{suffix}", headers=keeper),
                client.delete(f"/users/{keeper_id}{suffix}", headers=newcomer),
            )

            statuses = sorted(answer.status_code for answer in answers)
            assert statuses[0] in (200, 204), statuses
            assert statuses[1] in (401, 409), statuses
            refused = max(answers, key=lambda answer: answer.status_code)
            if refused.status_code == 409:
                assert_problem(refused, 409, "last_superuser")
            remaining = await scalar(
                committed.url, "SELECT count(*) FROM users WHERE is_superuser AND is_active"
            )
            assert remaining == 1
            if answers[1].status_code in (200, 204):
                keeper = newcomer
