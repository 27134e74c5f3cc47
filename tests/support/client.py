"""HTTP in the tests: in-process clients that refuse any answer carrying a secret, bearer headers
and logins, and the checks of an RFC 9457 problem answer."""

import re
from typing import Any

import httpx
from fastapi import FastAPI

from api.auth.service import create_access_token
from api.users.models import User
from tests.support.app import settings_for_tests


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The answer is an RFC 9457 problem with this status and stable code, and the id of the
    request it answers."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"urn:storefront:problem:{code}"
    assert body["title"]
    assert body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def error_fields(body: dict[str, Any]) -> set[str]:
    return {error["field"] for error in body["errors"]}


SECRET_PATTERNS = [
    re.compile(r"\$argon2(id|i|d)\$"),  # a password hash
    re.compile(r"eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+"),  # a JWT
]


async def refuse_secrets(response: httpx.Response) -> None:
    """No answer carries a password hash or a token, but the login's own token."""
    body = (await response.aread()).decode(errors="replace")
    if response.request.url.path == "/auth/token" and response.status_code == 200:
        return
    for pattern in SECRET_PATTERNS:
        assert not pattern.search(body), f"{response.request.url.path} answered a secret"


def bearer(user: User) -> dict[str, str]:
    token = create_access_token(user=user, settings=settings_for_tests())
    return {"Authorization": f"Bearer {token.access_token}"}


def client_for(app: FastAPI, user: User | None = None) -> httpx.AsyncClient:
    """An in-process client for `app`, as `user` (anonymous without one)."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://test",
        headers=bearer(user) if user else None,
        event_hooks={"response": [refuse_secrets]},
    )


async def log_in(http: httpx.AsyncClient, username: str, password: str) -> dict[str, str]:
    """The bearer header of a login through `POST /auth/token` (username or email)."""
    login = await http.post("/auth/token", data={"username": username, "password": password})
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}
