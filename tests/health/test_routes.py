"""Liveness needs no database; readiness makes one round trip and says 503 when it cannot."""

import time

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import Database
from tests.helpers import app_without_database, assert_problem


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
