"""One access line per request, in place of uvicorn's: method, route template, status,
duration, request id, user id, client address; never a raw path, a query string, a token or a
password; health probes left out unless asked for."""

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlmodel.ext.asyncio.session import AsyncSession

import devstack
from api.core import logging as app_logging
from api.main import create_app
from api.users.models import User
from tests.support.app import ROOT, SECRET_KEY, settings_for_tests
from tests.support.client import SECRET_PATTERNS, assert_problem, client_for
from tests.support.database import Database, scalar
from tests.support.factories import DEFAULT_PASSWORD, make_product, make_user
from tests.support.live_server import live_admin, serving
from tests.support.logs import access_lines, captured_log, json_log


async def logged(
    app: FastAPI, *requests: tuple[str, str, dict[str, Any]], user: User | None = None
) -> list[dict[str, Any]]:
    """The JSON log lines `app` writes while answering `requests` (method, path, httpx
    arguments), with a client as `user`; not the client's own (httpx logs each request)."""
    with json_log(app.state.settings) as lines:
        async with client_for(app, user) as client:
            for method, path, arguments in requests:
                await client.request(method, path, **arguments)
    return [line for line in lines() if not line["logger"].startswith(("httpx", "httpcore"))]


@contextmanager
def counting_requests(method: str, route: str) -> Iterator[list[float]]:
    """The change of the 2xx count of one route over the block (this process's registry)."""
    labels = {"method": method, "route": route, "status": "2xx"}
    before = REGISTRY.get_sample_value("http_request_duration_seconds_count", labels) or 0.0
    change: list[float] = []
    yield change
    change.append(
        (REGISTRY.get_sample_value("http_request_duration_seconds_count", labels) or 0.0) - before
    )


class TestTheLine:
    async def test_one_line_per_request_with_every_field(
        self, app: FastAPI, session: AsyncSession
    ) -> None:
        product = await make_product(session, name="Logged lamp")

        lines = await logged(
            app, ("GET", f"/products/{product.id}", {"headers": {"X-Request-ID": "line-1"}})
        )

        [line] = access_lines(lines)
        assert line["event"] == "request"
        assert line["method"] == "GET"
        assert line["route"] == "/products/{product_id}"
        assert line["status"] == 200
        assert isinstance(line["duration_ms"], float)
        assert line["duration_ms"] >= 0
        assert line["request_id"] == "line-1"
        assert line["user_id"] is None
        assert line["client"] == "127.0.0.1"  # httpx's in-process client
        assert line["level"] == "info"
        assert line["timestamp"]

    async def test_a_collection_without_its_slash_is_named_by_its_route(
        self, app: FastAPI, admin: User
    ) -> None:
        """`/tags` is answered as `/tags/` (api/core/middleware.py's SlashOptional): its line
        names that route, and so does its count."""
        with counting_requests("GET", "/tags/") as counted:
            lines = await logged(app, ("GET", "/tags", {}), ("GET", "/tags/", {}), user=admin)

        assert [(line["route"], line["status"]) for line in access_lines(lines)] == [
            ("/tags/", 200),
            ("/tags/", 200),
        ]
        assert counted == [2]

    async def test_names_the_authenticated_user(self, app: FastAPI, admin: User) -> None:
        lines = await logged(app, ("GET", "/users/me", {}), user=admin)

        [line] = access_lines(lines)
        assert (line["route"], line["status"], line["user_id"]) == ("/users/me", 200, admin.id)

    async def test_a_refused_token_names_no_user(self, app: FastAPI) -> None:
        lines = await logged(
            app, ("GET", "/users/me", {"headers": {"Authorization": "Bearer not.a.token"}})
        )

        [line] = access_lines(lines)
        assert (line["status"], line["user_id"]) == (401, None)
        assert "not.a.token" not in str(lines)

    async def test_an_unknown_path_is_unmatched_never_the_path(self, app: FastAPI) -> None:
        lines = await logged(app, ("GET", "/wp-admin/setup-config.php?step=1", {}))

        [line] = access_lines(lines)
        assert (line["route"], line["status"]) == ("unmatched", 404)
        assert "wp-admin" not in str(lines)

    async def test_a_body_refused_before_routing_is_unmatched(self, app: FastAPI) -> None:
        lines = await logged(app, ("POST", "/users/", {"content": b"x" * 2_000_000}))

        [line] = access_lines(lines)
        assert (line["method"], line["route"], line["status"]) == ("POST", "unmatched", 413)

    async def test_a_wrong_method_names_the_route(self, app: FastAPI) -> None:
        lines = await logged(app, ("PUT", "/health/ready", {}))

        [line] = access_lines(lines)
        assert (line["method"], line["route"], line["status"]) == ("PUT", "/health/ready", 405)


class TestNoSecrets:
    async def test_no_query_string_nor_raw_path(self, app: FastAPI, session: AsyncSession) -> None:
        product = await make_product(session, name="Logged lamp")

        lines = await logged(
            app,
            ("GET", "/products/", {"params": {"search": "hunter2", "access_token": "s3cr3t"}}),
            ("GET", f"/products/{product.id}", {"params": {"token": "s3cr3t"}}),
        )

        assert [line["route"] for line in access_lines(lines)] == [
            "/products/",
            "/products/{product_id}",
        ]
        text = str(lines)
        assert "hunter2" not in text
        assert "s3cr3t" not in text
        assert f"/products/{product.id}" not in text

    async def test_a_login_logs_neither_password_nor_token(
        self, app: FastAPI, session: AsyncSession
    ) -> None:
        await make_user(session, username="logger_in")

        lines = await logged(
            app,
            ("POST", "/auth/token", {"data": {"username": "logger_in", "password": "wrong-pw"}}),
            (
                "POST",
                "/auth/token",
                {"data": {"username": "logger_in", "password": DEFAULT_PASSWORD}},
            ),
        )

        assert [(line["route"], line["status"]) for line in access_lines(lines)] == [
            ("/auth/token", 401),
            ("/auth/token", 200),
        ]
        text = str(lines)
        assert "wrong-pw" not in text
        assert DEFAULT_PASSWORD not in text
        assert not any(pattern.search(text) for pattern in SECRET_PATTERNS)


async def test_a_500_has_its_access_line_and_its_error_line_under_one_id() -> None:
    app = create_app(settings_for_tests())

    @app.get("/boom/{part}")
    async def boom(part: str) -> None:
        raise RuntimeError("a bug")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    with json_log(app.state.settings) as lines:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/boom/x", headers={"X-Request-ID": "bug-2"})

    assert response.status_code == 500
    [access] = access_lines(lines())
    [error] = [line for line in lines() if line["level"] == "error"]
    assert (access["route"], access["status"], access["request_id"]) == (
        "/boom/{part}",
        500,
        "bug-2",
    )
    assert error["request_id"] == "bug-2"


PROBES: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/health", {}),
    ("GET", "/health/ready", {}),
    ("GET", "/", {}),
]


class TestProbes:
    async def test_left_out_by_default(self, app: FastAPI) -> None:
        lines = await logged(app, *PROBES)
        assert [line["route"] for line in access_lines(lines)] == ["/"]

    async def test_logged_when_asked_for(self, app: FastAPI) -> None:
        asked = create_app(app.state.settings.model_copy(update={"access_log_probes": True}))
        asked.state.sessionmaker = app.state.sessionmaker

        lines = await logged(asked, *PROBES)

        routes = [line["route"] for line in access_lines(lines)]
        assert routes == ["/health", "/health/ready", "/"]


async def test_access_log_off_writes_no_line() -> None:
    app = create_app(settings_for_tests(access_log=False))

    lines = await logged(app, ("GET", "/", {}), ("GET", "/no/such", {}))

    assert access_lines(lines) == []


def test_a_json_line_keeps_text_readable_and_writes_what_json_cannot_encode_as_its_repr() -> None:
    with json_log(settings_for_tests()) as lines:
        assert app_logging.ACCESS is not None
        app_logging.ACCESS.info("request", price=Decimal("1.50"), name="Café")

    (line,) = lines()
    assert line["price"] == "Decimal('1.50')"
    assert line["name"] == "Café"
    assert line["event"] == "request"


def test_a_json_lines_timestamp_is_the_utc_time_it_was_written_in_iso_8601() -> None:
    """The access line's and the standard library's lines' (one processor chain)."""
    with json_log(settings_for_tests()) as lines:
        before = datetime.now(UTC)
        assert app_logging.ACCESS is not None
        app_logging.ACCESS.info("request")
        logging.getLogger("api.test").warning("a standard library line")
        after = datetime.now(UTC)

    stamps = [line["timestamp"] for line in lines()]
    assert len(stamps) == 2
    for stamp in stamps:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", stamp)
        assert before <= datetime.fromisoformat(stamp) <= after


def test_uvicorn_writes_no_access_line_of_its_own() -> None:
    with captured_log(settings_for_tests()):
        # What uvicorn asks when it opens a connection (its protocols' `access_log`).
        assert not logging.getLogger("uvicorn.access").hasHandlers()
        assert logging.getLogger("uvicorn.error").hasHandlers()


async def test_a_readable_line_in_development(app: FastAPI, client: httpx.AsyncClient) -> None:
    settings = app.state.settings.model_copy(update={"log_json": False})
    with captured_log(settings) as text:
        await client.get("/", headers={"X-Request-ID": "readable-1"})

    [line] = [line for line in text().splitlines() if "[api.access]" in line]
    assert line.startswith("20")  # the time first
    assert "[info     ] request" in line
    for field in ("method=GET", "route=/ ", "status=200", "request_id=readable-1", "client="):
        assert field in line


def json_lines(log: Path) -> list[dict[str, Any]]:
    """The JSON lines of a live server's log (uvicorn's own start-up lines are not JSON)."""
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


@pytest.mark.concurrent
@pytest.mark.pgbouncer
async def test_a_live_server_writes_one_json_line_per_request_behind_a_trusted_proxy(
    committed: Database, app_pgbouncer: devstack.PgBouncer, tmp_path: Path
) -> None:
    """uvicorn with the image's settings (proxy headers trusted from 127.0.0.1, JSON logs): an
    error's request id in its problem body and on its access line, the client a trusted proxy
    forwarded, the user; no access line of uvicorn's own, and none for its health polls."""
    with serving(committed, app_pgbouncer, tmp_path, LOG_JSON="true") as url:
        async with httpx.AsyncClient(base_url=url) as http:
            admin = await live_admin(http, committed.url)  # POST /auth/token
            forwarded = {"X-Forwarded-For": "203.0.113.7"}
            missing = await http.get(
                "/orders/999999", headers={**admin, **forwarded, "X-Request-ID": "live-404"}
            )
            renamed = await http.get("/orders/abc", headers={"X-Request-ID": "bad id"})
            await http.get("/health/ready")

    body = assert_problem(missing, 404, "not_found")
    assert body["request_id"] == "live-404"
    assert_problem(renamed, 401, "unauthorized")
    new_id = renamed.headers["x-request-id"]
    assert new_id != "bad id"

    log = (tmp_path / "uvicorn.log").read_text()
    lines = json_lines(tmp_path / "uvicorn.log")
    access = [line for line in lines if line["logger"] == "api.access"]
    assert [(line["method"], line["route"], line["status"]) for line in access] == [
        ("POST", "/auth/token", 200),
        ("GET", "/orders/{order_id}", 404),
        ("GET", "/orders/{order_id}", 401),
    ]
    boss = await scalar(committed.url, "SELECT id FROM users WHERE username = 'boss'")
    login, error, anonymous = access
    assert error["request_id"] == "live-404"
    assert error["user_id"] == boss
    assert error["client"] == "203.0.113.7"
    assert login["client"] == anonymous["client"] == "127.0.0.1"
    assert (anonymous["request_id"], anonymous["user_id"]) == (new_id, None)
    assert "bad id" not in log
    assert "999999" not in log
    assert "HTTP/1.1" not in log  # uvicorn's own access line: '"GET /orders/1 HTTP/1.1" 404'


def serve_as_the_image(
    tmp_path: Path, extra: dict[str, str], headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """The JSON lines of `python -m api serve` as the image runs it, with two workers: asked for
    /health (which needs no database) until it answers, then once with `headers`, and stopped."""
    port = devstack.free_port()
    env = {
        # LOG_LEVEL from `extra`, or from a .env in tmp_path, where the server runs.
        **{key: value for key, value in os.environ.items() if key != "LOG_LEVEL"},
        "PYTHONPATH": str(ROOT),
        "ENVIRONMENT": "test",
        "SECRET_KEY": SECRET_KEY,
        "DATABASE_URL": "postgresql+asyncpg://nobody:x@127.0.0.1:1/none",
        "LOG_JSON": "true",
        "WEB_CONCURRENCY": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        **extra,
    }
    command = [sys.executable, "-m", "api", "serve", "--factory", "api.main:create_app"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, log.read_text()
            with suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        if headers:
            httpx.get(f"http://127.0.0.1:{port}/health", headers=headers).raise_for_status()
    finally:
        devstack.terminate(server, signal.SIGTERM)
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_the_images_launcher_writes_uvicorns_own_lines_in_json_too(tmp_path: Path) -> None:
    """The supervisor's lines ("Started parent process", its shutdown) and each worker's before
    the app starts are JSON like the app's."""
    lines = serve_as_the_image(tmp_path, {"LOG_LEVEL": "INFO"})
    events = [line["event"] for line in lines]
    assert any(event.startswith("Started parent process") for event in events)
    assert sum(event.startswith("Started server process") for event in events) == 2
    assert any(event.startswith("Stopping parent process") for event in events)


def test_the_images_launcher_holds_uvicorns_own_lines_to_log_level(tmp_path: Path) -> None:
    """LOG_LEVEL=WARNING quiets uvicorn's INFO lines (its start and stop, in the supervisor and
    in each worker) as it does the app's; a warning still gets through: a malformed request
    id, replaced."""
    lines = serve_as_the_image(tmp_path, {"LOG_LEVEL": "WARNING"}, {"X-Request-ID": "bad id!"})

    assert [line["level"] for line in lines] == ["warning"], lines
    assert "failed validation" in lines[0]["event"]


def test_the_images_launcher_reads_log_level_from_dot_env_as_the_app_does(
    tmp_path: Path,
) -> None:
    """LOG_LEVEL in .env, as make run's copy of .env.example has it, and not in the
    environment: uvicorn's own INFO lines are held to it as the app's are."""
    (tmp_path / ".env").write_text("LOG_LEVEL=warning\n")

    lines = serve_as_the_image(tmp_path, {}, {"X-Request-ID": "bad id!"})

    assert [line["level"] for line in lines] == ["warning"], lines
