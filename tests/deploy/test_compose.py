"""compose.yaml's wiring, read without a Docker engine: the compose specification's schema,
the services and their order, the API through PgBouncer and the migrations straight to the
database, healthchecks, the data volume, the environment's names, and PgBouncer's
configuration rendered from the shared template exactly as the pgbouncer-config job does."""

import configparser
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from api import pgbouncer
from api.__main__ import main
from tests.deploy.helpers import (
    APP_UID,
    SETTINGS,
    check_jsonschema,
    compose,
    compose_variables,
    interpolate,
)
from tests.helpers import ROOT

SERVICES = {"db", "pgbouncer-config", "pgbouncer", "migrate", "api"}
APP_SERVICES = {"pgbouncer-config", "migrate", "api"}  # the app image, its settings


def service(name: str) -> dict[str, Any]:
    found: dict[str, Any] = compose()["services"][name]
    return found


def environment(name: str) -> dict[str, str]:
    return {key: interpolate(str(value)) for key, value in service(name)["environment"].items()}


def depends_on(name: str) -> dict[str, str]:
    return {dep: spec["condition"] for dep, spec in service(name)["depends_on"].items()}


def test_valid_against_the_compose_specification() -> None:
    result = check_jsonschema("vendor.compose-spec", ROOT / "compose.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_services() -> None:
    assert set(compose()["services"]) == SERVICES


def test_start_order_waits_for_health_and_completion() -> None:
    assert depends_on("pgbouncer") == {
        "pgbouncer-config": "service_completed_successfully",
        "db": "service_healthy",
    }
    assert depends_on("migrate") == {"db": "service_healthy"}
    assert depends_on("api") == {
        "migrate": "service_completed_successfully",
        "pgbouncer": "service_healthy",
    }


@pytest.mark.parametrize("name", ["db", "pgbouncer", "api"])
def test_long_running_services_have_healthchecks(name: str) -> None:
    check = service(name)["healthcheck"]
    assert check["test"][0] == "CMD"
    assert service(name)["restart"] == "unless-stopped"


def test_the_api_is_healthy_only_when_ready() -> None:
    assert any("/health/ready" in part for part in service("api")["healthcheck"]["test"])


@pytest.mark.parametrize("name", ["pgbouncer-config", "migrate"])
def test_one_shot_jobs_are_not_restarted_nor_health_checked(name: str) -> None:
    assert service(name)["restart"] == "no"
    assert service(name)["healthcheck"] == {"disable": True}


def test_postgres_18_keeps_its_data_in_a_named_volume_at_the_18_mount_point() -> None:
    db = service("db")
    assert re.fullmatch(r"postgres:18(\.\d+)?(-[a-z0-9]+)?", db["image"])
    volume, target = db["volumes"][0].split(":")
    assert target == "/var/lib/postgresql"  # the 18 images refuse /var/lib/postgresql/data
    assert volume in compose()["volumes"]
    assert not any("/var/lib/postgresql/data" in mount for mount in db["volumes"])


def test_the_api_goes_through_pgbouncer_on_nullpool_with_its_statement_cache() -> None:
    env = environment("api")
    url = make_url(env["DATABASE_URL"])
    assert (url.host, url.port) == ("pgbouncer", 6432)
    assert env["DB_POOL_MODE"] == "null"
    assert env["PGBOUNCER_PREPARED_STATEMENTS"] == "true"
    assert "MIGRATIONS_DATABASE_URL" not in env  # the API knows only PgBouncer
    assert service("api")["ports"] == ["${API_ADDRESS:-127.0.0.1}:${API_PORT:-8000}:8000"]


def test_migrations_go_straight_to_the_database() -> None:
    migrate = service("migrate")
    assert migrate["command"] == ["alembic", "upgrade", "head"]
    env = environment("migrate")
    url = make_url(env["MIGRATIONS_DATABASE_URL"])
    assert (url.host, url.port) == ("db", 5432)
    assert "DATABASE_URL" not in env


def test_every_url_names_the_database_and_owner_db_creates() -> None:
    db = environment("db")
    urls = [environment("api")["DATABASE_URL"]]
    urls += [
        environment(name)["MIGRATIONS_DATABASE_URL"] for name in ("migrate", "pgbouncer-config")
    ]
    for url in map(make_url, urls):
        assert url.username == db["POSTGRES_USER"]
        assert url.password == db["POSTGRES_PASSWORD"]
        assert url.database == db["POSTGRES_DB"]


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_app_services_use_the_image_and_settings_names(name: str) -> None:
    app = service(name)
    assert app["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile"}
    assert app["env_file"] == [{"path": ".env", "required": False}]
    assert set(app["environment"]) <= SETTINGS


def test_every_interpolated_variable_is_a_setting_or_documented() -> None:
    example = (ROOT / ".env.example").read_text()
    compose_only = set(re.findall(r"^#\s+([A-Z][A-Z0-9_]*): ", example, flags=re.MULTILINE))
    assert compose_variables() - SETTINGS - compose_only == set()
    assert compose_only <= compose_variables()  # nothing documented that compose does not read


def test_no_secret_but_marked_development_defaults() -> None:
    text = (ROOT / "compose.yaml").read_text()
    for name in SERVICES:  # SECRET_KEY comes from .env; development accepts the placeholder
        assert "SECRET_KEY" not in service(name).get("environment", {})
    for line in text.splitlines():
        if ":-" in line and "ENVIRONMENT" in line:
            assert "development" in line
    defaults = set(re.findall(r"\$\{POSTGRES_PASSWORD:-([^}]*)\}", text))
    assert defaults == {"storefront-dev-password"}
    password_line = next(line for line in text.splitlines() if "POSTGRES_PASSWORD:" in line)
    assert "# development default" in password_line


def test_pgbouncer_is_a_version_that_tracks_prepared_statements() -> None:
    image = service("pgbouncer")["image"]
    tag = image.rsplit(":", 1)[1]
    version = tuple(int(part) for part in tag.split("-")[0].split("."))
    assert pgbouncer.tracks_prepared_statements(version), image


def test_pgbouncer_runs_unprivileged_as_the_owner_of_its_rendered_files() -> None:
    assert service("pgbouncer")["user"] == f"{APP_UID}:{APP_UID}"


def rendered_by_the_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the pgbouncer-config job's command in-process, into a temporary directory."""
    job = service("pgbouncer-config")
    command = list(job["command"])
    assert command[:4] == ["python", "-m", "api", "pgbouncer-config"]
    out = command.index("--out") + 1
    [mount] = job["volumes"]
    assert mount == f"pgbouncer-config:{command[out]}"
    command[out] = str(tmp_path)
    monkeypatch.setenv(
        "MIGRATIONS_DATABASE_URL", environment("pgbouncer-config")["MIGRATIONS_DATABASE_URL"]
    )
    assert main(command[3:]) == 0
    return (tmp_path / "pgbouncer.ini").read_text()


def test_pgbouncer_reads_the_template_rendered_by_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ini = rendered_by_the_job(tmp_path, monkeypatch)
    parser = configparser.ConfigParser(comment_prefixes=(";",), interpolation=None)
    parser.read_string(ini)
    settings = parser["pgbouncer"]

    bouncer = service("pgbouncer")
    assert bouncer["volumes"] == [
        {
            "type": "volume",
            "source": "pgbouncer-config",
            "target": "/etc/pgbouncer",
            "read_only": True,
            "volume": {"nocopy": True},
        }
    ]
    assert bouncer["entrypoint"] == ["/usr/bin/pgbouncer", "/etc/pgbouncer/pgbouncer.ini"]
    assert Path(settings["auth_file"]).parent == Path("/etc/pgbouncer")
    assert parser["databases"]["*"] == "host=db port=5432"
    assert settings["pool_mode"] == "transaction"
    assert settings["server_login_retry"] == "1"
    # The port the API dials, the port PgBouncer listens on, the port its healthcheck asks.
    api_port = make_url(environment("api")["DATABASE_URL"]).port
    assert settings["listen_port"] == str(api_port)
    assert str(api_port) in bouncer["healthcheck"]["test"]
    # Tracking on in PgBouncer exactly when the API keeps its statement cache.
    assert int(settings["max_prepared_statements"]) > 0
    assert environment("api")["PGBOUNCER_PREPARED_STATEMENTS"] == "true"
