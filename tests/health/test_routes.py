"""Liveness needs no database; readiness makes one round trip and says 503 when it cannot."""

import time

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.support.app import app_without_database
from tests.support.client import assert_problem
from tests.support.database import Database


async def test_liveness(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize("via", ["direct", pytest.param("pgbouncer", marks=pytest.mark.pgbouncer)])
async def test_readiness_reports_latency_and_pool_mode(client: httpx.AsyncClient, via: str) -> None:
    response = await client.get("/health/ready")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == "ok"
    assert body["pool_mode"] == ("null" if via == "pgbouncer" else "queue")
    assert 0 < body["latency_ms"] < 5_000


async def test_liveness_does_not_touch_the_database(silent_database: str) -> None:
    transport = httpx.ASGITransport(app=app_without_database(silent_database))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/health")).status_code == 200


async def test_readiness_is_a_prompt_503_when_the_database_does_not_answer(
    silent_database: str,
) -> None:
    transport = httpx.ASGITransport(app=app_without_database(silent_database))
    started = time.monotonic()
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/health/ready")

    assert_problem(response, 503, "database_unavailable")
    assert response.headers["retry-after"] == "1"
    assert time.monotonic() - started < 5


async def test_readiness_is_a_503_when_the_database_refuses_the_login(database: Database) -> None:
    wrong = make_url(database.url).set(password="wrong").render_as_string(hide_password=False)
    transport = httpx.ASGITransport(app=app_without_database(wrong))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/health/ready")

    assert_problem(response, 503, "database_unavailable")


async def test_the_root_points_at_docs_and_health(client: httpx.AsyncClient) -> None:
    response = await client.get("/")

    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "Storefront API"
    assert body["version"]
    for link in ("docs", "openapi", "health", "ready"):
        assert (await client.get(body[link])).status_code == 200, link


@pytest.mark.parametrize("via", ["direct", pytest.param("pgbouncer", marks=pytest.mark.pgbouncer)])
async def test_database_figures_show_the_pool_or_its_absence(
    admin_client: httpx.AsyncClient, via: str
) -> None:
    response = await admin_client.get("/health/db")

    assert response.status_code == 200
    body = response.json()
    assert 0 < body["latency_ms"] < 5_000
    assert body["replica"] is None  # no DATABASE_READ_URL (tests/replica/ has one)
    if via == "pgbouncer":  # NullPool: PgBouncer pools, the app keeps nothing
        assert body["pool_mode"] == "null"
        assert body["pool"] is None
    else:
        assert body["pool_mode"] == "queue"
        pool = body["pool"]
        assert pool["size"] >= 1
        assert pool["checked_out"] >= 1  # this request's own connection
        assert pool["checked_in"] >= 0
        assert pool["overflow"] <= pool["size"]


async def test_database_figures_are_a_superusers(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/health/db"), 401, "unauthorized")
