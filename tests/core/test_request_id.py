"""X-Request-ID: on every answer, the client's when it is well formed and a new one otherwise
(never a malformed one echoed), in every problem body and on every log line of the request."""

import logging
import re
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from api.main import create_app
from tests.support.app import settings_for_tests
from tests.support.client import assert_problem
from tests.support.logs import json_log

NEW_ID = re.compile(r"[0-9a-f]{32}")  # what the server makes: 128 random bits in hex

KEPT = [
    str(uuid.uuid4()),
    uuid.uuid4().hex,
    f"urn:uuid:{uuid.uuid4()}",
    "req-42",
    "x" * 64,
    "a.b_c~d:e+f/g=h-1",
]
REPLACED = [
    "x" * 65,
    "x" * 8000,
    "has space",
    'quote"d',
    "semi;colon",
    "<script>",
    "tab\there",
    "{" + str(uuid.uuid4()) + "}",
]


@pytest.fixture
async def raising_app() -> FastAPI:
    """The app with a route whose bug is a 500 (it needs no database)."""
    app = create_app(settings_for_tests())

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    return app


@pytest.fixture
async def raising_client(raising_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=raising_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


class TestEveryAnswer:
    @pytest.mark.parametrize(
        ("method", "path", "status"),
        [("GET", "/health", 200), ("GET", "/", 200), ("GET", "/no/such", 404)],
    )
    async def test_carries_a_new_id_without_one_sent(
        self, client: httpx.AsyncClient, method: str, path: str, status: int
    ) -> None:
        response = await client.request(method, path)

        assert response.status_code == status
        assert NEW_ID.fullmatch(response.headers["x-request-id"])
        assert len(response.headers.get_list("x-request-id")) == 1

    async def test_each_request_gets_its_own(self, client: httpx.AsyncClient) -> None:
        ids = {(await client.get("/health")).headers["x-request-id"] for _ in range(5)}
        assert len(ids) == 5

    @pytest.mark.parametrize("sent", KEPT)
    async def test_keeps_a_well_formed_client_id(
        self, client: httpx.AsyncClient, sent: str
    ) -> None:
        response = await client.get("/health", headers={"X-Request-ID": sent})
        assert response.headers["x-request-id"] == sent

    @pytest.mark.parametrize("sent", REPLACED)
    async def test_replaces_a_malformed_one_never_echoing_it(
        self, client: httpx.AsyncClient, sent: str
    ) -> None:
        response = await client.get("/no/such", headers={"X-Request-ID": sent})

        assert NEW_ID.fullmatch(response.headers["x-request-id"])
        assert sent not in response.text
        assert sent not in str(response.headers)

    async def test_replaces_bytes_that_are_not_ascii(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/health", headers={b"X-Request-ID": b"caf\xc3\xa9"})
        assert NEW_ID.fullmatch(response.headers["x-request-id"])

    async def test_an_empty_one_is_no_id(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/health", headers={"X-Request-ID": ""})
        assert NEW_ID.fullmatch(response.headers["x-request-id"])


class TestProblemBodies:
    async def test_a_404_names_the_client_s_id(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/products/999999", headers={"X-Request-ID": "trace-404"})

        body = assert_problem(response, 404, "not_found")
        assert body["request_id"] == "trace-404"

    async def test_a_422_names_a_new_id(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/products/abc")

        body = assert_problem(response, 422, "validation_error")
        assert NEW_ID.fullmatch(body["request_id"])

    async def test_a_413_refused_before_routing_names_it(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/users/", content=b"x" * 2_000_000, headers={"X-Request-ID": "big-body"}
        )

        body = assert_problem(response, 413, "request_entity_too_large")
        assert body["request_id"] == "big-body"

    async def test_a_500_carries_it_in_the_header_and_the_body_once(
        self, raising_client: httpx.AsyncClient
    ) -> None:
        response = await raising_client.get("/boom", headers={"X-Request-ID": "bug-report-1"})

        body = assert_problem(response, 500, "internal_error")
        assert body["request_id"] == "bug-report-1"
        assert response.headers.get_list("x-request-id") == ["bug-report-1"]


async def test_a_500_s_log_lines_carry_the_id_of_its_answer(
    raising_app: FastAPI, raising_client: httpx.AsyncClient
) -> None:
    """The bug report's id leads to the server's lines about it."""
    with json_log(raising_app.state.settings) as lines:
        response = await raising_client.get("/boom")

    request_id = response.json()["request_id"]
    [error] = [line for line in lines() if line["event"].startswith("unhandled error")]
    assert error["request_id"] == request_id
    assert error["level"] == "error"
    assert "RuntimeError: a bug" in error["exception"]


async def test_a_log_line_outside_a_request_has_no_id(raising_app: FastAPI) -> None:
    with json_log(raising_app.state.settings) as lines:
        logging.getLogger("api.test").warning("between requests")

    [line] = lines()
    assert line["event"] == "between requests"
    assert "request_id" not in line


async def test_a_cors_preflight_carries_it_and_answers_expose_it() -> None:
    app = create_app(settings_for_tests(cors_origins=["https://shop.example"]))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        preflight = await client.options(
            "/products/",
            headers={
                "Origin": "https://shop.example",
                "Access-Control-Request-Method": "POST",
                "X-Request-ID": "preflight-1",
            },
        )
        answer = await client.get("/health", headers={"Origin": "https://shop.example"})

    assert preflight.status_code == 200
    assert preflight.headers["x-request-id"] == "preflight-1"
    exposed = answer.headers["access-control-expose-headers"].lower().split(", ")
    # And what a browser's client needs to write safely and retry: the tag to send back in
    # If-Match, the replay's mark, 409s' and 503s' wait.
    assert {"x-request-id", "etag", "idempotent-replayed", "retry-after"} <= set(exposed)


async def test_request_ids_off_leave_answers_and_problems_without_one() -> None:
    app = create_app(settings_for_tests(request_ids=False))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/no/such", headers={"X-Request-ID": "ignored"})

    assert response.status_code == 404
    assert "x-request-id" not in response.headers
    assert "request_id" not in response.json()
