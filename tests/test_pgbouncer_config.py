"""The one PgBouncer configuration (api/pgbouncer.py): what the template writes for a PgBouncer
that tracks prepared statements and for one that does not, and the app's statement cache that
goes with each (DB_STATEMENT_CACHE)."""

import asyncio
import configparser
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

import devstack
from api import pgbouncer
from api.core.config import Settings
from api.core.db import build_engine
from tests.support.app import settings_for_tests
from tests.support.database import Database, scalar
from tests.support.live_server import live_admin, serving
from tests.support.pgbouncer import running_pgbouncer
from tests.support.postgres_server import database_backend

COMPOSE_LIKE_URL = "postgresql+asyncpg://storefront:s3cret@db:5432/storefront"


def config(**overrides: object) -> pgbouncer.PgBouncerConfig:
    values: dict[str, object] = {
        "listen_addr": "127.0.0.1",
        "listen_port": 6432,
        "server_host": "127.0.0.1",
        "server_port": 5432,
        "auth_file": Path("/run/userlist.txt"),
    }
    return pgbouncer.PgBouncerConfig(**(values | overrides))  # type: ignore[arg-type]


def settings_of(ini: str) -> dict[str, str]:
    parser = configparser.ConfigParser(comment_prefixes=(";",), interpolation=None)
    parser.read_string(ini)
    return dict(parser["pgbouncer"])


class TestRender:
    def test_an_old_pgbouncer_gets_no_max_prepared_statements_key(self) -> None:
        ini = pgbouncer.render(config(max_prepared_statements=None))
        assert "max_prepared_statements" not in settings_of(ini)

    @pytest.mark.parametrize("value", [0, 200])
    def test_a_pgbouncer_that_knows_the_key_gets_it_explicitly(self, value: int) -> None:
        ini = pgbouncer.render(config(max_prepared_statements=value))
        assert settings_of(ini)["max_prepared_statements"] == str(value)

    def test_a_negative_count_is_refused(self) -> None:
        with pytest.raises(ValueError, match="0 \\(off\\) or more"):
            pgbouncer.render(config(max_prepared_statements=-1))

    def test_the_tuning_every_path_shares(self) -> None:
        values = settings_of(pgbouncer.render(config()))
        assert values["pool_mode"] == "transaction"
        assert values["server_login_retry"] == "1"
        assert values["auth_type"] == "scram-sha-256"
        assert values["auth_file"] == "/run/userlist.txt"
        assert values["pidfile"] == values["logfile"] == ""

    def test_userlist_quotes_both_fields(self) -> None:
        assert pgbouncer.userlist('a"b', "p w") == '"a""b" "p w"\n'


class TestVersion:
    @pytest.mark.parametrize(
        ("output", "version"),
        [
            ("PgBouncer 1.18.0\nlibevent 2.1.12-stable\n", (1, 18, 0)),
            ("PgBouncer 1.25.1", (1, 25, 1)),
            ("PgBouncer 1.21", (1, 21, 0)),
        ],
    )
    def test_parsed_from_the_version_output(self, output: str, version: tuple[int, ...]) -> None:
        assert pgbouncer.parse_version(output) == version

    def test_anything_else_is_refused(self) -> None:
        with pytest.raises(ValueError, match="not a PgBouncer version"):
            pgbouncer.parse_version("bash: pgbouncer: command not found")

    def test_tracking_starts_at_1_21(self) -> None:
        assert not pgbouncer.tracks_prepared_statements((1, 18, 0))
        assert not pgbouncer.tracks_prepared_statements((1, 20, 1))
        assert pgbouncer.tracks_prepared_statements((1, 21, 0))
        assert pgbouncer.tracks_prepared_statements((2, 0))


class TestContainerConfig:
    """`pgbouncer.write_for_container`, as compose.yaml's db-setup job calls it (the job itself,
    roles included, runs against PostgreSQL in tests/test_dbroles.py)."""

    def test_renders_the_server_from_the_direct_url_and_the_login_with_its_secret(
        self, tmp_path: Path
    ) -> None:
        ini = pgbouncer.write_for_container(
            tmp_path,
            server_url=COMPOSE_LIKE_URL,
            user="storefront_app",
            secret="SCRAM-SHA-256$16:c2FsdA==$c3RvcmVk:c2VydmVy",
            listen_port=6432,
            auth_file=Path("/etc/pgbouncer/userlist.txt"),
            max_prepared_statements=200,
            default_pool_size=20,
            max_client_conn=500,
        )

        values = settings_of(ini.read_text())
        assert values["listen_addr"] == "0.0.0.0"
        assert values["listen_port"] == "6432"
        assert values["auth_file"] == "/etc/pgbouncer/userlist.txt"
        assert values["max_prepared_statements"] == "200"
        assert "host=db port=5432" in ini.read_text()
        userlist = tmp_path / "userlist.txt"
        assert userlist.read_text() == (
            '"storefront_app" "SCRAM-SHA-256$16:c2FsdA==$c3RvcmVk:c2VydmVy"\n'
        )
        assert userlist.stat().st_mode & 0o777 == 0o600
        assert ini.stat().st_mode & 0o777 == 0o644

    def test_a_url_without_a_host_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="needs a host"):
            pgbouncer.write_for_container(
                tmp_path,
                server_url="postgresql+asyncpg://storefront:s3cret@/storefront",
                user="storefront_app",
                secret="x",
                listen_port=6432,
                auth_file=tmp_path / "userlist.txt",
                max_prepared_statements=None,
                default_pool_size=20,
                max_client_conn=500,
            )


async def named_statements_after_repeats(database_url: str, settings: Settings) -> int:
    """Prepared statements left on one direct connection after a statement ran three times."""
    engine = build_engine(settings, url=database_url)
    try:
        async with engine.connect() as connection:
            for i in range(3):
                await connection.execute(text("SELECT count(*) FROM users WHERE id > :i"), {"i": i})
            found = await connection.scalar(text("SELECT count(*) FROM pg_prepared_statements"))
            return int(found or 0)
    finally:
        await engine.dispose()


async def test_the_statement_cache_leaves_named_statements_only_when_on(
    database: Database,
) -> None:
    off = settings_for_tests(db_pool="null", db_statement_cache=False)
    on = settings_for_tests(db_pool="null", db_statement_cache=True)
    assert await named_statements_after_repeats(database.url, off) == 0
    assert await named_statements_after_repeats(database.url, on) > 0


async def test_the_deprecated_names_still_decide_the_statement_cache(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DB_POOL_MODE=null alone means PgBouncer without tracking: no cache; with
    PGBOUNCER_PREPARED_STATEMENTS=true, the cache."""
    monkeypatch.setenv("DB_POOL_MODE", "null")
    assert await named_statements_after_repeats(database.url, settings_for_tests()) == 0
    monkeypatch.setenv("PGBOUNCER_PREPARED_STATEMENTS", "true")
    assert await named_statements_after_repeats(database.url, settings_for_tests()) > 0


@pytest.fixture
def installed_version() -> tuple[int, ...]:
    binary = devstack.pgbouncer_binary()
    if binary is None:
        pytest.fail(devstack.PGBOUNCER_INSTALL_HINT, pytrace=False)
    return devstack.pgbouncer_version(binary)


@pytest.fixture
def tracking_pgbouncer(
    postgres_server: str, installed_version: tuple[int, ...]
) -> Iterator[devstack.PgBouncer | None]:
    """PgBouncer with max_prepared_statements when the installed one has it; None when not."""
    if not pgbouncer.tracks_prepared_statements(installed_version):
        yield None
        return
    tracking = pgbouncer.DEFAULT_MAX_PREPARED_STATEMENTS
    with running_pgbouncer(postgres_server, max_prepared_statements=tracking) as bouncer:
        yield bouncer


@pytest.mark.pgbouncer
@pytest.mark.concurrent
async def test_prepared_statements_where_the_installed_pgbouncer_allows_them(
    tracking_pgbouncer: devstack.PgBouncer | None,
    installed_version: tuple[int, ...],
    committed: Database,
    tmp_path: Path,
) -> None:
    """With a PgBouncer >= 1.21 (a CI runner's): a burst through uvicorn with the statement
    cache on, over two server connections, and no error. With an older one (Debian 12's 1.18):
    it refuses the key, which is why the template leaves it out, and devstack says so first."""
    if tracking_pgbouncer is None:
        with pytest.raises(devstack.DevStackError, match="does not track prepared statements"):
            devstack.PgBouncer(
                tmp_path / "refused", server_port=1, password="x", max_prepared_statements=200
            ).start()
        ini = tmp_path / "raw.ini"
        ini.write_text(
            pgbouncer.render(
                config(
                    listen_port=devstack.free_port(),
                    auth_file=tmp_path / "users.txt",
                    max_prepared_statements=200,
                )
            )
        )
        binary = devstack.pgbouncer_binary()
        assert binary is not None
        raw = await asyncio.to_thread(
            subprocess.run, [binary, str(ini)], capture_output=True, text=True, timeout=10
        )
        assert raw.returncode != 0
        assert "unknown parameter: pgbouncer/max_prepared_statements" in raw.stdout + raw.stderr
        return

    tracking = {"DB_STATEMENT_CACHE": "true"}
    with serving(committed, tracking_pgbouncer, tmp_path, **tracking) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            admin = await live_admin(client, committed.url)
            responses = await asyncio.gather(
                *(
                    client.get("/users/", params={"page": 1, "size": 5}, headers=admin)
                    for _ in range(40)
                ),
                *(client.get("/health/ready") for _ in range(40)),
            )
    assert [r.status_code for r in responses] == [200] * 80, installed_version


@pytest.mark.pgbouncer
async def test_the_auth_file_holds_the_servers_scram_secret_not_the_password(
    pgbouncer: devstack.PgBouncer, postgres_server: str
) -> None:
    """PgBouncer 1.18 derives the secret from a plain password at every login (about 11 ms of
    its one thread: make bench); with the server's secret it checks the proof directly. Every
    test through PgBouncer logs in with it. On the embedded cluster the secret has its few
    rounds (devstack.SCRAM_ITERATIONS), which the app's driver then pays at each connect; a
    testcontainers or TEST_DATABASE_URL server keeps its own."""
    secret = await scalar(
        postgres_server, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", pgbouncer.user
    )
    users = (pgbouncer.run_dir / "userlist.txt").read_text()
    assert users == f'"{pgbouncer.user}" "{secret}"\n'
    assert pgbouncer.password not in users
    if database_backend() == "embedded":
        assert secret.startswith(f"SCRAM-SHA-256${devstack.SCRAM_ITERATIONS}:")
