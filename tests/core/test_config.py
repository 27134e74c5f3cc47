"""Settings: every field documented in .env.example, unsafe configurations refused, and the
deprecated names of DB_POOL and DB_STATEMENT_CACHE read as before."""

import logging
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from api.core.config import DEPRECATED_SETTINGS, PLACEHOLDER_SECRET_KEY, Settings
from tests.support.app import ROOT, SECRET_KEY, setting_fields, settings_for_tests


def documented_settings() -> dict[str, str]:
    """`NAME=value` lines of .env.example, each with its one-line meaning above it."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    found: dict[str, str] = {}
    for previous, line in zip(["", *lines], lines, strict=False):
        match = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            assert previous.startswith("# "), f"{match[1]} has no one-line meaning above it"
            found[match[1]] = match[2]
    return found


def test_env_example_lists_every_setting() -> None:
    documented = documented_settings()
    fields = setting_fields().keys()

    assert fields - documented.keys() == set(), "settings missing from .env.example"
    assert documented.keys() - fields == set(), ".env.example documents unknown settings"
    assert set(DEPRECATED_SETTINGS.values()) <= fields


def as_env(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(value)
    return "" if value is None else str(value)


def test_env_example_shows_every_default() -> None:
    documented = documented_settings()

    for name, field in setting_fields().items():
        assert documented[name] == as_env(field.default), name


def test_a_copy_of_env_example_loads_as_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """`cp .env.example .env` is the documented start: its empty values mean "unset"."""
    monkeypatch.setenv("ENVIRONMENT", "development")
    from_example = Settings(_env_file=ROOT / ".env.example")
    defaults = Settings(_env_file=None)

    assert from_example.model_dump() == defaults.model_dump()


def test_environment_defaults_to_production_and_refuses_the_placeholder() -> None:
    with pytest.raises(ValidationError, match="SECRET_KEY must be set"):
        Settings(_env_file=None)


@pytest.mark.parametrize("environment", ["test", "production"])
def test_placeholder_secret_is_refused_outside_development(environment: str) -> None:
    with pytest.raises(ValidationError, match="SECRET_KEY must be set"):
        Settings(_env_file=None, environment=environment)


def test_placeholder_secret_is_accepted_in_development() -> None:
    settings = Settings(_env_file=None, environment="development")
    assert settings.secret_key.get_secret_value() == PLACEHOLDER_SECRET_KEY


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        settings_for_tests(secret_key="too-short")


def test_secret_is_not_in_the_settings_repr() -> None:
    assert SECRET_KEY not in repr(settings_for_tests())


def test_migrations_default_to_the_app_url_only_when_it_is_direct() -> None:
    direct = settings_for_tests(db_pool="queue")
    assert direct.direct_database_url == direct.database_url

    pooled = settings_for_tests(db_pool="null")
    with pytest.raises(ValueError, match="MIGRATIONS_DATABASE_URL is required"):
        _ = pooled.direct_database_url

    explicit = settings_for_tests(
        db_pool="null",
        migrations_database_url="postgresql+asyncpg://u:p@db:5432/storefront",
    )
    assert explicit.direct_database_url == "postgresql+asyncpg://u:p@db:5432/storefront"


@pytest.mark.parametrize(
    "url", ["sqlite:///app.db", "postgresql://u:p@h/db", "postgresql+psycopg://u:p@h/db"]
)
def test_only_asyncpg_postgres_urls(url: str) -> None:
    with pytest.raises(ValidationError, match="postgresql\\+asyncpg"):
        settings_for_tests(database_url=url)


@pytest.mark.parametrize("name", ["database_url", "database_read_url", "migrations_database_url"])
def test_a_refused_url_is_not_repeated_with_its_password(name: str) -> None:
    """The start's error names the setting and the rule, never the value (its password)."""
    with pytest.raises(ValidationError) as refused:
        settings_for_tests(**{name: "postgresql://app:hunter2@db/shop"})  # short: not cut

    assert "hunter2" not in str(refused.value)
    assert name in str(refused.value)


def test_cors_origins_from_a_comma_separated_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example, https://b.example")
    assert settings_for_tests().cors_origins == ["https://a.example", "https://b.example"]


def deprecation_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "api.core.config" and record.levelno == logging.WARNING
    ]


def settings_from(monkeypatch: pytest.MonkeyPatch, variables: str) -> Settings:
    """Settings with `variables` ("NAME=value NAME=value") in the environment (conftest clears
    every other)."""
    for pair in variables.split():
        monkeypatch.setenv(*pair.split("="))
    return settings_for_tests()


def test_the_pool_and_the_statement_cache_by_their_names(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    defaults = settings_for_tests()
    assert (defaults.db_pool, defaults.db_statement_cache) == ("queue", True)

    settings = settings_from(monkeypatch, "DB_POOL=null DB_STATEMENT_CACHE=false")
    assert (settings.db_pool, settings.db_statement_cache) == ("null", False)
    assert deprecation_lines(caplog) == []


@pytest.mark.parametrize(
    ("variables", "pool", "cache", "means"),
    [
        # The deprecated names alone, read as before. Straight to PostgreSQL:
        ("DB_POOL_MODE=queue", "queue", True, "DB_POOL=queue and DB_STATEMENT_CACHE=true"),
        # NullPool means PgBouncer, one that tracks prepared statements only when said so:
        ("DB_POOL_MODE=null", "null", False, "DB_POOL=null and DB_STATEMENT_CACHE=false"),
        (
            "DB_POOL_MODE=null PGBOUNCER_PREPARED_STATEMENTS=true",
            *("null", True, "DB_POOL=null and DB_STATEMENT_CACHE=true"),
        ),
        (
            "DB_POOL_MODE=null DB_THROUGH_PGBOUNCER=true",
            *("null", False, "DB_POOL=null and DB_STATEMENT_CACHE=false"),
        ),
        # A small pool in front of PgBouncer 1.18, then of one that tracks prepared statements:
        (
            "DB_POOL_MODE=queue DB_THROUGH_PGBOUNCER=true",
            *("queue", False, "DB_POOL=queue and DB_STATEMENT_CACHE=false"),
        ),
        (
            "DB_POOL_MODE=queue DB_THROUGH_PGBOUNCER=true PGBOUNCER_PREPARED_STATEMENTS=true",
            *("queue", True, "DB_POOL=queue and DB_STATEMENT_CACHE=true"),
        ),
        ("DB_THROUGH_PGBOUNCER=true", "queue", False, "DB_STATEMENT_CACHE=false"),
        # No PgBouncer in front: the cache whatever PGBOUNCER_PREPARED_STATEMENTS says.
        ("PGBOUNCER_PREPARED_STATEMENTS=false", "queue", True, "DB_STATEMENT_CACHE=true"),
        # Beside new names that say the same:
        (
            "DB_POOL=null DB_POOL_MODE=null",
            *("null", False, "DB_POOL=null and DB_STATEMENT_CACHE=false"),
        ),
        # DB_POOL_MODE replaces no statement cache that is given,
        ("DB_POOL_MODE=null DB_STATEMENT_CACHE=true", "null", True, "DB_POOL=null"),
        # and the old cache is read with the new pool.
        (
            "DB_POOL=null PGBOUNCER_PREPARED_STATEMENTS=true",
            *("null", True, "DB_STATEMENT_CACHE=true"),
        ),
        (
            "DB_POOL=null PGBOUNCER_PREPARED_STATEMENTS=false",
            *("null", False, "DB_STATEMENT_CACHE=false"),
        ),
        (
            "DB_STATEMENT_CACHE=false DB_THROUGH_PGBOUNCER=true",
            *("queue", False, "DB_STATEMENT_CACHE=false"),
        ),
    ],
)
def test_the_deprecated_names_read_as_before_and_say_what_replaces_them(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    variables: str,
    pool: str,
    cache: bool,
    means: str,
) -> None:
    settings = settings_from(monkeypatch, variables)

    assert (settings.db_pool, settings.db_statement_cache) == (pool, cache)
    [line] = deprecation_lines(caplog)
    named, advice = line.split(" deprecated and will be removed: ")
    old = [pair for pair in variables.split() if pair.split("=")[0] in DEPRECATED_SETTINGS]
    assert [pair for pair in variables.split() if pair in named] == old
    assert f" {means}; set th" in advice


def test_the_deprecation_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    settings_from(monkeypatch, "DB_POOL_MODE=null PGBOUNCER_PREPARED_STATEMENTS=true")
    assert deprecation_lines(caplog) == [
        "DB_POOL_MODE=null and PGBOUNCER_PREPARED_STATEMENTS=true are deprecated and will be"
        " removed: they mean DB_POOL=null and DB_STATEMENT_CACHE=true; set those instead"
    ]


def test_the_deprecated_names_are_read_from_the_env_file(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("DB_POOL_MODE=null\nPGBOUNCER_PREPARED_STATEMENTS=false\n")
    settings = Settings(_env_file=env_file, environment="test", secret_key=SECRET_KEY)

    assert (settings.db_pool, settings.db_statement_cache) == ("null", False)
    assert len(deprecation_lines(caplog)) == 1


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            "DB_POOL=queue DB_POOL_MODE=null",
            "DB_POOL=queue disagrees with the deprecated DB_POOL_MODE=null: remove DB_POOL_MODE",
        ),
        (
            "DB_POOL=null DB_STATEMENT_CACHE=true PGBOUNCER_PREPARED_STATEMENTS=false",
            "DB_STATEMENT_CACHE=true disagrees with the deprecated"
            " PGBOUNCER_PREPARED_STATEMENTS=false, which with DB_POOL=null mean"
            " DB_STATEMENT_CACHE=false: remove the deprecated settings",
        ),
        (
            "DB_STATEMENT_CACHE=false DB_POOL_MODE=queue DB_THROUGH_PGBOUNCER=false",
            "DB_STATEMENT_CACHE=false disagrees with the deprecated DB_POOL_MODE=queue and"
            " DB_THROUGH_PGBOUNCER=false, which with DB_POOL=queue mean DB_STATEMENT_CACHE=true",
        ),
    ],
)
def test_old_and_new_names_that_disagree_are_refused(
    monkeypatch: pytest.MonkeyPatch, variables: str, message: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        settings_from(monkeypatch, variables)


@pytest.mark.parametrize(
    "variable",
    [
        "DB_POOL=pooled",
        "DB_STATEMENT_CACHE=sometimes",
        "DB_POOL_MODE=nul",
        "DB_THROUGH_PGBOUNCER=maybe",
        "PGBOUNCER_PREPARED_STATEMENTS=200",
    ],
)
def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    name = variable.split("=")[0]
    with pytest.raises(ValidationError, match=f"(?i){name}\n"):
        settings_from(monkeypatch, variable)


def test_the_deprecated_names_are_no_settings_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(monkeypatch, "DB_POOL_MODE=null")

    assert settings.model_dump().keys() == {name.lower() for name in setting_fields()}
    assert "deprecated" not in repr(settings)
    assert (settings.db_pool, settings.db_statement_cache) == ("null", False)
