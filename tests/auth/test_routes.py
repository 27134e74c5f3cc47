"""Login, tokens and the caller's own profile, against real PostgreSQL."""

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI
from sqlmodel.ext.asyncio.session import AsyncSession

from api.auth import service as auth_service
from api.core import security
from api.users.models import User
from tests.support.app import SECRET_KEY, settings_for_tests
from tests.support.client import assert_problem, client_for
from tests.support.factories import DEFAULT_PASSWORD, make_user


async def login(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post("/auth/token", data={"username": username, "password": password})


def token(claims: dict[str, Any], *, key: str = SECRET_KEY, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def assert_401(response: httpx.Response) -> None:
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


class TestLogin:
    async def test_by_username(self, client: httpx.AsyncClient, session: AsyncSession) -> None:
        user = await make_user(session, username="carol")

        response = await login(client, "carol", DEFAULT_PASSWORD)

        assert response.status_code == 200
        body = response.json()
        assert body["token_type"] == "bearer"
        assert body["expires_in"] == 30 * 60
        claims = jwt.decode(body["access_token"], SECRET_KEY, algorithms=["HS256"])
        assert claims["sub"] == str(user.id)
        assert claims["exp"] - claims["iat"] == 30 * 60

    async def test_by_email_whatever_its_case(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        await make_user(session, email="Carol@Example.com")

        response = await login(client, "CAROL@example.COM", DEFAULT_PASSWORD)

        assert response.status_code == 200

    async def test_the_token_opens_the_door(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        await make_user(session, username="carol")
        access = (await login(client, "carol", DEFAULT_PASSWORD)).json()["access_token"]

        me = await client.get("/users/me", headers={"Authorization": f"Bearer {access}"})

        assert me.status_code == 200
        assert me.json()["username"] == "carol"

    @pytest.mark.parametrize(
        ("username", "password"), [("carol", "wrong-password"), ("nobody", DEFAULT_PASSWORD)]
    )
    async def test_wrong_password_and_unknown_user_look_the_same(
        self, client: httpx.AsyncClient, session: AsyncSession, username: str, password: str
    ) -> None:
        await make_user(session, username="carol")

        response = await login(client, username, password)

        body = assert_problem(response, 401, "unauthorized")
        assert body["detail"] == "Incorrect username or password."
        assert response.headers["www-authenticate"] == "Bearer"

    async def test_an_unknown_user_costs_a_real_verify(
        self, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        verified: list[str] = []
        real_verify = security.verify_password

        async def recording_verify(password: str, hashed: str) -> bool:
            verified.append(hashed)
            return await real_verify(password, hashed)

        monkeypatch.setattr(auth_service, "verify_password", recording_verify)

        await login(client, "nobody", "whatever-password")

        assert verified == [auth_service.dummy_hash()]
        assert verified[0].startswith("$argon2id$v=19$m=19456,t=2,p=1$")

    async def test_a_deactivated_user_cannot_log_in(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        await make_user(session, username="carol", is_active=False)

        assert_401(await login(client, "carol", DEFAULT_PASSWORD))

    @pytest.mark.parametrize("form", [{}, {"username": "carol"}, {"password": "x"}])
    async def test_missing_fields_are_422(
        self, client: httpx.AsyncClient, form: dict[str, str]
    ) -> None:
        assert_problem(await client.post("/auth/token", data=form), 422, "validation_error")

    async def test_a_json_body_is_422(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/auth/token", json={"username": "a", "password": "b"})
        assert_problem(response, 422, "validation_error")


class TestTokens:
    @pytest.fixture
    async def carol(self, session: AsyncSession) -> User:
        return await make_user(session, username="carol")

    def claims(self, user: User, **changes: Any) -> dict[str, Any]:
        now = datetime.now(UTC)
        stamp = auth_service.password_stamp(
            hashed_password=user.hashed_password, settings=settings_for_tests()
        )
        claims = {"sub": str(user.id), "iat": now, "exp": now + timedelta(minutes=5), "pwd": stamp}
        return claims | changes

    async def me(self, client: httpx.AsyncClient, access: str) -> httpx.Response:
        return await client.get("/users/me", headers={"Authorization": f"Bearer {access}"})

    async def test_missing(self, client: httpx.AsyncClient) -> None:
        assert_401(await client.get("/users/me"))

    async def test_not_a_token(self, client: httpx.AsyncClient) -> None:
        assert_401(await self.me(client, "not.a.token"))

    async def test_valid(self, client: httpx.AsyncClient, carol: User) -> None:
        assert (await self.me(client, token(self.claims(carol)))).status_code == 200

    async def test_expired(self, client: httpx.AsyncClient, carol: User) -> None:
        past = datetime.now(UTC) - timedelta(minutes=1)
        assert_401(await self.me(client, token(self.claims(carol, exp=past))))

    async def test_tampered(self, client: httpx.AsyncClient, carol: User) -> None:
        header, _payload, signature = token(self.claims(carol)).split(".")
        forged = token(self.claims(carol, sub="1"), key="another-key-of-at-least-32-bytes!!")
        assert_401(await self.me(client, f"{header}.{forged.split('.')[1]}.{signature}"))

    async def test_signed_with_another_key(self, client: httpx.AsyncClient, carol: User) -> None:
        forged = token(self.claims(carol), key="another-key-of-at-least-32-bytes!!")
        assert_401(await self.me(client, forged))

    async def test_another_algorithm(self, client: httpx.AsyncClient, carol: User) -> None:
        assert_401(await self.me(client, token(self.claims(carol), algorithm="HS512")))

    async def test_alg_none(self, client: httpx.AsyncClient, carol: User) -> None:
        unsigned = jwt.encode(self.claims(carol), None, algorithm="none")
        assert_401(await self.me(client, unsigned))

    @pytest.mark.parametrize("missing", ["sub", "iat", "exp", "pwd"])
    async def test_a_required_claim_is_missing(
        self, client: httpx.AsyncClient, carol: User, missing: str
    ) -> None:
        claims = self.claims(carol)
        del claims[missing]
        assert_401(await self.me(client, token(claims)))

    async def test_sub_is_not_a_user_id(self, client: httpx.AsyncClient, carol: User) -> None:
        assert_401(await self.me(client, token(self.claims(carol, sub="carol"))))

    async def test_the_user_is_gone(
        self, client: httpx.AsyncClient, carol: User, session: AsyncSession
    ) -> None:
        access = token(self.claims(carol))
        await session.delete(carol)
        await session.flush()
        assert_401(await self.me(client, access))

    async def test_issued_under_another_password(
        self, client: httpx.AsyncClient, carol: User
    ) -> None:
        other = auth_service.password_stamp(
            hashed_password="another hash", settings=settings_for_tests()
        )
        assert_401(await self.me(client, token(self.claims(carol, pwd=other))))

    async def test_deactivated_after_the_token_was_issued(
        self, client: httpx.AsyncClient, carol: User, session: AsyncSession
    ) -> None:
        access = token(self.claims(carol))
        carol.is_active = False
        session.add(carol)
        await session.flush()
        assert_401(await self.me(client, access))


class TestMe:
    @pytest.fixture
    async def carol(self, session: AsyncSession) -> User:
        return await make_user(session, username="carol", full_name="Carol")

    @pytest.fixture
    async def as_carol(self, app: FastAPI, carol: User) -> Any:
        async with client_for(app, carol) as client:
            yield client

    async def test_read(self, as_carol: httpx.AsyncClient, carol: User) -> None:
        response = await as_carol.get("/users/me")
        assert response.status_code == 200
        assert response.json()["id"] == carol.id

    async def test_update(
        self, as_carol: httpx.AsyncClient, carol: User, session: AsyncSession
    ) -> None:
        response = await as_carol.patch("/users/me", json={"bio": "Hello"})

        assert response.status_code == 200
        # The answer is the row after the change, though the request had read the user before.
        assert (response.json()["bio"], response.json()["full_name"]) == ("Hello", "Carol")
        db_user = await session.get(User, carol.id, populate_existing=True)
        assert db_user is not None
        assert db_user.bio == "Hello"
        assert db_user.full_name == "Carol"

    async def test_cannot_grant_itself_a_role_or_reactivate(
        self, as_carol: httpx.AsyncClient, carol: User, session: AsyncSession
    ) -> None:
        response = await as_carol.patch(
            "/users/me",
            json={"is_superuser": True, "is_active": False, "hashed_password": "x", "id": 1},
        )

        assert response.status_code == 200
        db_user = await session.get(User, carol.id, populate_existing=True)
        assert db_user is not None
        assert db_user.is_superuser is False
        assert db_user.is_active is True
        assert db_user.hashed_password == carol.hashed_password

    async def test_taking_a_taken_username_is_409(
        self, as_carol: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        await make_user(session, username="dave")
        assert_problem(
            await as_carol.patch("/users/me", json={"username": "dave"}), 409, "already_exists"
        )

    async def test_invalid_change_is_422(self, as_carol: httpx.AsyncClient) -> None:
        response = await as_carol.patch("/users/me", json={"username": None})
        assert_problem(response, 422, "validation_error")

    async def test_change_password(
        self, as_carol: httpx.AsyncClient, client: httpx.AsyncClient
    ) -> None:
        response = await as_carol.post(
            "/users/me/password",
            json={"current_password": DEFAULT_PASSWORD, "new_password": "a-brand-new-one"},
        )

        assert response.status_code == 204
        assert (await login(client, "carol", "a-brand-new-one")).status_code == 200
        assert_401(await login(client, "carol", DEFAULT_PASSWORD))

    async def test_a_password_change_ends_the_tokens_issued_before_it(
        self, as_carol: httpx.AsyncClient, client: httpx.AsyncClient
    ) -> None:
        assert (await as_carol.get("/users/me")).status_code == 200
        response = await as_carol.post(
            "/users/me/password",
            json={"current_password": DEFAULT_PASSWORD, "new_password": "a-brand-new-one"},
        )
        assert response.status_code == 204

        refused = await as_carol.get("/users/me")
        assert_401(refused)
        assert "log in again" in refused.json()["detail"]
        fresh = await login(client, "carol", "a-brand-new-one")
        headers = {"Authorization": f"Bearer {fresh.json()['access_token']}"}
        assert (await client.get("/users/me", headers=headers)).status_code == 200

    async def test_change_password_needs_the_current_one(
        self, as_carol: httpx.AsyncClient, client: httpx.AsyncClient
    ) -> None:
        response = await as_carol.post(
            "/users/me/password",
            json={"current_password": "not-it", "new_password": "a-brand-new-one"},
        )

        body = assert_problem(response, 400, "bad_request")
        assert "not-it" not in response.text
        assert "a-brand-new-one" not in body["detail"]
        assert (await login(client, "carol", DEFAULT_PASSWORD)).status_code == 200

    @pytest.mark.parametrize(
        "body",
        [
            {},
            {"current_password": DEFAULT_PASSWORD},
            {"current_password": DEFAULT_PASSWORD, "new_password": "short"},
        ],
    )
    async def test_bad_password_bodies_are_422(
        self, as_carol: httpx.AsyncClient, body: dict[str, str]
    ) -> None:
        response = await as_carol.post("/users/me/password", json=body)
        assert_problem(response, 422, "validation_error")
        assert DEFAULT_PASSWORD not in response.text
