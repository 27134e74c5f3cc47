"""Which PostgreSQL server the suite runs on: `TEST_DATABASE_URL`, else testcontainers when a
Docker engine answers, else an embedded cluster (tests/conftest.py tells the whole order)."""

import gc
import os
import secrets
import warnings
from collections.abc import Iterator
from functools import cache

import pytest


@cache
def docker_reachable() -> bool:
    import docker

    # docker-py leaks its socket when no engine answers; collect it here, where its
    # ResourceWarning is expected, instead of in whichever test runs next.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = docker.from_env(timeout=3)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:
            return False
        finally:
            gc.collect()


POSTGRES_IMAGE = "postgres:18"  # the image compose.yaml runs


def reaper_state() -> str:
    from testcontainers.core.config import testcontainers_config

    if testcontainers_config.ryuk_disabled:
        return "reaper (ryuk) off: TESTCONTAINERS_RYUK_DISABLED=true"
    return f"reaper (ryuk) on: {testcontainers_config.ryuk_image}"


def testcontainers_server() -> Iterator[str]:
    """A superuser URL to a PostgresContainer, removed at the end (by the reaper too, if on)."""
    from docker.errors import DockerException
    from testcontainers.community.postgres import PostgresContainer

    container = PostgresContainer(
        POSTGRES_IMAGE, password=secrets.token_urlsafe(24), driver="asyncpg"
    )
    try:
        container.start()
    except DockerException as exc:
        container.stop()
        hint = (
            ""
            if "off" in reaper_state()
            else (
                " If the reaper's image cannot be pulled here, run with "
                "TESTCONTAINERS_RYUK_DISABLED=true."
            )
        )
        pytest.fail(f"testcontainers could not start {POSTGRES_IMAGE}: {exc}.{hint}", pytrace=False)
    try:
        yield container.get_connection_url()
    finally:
        container.stop()


@cache
def database_backend() -> str:
    if os.environ.get("TEST_DATABASE_URL"):
        return "TEST_DATABASE_URL"
    if docker_reachable():
        return "testcontainers"
    return "embedded"
