"""Which route answers a request does not depend on the order the routers are taken in, and the
app holds the routes themselves."""

import itertools
import re
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

import api.main
from api.main import create_app
from api.tags.models import Tag
from api.users.dependencies import USER_PATH_WORDS
from api.users.models import User
from tests.support.app import settings_for_tests
from tests.support.client import client_for
from tests.support.database import in_transaction
from tests.support.factories import make_user

TEMPLATES = create_app(settings_for_tests()).openapi()["paths"]
PARAMETER = re.compile(r"^\{[^}]+\}$")
# Timings in the health answers: all that may differ between two runs of one request.
LATENCY = re.compile(rb'"latency_ms":[-+.e0-9]+')


def literal_words() -> set[str]:
    """Every literal segment of every path: what an id segment could be mistaken for."""
    return {
        segment
        for path in TEMPLATES
        for segment in path.strip("/").split("/")
        if segment and not PARAMETER.match(segment)
    }


def probes() -> Iterator[tuple[str, str]]:
    """Each method of each path, its parameters filled with an id, a word that is no id, and
    every literal segment of the API, so that overlapping paths meet."""
    fillers = sorted({"1", "abc", "-1"} | literal_words())
    for template, operations in sorted(TEMPLATES.items()):
        segments = template.strip("/").split("/")
        slots = [i for i, segment in enumerate(segments) if PARAMETER.match(segment)]
        for filling in itertools.product(fillers, repeat=len(slots)):
            concrete = list(segments)
            for slot, value in zip(slots, filling, strict=True):
                concrete[slot] = value
            for method in sorted(operations):
                yield method.upper(), "/" + "/".join(concrete)


@pytest.fixture
def reversed_app(db_connection: AsyncConnection, monkeypatch: pytest.MonkeyPatch) -> FastAPI:
    """The app with its routers included in reverse order."""
    monkeypatch.setattr(api.main, "ROUTERS", tuple(reversed(api.main.ROUTERS)))
    app = create_app(settings_for_tests())
    return in_transaction(app, db_connection)


async def answer(
    http: httpx.AsyncClient, connection: AsyncConnection, method: str, path: str
) -> tuple[int, bytes]:
    """The answer to one request whose changes are then undone, so both apps see one state."""
    savepoint = await connection.begin_nested()
    try:
        body: dict[str, object] | None = {} if method in {"PATCH", "PUT", "POST"} else None
        # One request id for both apps: the problem bodies name it.
        response = await http.request(method, path, json=body, headers={"X-Request-ID": "same"})
        return response.status_code, LATENCY.sub(b"", response.content)
    finally:
        await savepoint.rollback()


async def test_reversed_routers_give_the_same_answers(
    app: FastAPI,
    reversed_app: FastAPI,
    admin: User,
    session: AsyncSession,
    db_connection: AsyncConnection,
) -> None:
    await make_user(session, username="plain", email="by-email@example.com")
    requests = sorted(set(probes()))
    differing = []
    async with client_for(app, admin) as usual, client_for(reversed_app, admin) as reverse:
        for method, path in requests:
            first = await answer(usual, db_connection, method, path)
            second = await answer(reverse, db_connection, method, path)
            if first != second:
                differing.append(f"{method} {path}: {first[0]} / {second[0]}")

    assert len(requests) > 500
    assert differing == []


def test_the_user_id_path_type_names_every_word_under_users() -> None:
    segments = {path.split("/")[2] for path in TEMPLATES if path.startswith("/users/")}
    words = {segment for segment in segments if segment and not PARAMETER.match(segment)}
    assert words == set(USER_PATH_WORDS)


@pytest.mark.parametrize(
    "path", ["/products", "/categories", "/tags", "/posts", "/orders", "/users"]
)
async def test_a_collection_answers_without_its_slash(
    admin_client: httpx.AsyncClient, path: str
) -> None:
    plain = await admin_client.get(path, params={"size": 5})
    slashed = await admin_client.get(f"{path}/", params={"size": 5})

    assert plain.status_code == 200, plain.text
    assert plain.json() == slashed.json()


async def test_a_create_needs_no_redirect(
    admin_client: httpx.AsyncClient, session: AsyncSession
) -> None:
    response = await admin_client.post("/tags", json={"name": "No Slash"})

    assert response.status_code == 201, response.text
    assert response.json()["slug"] == "no-slash"
    stored = await session.exec(select(Tag.name).where(Tag.slug == "no-slash"))
    assert stored.all() == ["No Slash"]


def test_the_app_holds_routes_not_router_nodes() -> None:
    """The app takes its routers' routes (api.core.routing.add_routes): a request is matched
    against routes, never walked through an included router's node."""
    app = create_app(settings_for_tests())
    kinds = {type(route).__name__ for route in app.router.routes}
    assert kinds <= {"APIRoute", "IdempotentRoute", "Route"}, kinds
    assert {"APIRoute", "IdempotentRoute"} <= kinds
