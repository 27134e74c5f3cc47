"""One error shape for every non-2xx, documented in the OpenAPI; no internals in a 500."""

import socket
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlmodel import func, select
from starlette.types import Message

from api.core.db import SessionDep, build_engine, use_engine
from api.core.errors import PROBLEM_CODES, PROBLEM_MEDIA_TYPE, AppError
from api.main import create_app
from tests.support.app import app_without_database, settings_for_tests
from tests.support.client import assert_problem
from tests.support.database import Database


async def test_unknown_route_is_a_problem_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/no/such/route"), 404, "not_found")


async def test_wrong_method_is_a_problem_405(client: httpx.AsyncClient) -> None:
    assert_problem(await client.put("/health"), 405, "method_not_allowed")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [("PUT", "/users/", "GET, POST"), ("POST", "/users/1", "DELETE, GET, PATCH, PUT")],
)
async def test_405_names_every_allowed_method(
    client: httpx.AsyncClient, method: str, path: str, allowed: str
) -> None:
    response = await client.request(method, path)

    assert_problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == allowed


async def test_body_that_is_not_utf8_is_a_documented_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/users/", content=b'{"username": "\xff\xfe"}', headers={"content-type": "application/json"}
    )

    assert_problem(response, 400, "bad_request")
    assert (
        "400" in create_app(settings_for_tests()).openapi()["paths"]["/users/"]["post"]["responses"]
    )


async def test_unexpected_error_is_a_500_with_no_internals() -> None:
    app = create_app(settings_for_tests())

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals: password=hunter2")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/boom")

    body = assert_problem(response, 500, "internal_error")
    assert "secret" not in response.text
    assert "hunter2" not in response.text
    assert body["detail"] == "An unexpected error occurred."


async def test_unresponsive_database_is_a_prompt_503(silent_database: str) -> None:
    app = app_without_database(silent_database)
    transport = httpx.ASGITransport(app=app)
    started = time.monotonic()
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post(
            "/users/", json={"username": "abc", "email": "a@b.co", "password": "x" * 10}
        )

    assert_problem(response, 503, "database_unavailable")
    assert response.headers["retry-after"] == "1"
    assert time.monotonic() - started < 5


async def answer(app: FastAPI, database: Database, method: str, path: str) -> httpx.Response:
    """`method path` sent to `app` in-process, on an engine of its own on `database`."""
    engine = build_engine(app.state.settings, url=database.url)
    use_engine(app, engine)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path)
    finally:
        await engine.dispose()


async def test_a_statement_past_the_command_timeout_is_a_prompt_503(database: Database) -> None:
    app = create_app(settings_for_tests(db_command_timeout=0.5))

    @app.get("/slow")
    async def slow(session: SessionDep) -> None:
        await session.exec(select(func.pg_sleep(10)))

    started = time.monotonic()
    response = await answer(app, database, "GET", "/slow")

    assert_problem(response, 503, "database_unavailable")
    assert time.monotonic() - started < 5


async def test_a_serialization_failure_is_a_retryable_503(database: Database) -> None:
    """What PostgreSQL raises when it undoes a transaction to keep it serializable (the deadlock
    case runs for real in tests/orders/test_concurrency.py)."""
    app = create_app(settings_for_tests())

    @app.post("/undone")
    async def undone(session: SessionDep) -> None:
        await session.exec(  # type: ignore[call-overload]
            text("DO $$ BEGIN RAISE EXCEPTION 'pg-own-words' USING ERRCODE = '40001'; END $$")
        )

    response = await answer(app, database, "POST", "/undone")

    assert_problem(response, 503, "transaction_conflict")
    assert response.headers["Retry-After"] == "1"
    assert "pg-own-words" not in response.text  # PostgreSQL's message stays in the server


async def test_refused_connection_is_a_503() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused
        app = app_without_database(f"postgresql+asyncpg://postgres:x@127.0.0.1:{port}/db")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.post(
                "/users/", json={"username": "abc", "email": "a@b.co", "password": "x" * 10}
            )

    assert_problem(response, 503, "database_unavailable")


def test_openapi_documents_every_error_as_a_problem() -> None:
    schema = create_app(settings_for_tests()).openapi()
    components = schema["components"]["schemas"]
    assert "HTTPValidationError" not in components
    assert set(components["Problem"]["required"]) >= {"type", "title", "status", "detail", "code"}

    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            errors = {k: v for k, v in operation["responses"].items() if k[0] in "45"}
            if path not in ("/", "/health"):
                assert "503" in errors, f"{method} {path}"
            else:
                assert "503" not in errors, f"{method} {path}"
            if "requestBody" in operation:
                assert {"413", "422"} <= errors.keys(), f"{method} {path}"
            for answer in errors.values():
                assert answer["content"] == {
                    PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}
                }


def test_openapi_documents_the_users_errors() -> None:
    paths = create_app(settings_for_tests()).openapi()["paths"]
    assert "409" in paths["/users/"]["post"]["responses"]
    assert "404" in paths["/users/{user_id}"]["get"]["responses"]
    assert {"404", "409"} <= paths["/users/{user_id}"]["patch"]["responses"].keys()


async def test_a_content_length_that_is_not_a_number_is_400() -> None:
    app = create_app(settings_for_tests())
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/users/",
        "raw_path": b"/users/",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-length", b"12abc"), (b"content-type", b"application/json")],
    }
    await app(scope, receive, send)

    assert sent[0]["status"] == 400
    assert (b"content-type", b"application/problem+json") in sent[0]["headers"]


async def test_a_chunked_body_under_the_limit_reaches_the_route(
    client: httpx.AsyncClient,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"username": "chunky", "email": "chunky@example.com",'
        yield b' "password": "long-enough-password"}'

    response = await client.post(
        "/users/", content=chunks(), headers={"content-type": "application/json"}
    )

    assert response.status_code == 201, response.text
    assert response.json()["username"] == "chunky"


def test_every_code_an_answer_can_carry_is_documented_in_the_openapi_problem() -> None:
    """Clients branch on `code`: each one the app raises is in PROBLEM_CODES, which the OpenAPI
    document's Problem schema lists."""

    def subclasses(cls: type[AppError]) -> list[type[AppError]]:
        return [cls, *(sub for child in cls.__subclasses__() for sub in subclasses(child))]

    raised = {cls.code for cls in subclasses(AppError)}
    assert raised <= set(PROBLEM_CODES)
    schema = create_app(settings_for_tests()).openapi()["components"]["schemas"]["Problem"]
    for code in PROBLEM_CODES:
        assert f"`{code}`" in schema["properties"]["code"]["description"]
