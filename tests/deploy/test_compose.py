"""compose.yaml's wiring, read without a Docker engine: the compose specification's schema,
the services and their order, the three roles (superuser for db-setup only, owner for the
migrations, the app's role through PgBouncer), healthchecks, the data volume, one image built
once and run read-only, the environment's names, and PgBouncer's configuration rendered from the
shared template by the db-setup job's own command, run against PostgreSQL."""

import configparser
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from api import pgbouncer
from devstack.dockerfile import instructions
from tests.support.app import ROOT
from tests.support.database import Database
from tests.support.deploy import (
    APP_UID,
    SERVER_VARIABLES,
    SETTINGS,
    DbSetup,
    check_jsonschema,
    compose,
    compose_variables,
    db_setup_ran,
    interpolate,
)

SERVICES = {"db", "db-setup", "pgbouncer", "migrate", "api"}
APP_SERVICES = {"db-setup", "migrate", "api"}  # the app image, its settings
PASSWORDS = {"POSTGRES_PASSWORD", "STOREFRONT_OWNER_PASSWORD", "STOREFRONT_APP_PASSWORD"}


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
    assert depends_on("db-setup") == {"db": "service_healthy"}
    assert depends_on("pgbouncer") == {"db-setup": "service_completed_successfully"}
    assert depends_on("migrate") == {"db-setup": "service_completed_successfully"}
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


@pytest.mark.parametrize("name", ["db-setup", "migrate"])
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
    assert env["DB_POOL"] == "null"
    assert env["DB_STATEMENT_CACHE"] == "true"
    assert "MIGRATIONS_DATABASE_URL" not in env  # the API knows only PgBouncer
    assert url.username == "storefront_app"
    assert service("api")["ports"] == ["${API_ADDRESS:-127.0.0.1}:${API_PORT:-8000}:8000"]


def test_the_api_trusts_forwarded_client_addresses_from_loopback_unless_told() -> None:
    assert environment("api")["FORWARDED_ALLOW_IPS"] == "127.0.0.1"
    assert "FORWARDED_ALLOW_IPS" in compose_variables()


def test_migrations_go_straight_to_the_database_as_the_owner_and_grant_the_app_role() -> None:
    migrate = service("migrate")
    assert migrate["command"] == ["alembic", "upgrade", "head"]
    env = environment("migrate")
    url = make_url(env["MIGRATIONS_DATABASE_URL"])
    assert (url.host, url.port) == ("db", 5432)
    assert "DATABASE_URL" not in env
    assert env["DB_APP_ROLE"] == make_url(environment("api")["DATABASE_URL"]).username


def test_three_roles_each_with_a_password_of_its_own() -> None:
    """The superuser (db's) reaches db-setup only; db-setup makes the owner the migrations run
    as and the app's role the API logs in as, from the very URLs those services use."""
    db, setup = environment("db"), environment("db-setup")
    superuser = make_url(setup["SUPERUSER_DATABASE_URL"])
    owner = make_url(environment("migrate")["MIGRATIONS_DATABASE_URL"])
    app = make_url(environment("api")["DATABASE_URL"])
    assert (superuser.username, superuser.password) == (
        db["POSTGRES_USER"],
        db["POSTGRES_PASSWORD"],
    )
    assert (superuser.host, superuser.port) == ("db", 5432)
    assert make_url(setup["MIGRATIONS_DATABASE_URL"]) == owner
    assert make_url(setup["DATABASE_URL"]) == app
    assert len({superuser.username, owner.username, app.username}) == 3
    assert len({superuser.password, owner.password, app.password}) == 3
    assert {superuser.database, owner.database, app.database} == {db["POSTGRES_DB"]}
    for name in SERVICES - {"db", "db-setup"}:
        assert "SUPERUSER_DATABASE_URL" not in service(name).get("environment", {})


def test_the_app_image_is_built_once_and_run_read_only() -> None:
    builders = [name for name in SERVICES if "build" in service(name)]
    assert builders == ["db-setup"]
    assert service("db-setup")["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile"}
    for name in APP_SERVICES:
        assert service(name)["image"] == service("db-setup")["image"]
        assert service(name)["read_only"] is True
        assert service(name)["tmpfs"] == ["/tmp"]
    assert service("pgbouncer")["read_only"] is True


def test_the_api_counts_its_metrics_on_its_tmpfs() -> None:
    """The image's PROMETHEUS_MULTIPROC_DIR lies on a tmpfs (the root is read-only)."""
    [env] = [args for name, args in instructions() if "PROMETHEUS_MULTIPROC_DIR=" in args]
    directory = Path(re.findall(r"PROMETHEUS_MULTIPROC_DIR=(\S+)", env)[0])
    assert any(directory.is_relative_to(mount) for mount in service("api")["tmpfs"])


def test_postgres_writes_only_to_its_volume_its_socket_directory_and_tmp() -> None:
    db = service("db")
    assert db["read_only"] is True
    assert db["tmpfs"] == ["/var/run/postgresql", "/tmp"]


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_app_services_use_the_settings_names(name: str) -> None:
    app = service(name)
    assert app["env_file"] == [{"path": ".env", "required": False}]
    job_only = {"SUPERUSER_DATABASE_URL"} if name == "db-setup" else set()
    server = SERVER_VARIABLES if name == "api" else set()
    assert set(app["environment"]) <= SETTINGS | job_only | server | PASSWORDS
    # The roles' passwords reach the app containers only inside the URLs they need.
    assert {key: app["environment"][key] for key in PASSWORDS} == dict.fromkeys(PASSWORDS, "")


def test_every_interpolated_variable_is_a_setting_or_documented() -> None:
    example = (ROOT / ".env.example").read_text()
    compose_only = set(re.findall(r"^#\s+([A-Z][A-Z0-9_]*): ", example, flags=re.MULTILINE))
    assert compose_variables() - SETTINGS - compose_only == set()
    assert compose_only <= compose_variables()  # nothing documented that compose does not read


def test_no_secret_but_marked_development_defaults() -> None:
    text = (ROOT / "compose.yaml").read_text()
    for name in SERVICES:  # SECRET_KEY comes from .env or the shell, never from a default
        assert service(name).get("environment", {}).get("SECRET_KEY") in {None, "${SECRET_KEY:-}"}
    for line in text.splitlines():
        if ":-" in line and "ENVIRONMENT" in line:
            assert "development" in line
    for password in PASSWORDS:
        uses = [line for line in text.splitlines() if f"${{{password}:-" in line]
        assert uses, password
        for line in uses:
            assert "# development default" in line
    defaults = re.findall(r"\$\{[A-Z_]*PASSWORD:-([^}]*)\}", text)
    assert len(set(defaults)) == len(PASSWORDS)
    assert all(default.startswith("storefront-dev-") for default in defaults)


def test_pgbouncer_is_a_version_that_tracks_prepared_statements() -> None:
    image = service("pgbouncer")["image"]
    tag = image.rsplit(":", 1)[1]
    version = tuple(int(part) for part in tag.split("-")[0].split("."))
    assert pgbouncer.tracks_prepared_statements(version), image


def test_pgbouncer_runs_unprivileged_as_the_owner_of_its_rendered_files() -> None:
    assert service("pgbouncer")["user"] == f"{APP_UID}:{APP_UID}"


@pytest.fixture
async def rendered_by_the_job(
    make_database: Callable[[str], Awaitable[Database]], tmp_path: Path
) -> AsyncIterator[tuple[str, DbSetup]]:
    """pgbouncer.ini as the db-setup job's own command renders it, run against PostgreSQL."""
    database = await make_database("compose_job")
    async with db_setup_ran(database, tmp_path) as setup:
        yield (tmp_path / "pgbouncer.ini").read_text(), setup


def test_pgbouncer_reads_the_template_rendered_by_the_job(
    rendered_by_the_job: tuple[str, DbSetup],
) -> None:
    ini, setup = rendered_by_the_job
    job = service("db-setup")
    out = job["command"][job["command"].index("--pgbouncer-out") + 1]
    assert job["volumes"] == [f"pgbouncer-config:{out}"]
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
    # The server is MIGRATIONS_DATABASE_URL's (compose's: db:5432; the test server's here).
    server = make_url(setup.database.url)
    assert parser["databases"]["*"] == f"host={server.host} port={server.port}"
    assert settings["pool_mode"] == "transaction"
    assert settings["server_login_retry"] == "1"
    # The port the API dials, the port PgBouncer listens on, the port its healthcheck asks.
    api_port = make_url(environment("api")["DATABASE_URL"]).port
    assert settings["listen_port"] == str(api_port)
    assert str(api_port) in bouncer["healthcheck"]["test"]
    # Tracking on in PgBouncer exactly when the API keeps its statement cache.
    assert int(settings["max_prepared_statements"]) > 0
    assert environment("api")["DB_STATEMENT_CACHE"] == "true"
