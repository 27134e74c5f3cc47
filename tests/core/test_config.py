"""Settings: every field documented in .env.example, and unsafe configurations refused."""

import re
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from api.core.config import PLACEHOLDER_SECRET_KEY, Settings
from tests.helpers import ROOT, SECRET_KEY, settings_for_tests


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
    fields = {name.upper() for name in Settings.model_fields}

    assert fields - documented.keys() == set(), "settings missing from .env.example"
    assert documented.keys() - fields == set(), ".env.example documents unknown settings"


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

    for name, field in Settings.model_fields.items():
        assert documented[name.upper()] == as_env(field.default), name


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
    direct = settings_for_tests(db_pool_mode="queue")
    assert direct.direct_database_url == direct.database_url

    pooled = settings_for_tests(db_pool_mode="null")
    with pytest.raises(ValueError, match="MIGRATIONS_DATABASE_URL is required"):
        _ = pooled.direct_database_url

    explicit = settings_for_tests(
        db_pool_mode="null",
        migrations_database_url="postgresql+asyncpg://u:p@db:5432/storefront",
    )
    assert explicit.direct_database_url == "postgresql+asyncpg://u:p@db:5432/storefront"


@pytest.mark.parametrize(
    "url", ["sqlite:///app.db", "postgresql://u:p@h/db", "postgresql+psycopg://u:p@h/db"]
)
def test_only_asyncpg_postgres_urls(url: str) -> None:
    with pytest.raises(ValidationError, match="postgresql\\+asyncpg"):
        settings_for_tests(database_url=url)


def test_cors_origins_from_a_comma_separated_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example, https://b.example")
    assert settings_for_tests().cors_origins == ["https://a.example", "https://b.example"]
