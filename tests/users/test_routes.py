"""Users over HTTP: the contract, then the database state, re-queried.

Every test here runs twice (see conftest.py): directly against PostgreSQL and through PgBouncer in
transaction mode with the production engine settings.
"""

from typing import Any

import httpx
import pytest
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.users.models import User
from tests.support.client import assert_problem, error_fields
from tests.support.factories import make_user

VALID = {"username": "alice", "email": "alice@example.com", "password": "s3cret-passphrase"}


async def reload(session: AsyncSession, user_id: int) -> User | None:
    return await session.get(User, user_id, populate_existing=True)


async def count_users(session: AsyncSession) -> int:
    """Users other than the tests' superuser."""
    query = select(func.count()).select_from(User).where(col(User.is_superuser).is_(False))
    return (await session.exec(query)).one()


class TestCreateUser:
    async def test_creates_and_never_answers_the_hash(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        response = await client.post("/users/", json=VALID | {"full_name": "Alice A."})

        assert response.status_code == 201
        body = response.json()
        assert body["username"] == "alice"
        assert body["email"] == "alice@example.com"
        assert body["full_name"] == "Alice A."
        assert body["is_active"] is True
        assert body["is_superuser"] is False
        assert body["created_at"].endswith("Z") or body["created_at"].endswith("+00:00")
        assert "hashed_password" not in body
        assert "password" not in body
        assert "$argon2" not in response.text
        db_user = await reload(session, body["id"])
        assert db_user is not None
        assert db_user.hashed_password.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
        assert VALID["password"] not in db_user.hashed_password

    async def test_duplicate_username_is_409_naming_it(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        await make_user(session, username="alice")

        response = await client.post("/users/", json=VALID)

        body = assert_problem(response, 409, "already_exists")
        assert error_fields(body) == {"username"}
        assert await count_users(session) == 1

    async def test_email_is_unique_whatever_its_case(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        await make_user(session, email="Alice@Example.com")

        response = await client.post("/users/", json=VALID | {"email": "ALICE@example.COM"})

        body = assert_problem(response, 409, "already_exists")
        assert error_fields(body) == {"email"}
        assert "email" in body["detail"]
        assert await count_users(session) == 1

    async def test_body_cannot_set_server_owned_fields(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        sneaky = {
            "id": 4242,
            "is_superuser": True,
            "hashed_password": "x",
            "created_at": "2000-01-01T00:00:00Z",
        }

        response = await client.post("/users/", json=VALID | sneaky)

        assert response.status_code == 201
        db_user = await reload(session, response.json()["id"])
        assert db_user is not None
        assert db_user.id != 4242
        assert db_user.is_superuser is False
        assert db_user.hashed_password.startswith("$argon2id$")
        assert db_user.created_at.year != 2000

    async def test_a_password_may_hold_any_character(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        response = await client.post("/users/", json=VALID | {"password": "nul\x00 and ünïcode"})

        assert response.status_code == 201
        db_user = await reload(session, response.json()["id"])
        assert db_user is not None
        assert db_user.hashed_password.startswith("$argon2id$")

    async def test_missing_fields_are_named(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/users/", json={})

        body = assert_problem(response, 422, "validation_error")
        assert error_fields(body) == {"body.username", "body.email", "body.password"}

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"username": 123}, "body.username"),
            ({"username": "ab"}, "body.username"),
            ({"username": "a" * 51}, "body.username"),
            ({"username": "bad name!"}, "body.username"),
            ({"email": "not-an-email"}, "body.email"),
            ({"email": ["a@b.c"]}, "body.email"),
            ({"email": "a" * 250 + "@example.com"}, "body.email"),
            ({"full_name": "x" * 101}, "body.full_name"),
            ({"full_name": "nul\x00byte"}, "body.full_name"),
            ({"bio": "x" * 1001}, "body.bio"),
            ({"password": "short"}, "body.password"),
            ({"password": "p" * 129}, "body.password"),
            ({"password": None}, "body.password"),
        ],
    )
    async def test_invalid_fields_are_422_naming_the_field(
        self, client: httpx.AsyncClient, session: AsyncSession, change: dict[str, Any], field: str
    ) -> None:
        response = await client.post("/users/", json=VALID | change)

        body = assert_problem(response, 422, "validation_error")
        assert field in error_fields(body)
        assert await count_users(session) == 0

    async def test_validation_errors_never_echo_the_password_or_the_input(
        self, client: httpx.AsyncClient
    ) -> None:
        secret = "hunter2"  # too short: refused
        huge = "y" * 200_000
        response = await client.post("/users/", json=VALID | {"password": secret, "bio": huge})

        assert_problem(response, 422, "validation_error")
        assert secret not in response.text
        assert len(response.content) < 2_000

    async def test_malformed_json_is_422(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/users/", content=b'{"username": ', headers={"content-type": "application/json"}
        )

        assert_problem(response, 422, "validation_error")

    async def test_body_above_the_limit_is_413_before_parsing(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        oversized = b'{"username": "' + b"a" * 2_000_000 + b'"}'

        response = await client.post(
            "/users/", content=oversized, headers={"content-type": "application/json"}
        )

        assert_problem(response, 413, "request_entity_too_large")
        assert await count_users(session) == 0

    async def test_chunked_body_above_the_limit_is_413(self, client: httpx.AsyncClient) -> None:
        async def chunks() -> Any:
            for _ in range(40):
                yield b"x" * 65_536

        response = await client.post(
            "/users/", content=chunks(), headers={"content-type": "application/json"}
        )

        assert_problem(response, 413, "request_entity_too_large")


class TestGetUser:
    async def test_reads_one(self, admin_client: httpx.AsyncClient, session: AsyncSession) -> None:
        user = await make_user(session, full_name="Bob")

        response = await admin_client.get(f"/users/{user.id}")

        assert response.status_code == 200
        assert response.json()["username"] == user.username
        assert response.json()["full_name"] == "Bob"
        assert "hashed_password" not in response.json()

    async def test_missing_is_404_naming_resource_and_id(
        self, admin_client: httpx.AsyncClient
    ) -> None:
        response = await admin_client.get("/users/987654")

        body = assert_problem(response, 404, "not_found")
        assert body["detail"] == "User with id 987654 not found"

    @pytest.mark.parametrize("bad_id", ["0", "-1", "abc", "1.5", str(2**31), str(10**30)])
    async def test_bad_ids_are_422(self, admin_client: httpx.AsyncClient, bad_id: str) -> None:
        response = await admin_client.get(f"/users/{bad_id}")

        body = assert_problem(response, 422, "validation_error")
        assert error_fields(body) == {"path.user_id"}


class TestListUsers:
    async def test_envelope_and_exact_counts(
        self, admin_client: httpx.AsyncClient, admin: User, session: AsyncSession
    ) -> None:
        users = [await make_user(session) for _ in range(3)]

        response = await admin_client.get("/users/", params={"page": 1, "size": 2})

        assert response.status_code == 200
        body = response.json()
        assert set(body) == {
            "items",
            "total",
            "total_capped",
            "page",
            "size",
            "pages",
            "next_cursor",
        }
        assert isinstance(body["next_cursor"], str)  # page 1 of 2
        assert body["total"] == 4  # the three and the superuser asking
        assert body["total_capped"] is False
        assert body["page"] == 1
        assert body["size"] == 2
        assert body["pages"] == 2
        assert [u["id"] for u in body["items"]] == [admin.id, users[0].id]
        assert all("hashed_password" not in u for u in body["items"])

    async def test_last_and_past_the_last_page(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        users = [await make_user(session) for _ in range(4)]

        last = (await admin_client.get("/users/", params={"page": 3, "size": 2})).json()
        past = (await admin_client.get("/users/", params={"page": 5, "size": 2})).json()

        assert [u["id"] for u in last["items"]] == [users[3].id]
        assert last["next_cursor"] is None
        assert past["items"] == []
        assert past["total"] == 5

    async def test_only_the_superuser(self, admin_client: httpx.AsyncClient, admin: User) -> None:
        body = (await admin_client.get("/users/")).json()

        assert [u["id"] for u in body["items"]] == [admin.id]
        assert body["total"] == 1
        assert body["pages"] == 1

    @pytest.mark.parametrize(
        "params",
        [
            {"page": 0},
            {"page": -1},
            {"page": 10**7},
            {"page": "x"},
            {"size": 0},
            {"size": 101},
            {"size": 10**12},
        ],
    )
    async def test_out_of_bounds_paging_is_422(
        self, admin_client: httpx.AsyncClient, params: dict[str, Any]
    ) -> None:
        response = await admin_client.get("/users/", params=params)

        body = assert_problem(response, 422, "validation_error")
        assert error_fields(body) <= {"query.page", "query.size"}


class TestUpdateUser:
    async def test_changes_only_what_is_sent(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        user = await make_user(session, full_name="Old Name")
        old_hash = user.hashed_password

        response = await admin_client.patch(f"/users/{user.id}", json={"bio": "Hello"})

        assert response.status_code == 200
        assert response.json()["bio"] == "Hello"
        assert response.json()["full_name"] == "Old Name"
        db_user = await reload(session, user.id)  # type: ignore[arg-type]
        assert db_user is not None
        assert db_user.bio == "Hello"
        assert db_user.full_name == "Old Name"
        assert db_user.hashed_password == old_hash

    async def test_taking_anothers_email_is_409(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        await make_user(session, email="taken@example.com")
        user = await make_user(session)

        response = await admin_client.patch(
            f"/users/{user.id}", json={"email": "TAKEN@example.com"}
        )

        body = assert_problem(response, 409, "already_exists")
        assert error_fields(body) == {"email"}
        db_user = await reload(session, user.id)  # type: ignore[arg-type]
        assert db_user is not None
        assert db_user.email == user.email

    @pytest.mark.parametrize(
        "change",
        [
            {"username": None},
            {"email": None},
            {"is_active": None},
            {"username": "x"},
            {"email": "nope"},
            {"bio": "z" * 1001},
            {"is_active": "maybe"},
        ],
    )
    async def test_invalid_changes_are_422(
        self, admin_client: httpx.AsyncClient, session: AsyncSession, change: dict[str, Any]
    ) -> None:
        user = await make_user(session)

        response = await admin_client.patch(f"/users/{user.id}", json=change)

        assert_problem(response, 422, "validation_error")
        db_user = await reload(session, user.id)  # type: ignore[arg-type]
        assert db_user is not None
        assert db_user.username == user.username

    async def test_cannot_set_password_hash_or_superuser(
        self, admin_client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        user = await make_user(session)

        response = await admin_client.patch(
            f"/users/{user.id}", json={"hashed_password": "x", "is_superuser": True, "id": 99}
        )

        assert response.status_code == 200
        db_user = await reload(session, user.id)  # type: ignore[arg-type]
        assert db_user is not None
        assert db_user.is_superuser is False
        assert db_user.hashed_password == user.hashed_password

    async def test_missing_is_404(self, admin_client: httpx.AsyncClient) -> None:
        response = await admin_client.patch("/users/987654", json={"bio": "x"})

        assert_problem(response, 404, "not_found")


class TestDeleteUser:
    async def test_deletes(self, admin_client: httpx.AsyncClient, session: AsyncSession) -> None:
        user = await make_user(session)

        response = await admin_client.delete(f"/users/{user.id}")

        assert response.status_code == 204
        assert response.content == b""
        session.expunge_all()
        assert await session.get(User, user.id) is None
        assert_problem(await admin_client.get(f"/users/{user.id}"), 404, "not_found")

    async def test_missing_is_404(self, admin_client: httpx.AsyncClient) -> None:
        assert_problem(await admin_client.delete("/users/987654"), 404, "not_found")

    async def test_bad_id_is_422(self, admin_client: httpx.AsyncClient) -> None:
        assert_problem(await admin_client.delete("/users/-5"), 422, "validation_error")
