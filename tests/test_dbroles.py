"""The database roles of a deployment against real PostgreSQL: compose's db-setup job (an owner,
and an app role with a cheap SCRAM secret that PgBouncer's auth file carries), and the grants the
migrations give the app role (rows of every table, present and future; never the schema)."""

import asyncio
import re
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import httpx
import pytest

from api import dbroles
from api.__main__ import main
from api.dbroles import Login
from tests.support.database import Database, admin_execute, libpq_url, query, scalar
from tests.support.deploy import db_setup_ran

pytestmark = pytest.mark.concurrent  # roles and databases of its own, committed


def roles_of(db: Database) -> tuple[Login, Login]:
    assert db.owner is not None
    assert db.app is not None
    return db.owner, db.app


async def connect(db: Database, login: Login) -> asyncpg.Connection:
    return await asyncpg.connect(libpq_url(db.url_as(login)))


async def test_the_app_role_has_a_cheap_secret_and_the_owner_the_default(
    concurrent_database: Database,
) -> None:
    owner, app = roles_of(concurrent_database)
    rows = await query(
        concurrent_database.url,
        "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolpassword FROM pg_authid"
        " WHERE rolname = ANY($1::text[])",
        [owner.role, app.role],
    )
    found = {row["rolname"]: row for row in rows}
    assert found[app.role]["rolpassword"] == concurrent_database.app_secret
    assert found[app.role]["rolpassword"].startswith("SCRAM-SHA-256$16:")
    assert found[owner.role]["rolpassword"].startswith("SCRAM-SHA-256$4096:")
    for row in rows:
        assert not row["rolsuper"]
        assert not row["rolcreaterole"]
        assert not row["rolcreatedb"]
    database_owner = await scalar(
        concurrent_database.url,
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1",
        concurrent_database.name,
    )
    assert database_owner == owner.role

    connection = await connect(concurrent_database, app)
    try:
        assert await connection.fetchval("SELECT current_user") == app.role
    finally:
        await connection.close()


async def test_the_app_role_reads_and_writes_rows_and_nothing_else(
    concurrent_database: Database,
) -> None:
    _, app = roles_of(concurrent_database)
    connection = await connect(concurrent_database, app)
    try:
        async with connection.transaction():
            await connection.execute("INSERT INTO tags (name, slug) VALUES ('granted', 'granted')")
            assert await connection.fetchval("SELECT count(*) FROM tags WHERE slug = 'granted'")
            await connection.execute(
                "UPDATE tags SET name = 'still granted' WHERE slug = 'granted'"
            )
            await connection.execute("DELETE FROM tags WHERE slug = 'granted'")
        refused = [
            "CREATE TABLE intruder (id int)",
            "ALTER TABLE products ADD COLUMN intruder int",
            "DROP TABLE tags",
            "TRUNCATE tags",
            "SELECT * FROM alembic_version",
            "UPDATE alembic_version SET version_num = 'x'",
            "SELECT rolpassword FROM pg_authid",
        ]
        for statement in refused:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await connection.execute(statement)
    finally:
        await connection.close()


async def test_a_table_a_later_migration_adds_is_the_app_roles_to_use(
    make_production_database: Callable[[str], Awaitable[Database]],
) -> None:
    """A migration is the owner's DDL: whatever table it adds, the app role may use at once."""
    db = await make_production_database("later")
    owner, app = roles_of(db)
    as_owner = await connect(db, owner)
    try:
        await as_owner.execute("CREATE TABLE later_table (id bigserial PRIMARY KEY, note text)")
    finally:
        await as_owner.close()
    as_app = await connect(db, app)
    try:
        await as_app.execute("INSERT INTO later_table (note) VALUES ('written by the app')")
        assert await as_app.fetchval("SELECT note FROM later_table") == "written by the app"
    finally:
        await as_app.close()


async def test_the_live_server_logs_in_as_the_app_role(
    live_server: str, concurrent_database: Database
) -> None:
    _, app = roles_of(concurrent_database)
    async with httpx.AsyncClient(base_url=live_server, timeout=30) as http:
        assert (await http.get("/products/")).status_code == 200
    rows = await query(
        concurrent_database.url,
        "SELECT DISTINCT usename FROM pg_stat_activity"
        " WHERE datname = $1 AND backend_type = 'client backend'",
        concurrent_database.name,
    )
    assert app.role in {row["usename"] for row in rows}


async def test_the_db_setup_job_makes_the_roles_and_pgbouncer_s_auth_file(
    make_database: Callable[[str], Awaitable[Database]], tmp_path: Path
) -> None:
    """compose's db-setup job, its own command line: the roles, the app role's secret in
    PgBouncer's auth file; run again with a new password (a rotation), the old one is refused."""
    async with db_setup_ran(await make_database("setup"), tmp_path) as setup:
        db, app = setup.database, setup.app
        secret_sql = "SELECT rolpassword FROM pg_authid WHERE rolname = $1"
        secret = await scalar(db.url, secret_sql, app.role)
        assert (tmp_path / "userlist.txt").read_text() == f'"{app.role}" "{secret}"\n'
        assert secret.startswith("SCRAM-SHA-256$16:")
        (await connect(db, app)).terminate()
        (await connect(db, setup.owner)).terminate()

        # Run again as compose's `up` does, same passwords: nothing changes, so the PgBouncer
        # that runs on (with the secret in its auth file) keeps logging in to PostgreSQL.
        owner_secret = await scalar(db.url, secret_sql, setup.owner.role)
        await asyncio.to_thread(setup.run)
        assert await scalar(db.url, secret_sql, app.role) == secret
        assert await scalar(db.url, secret_sql, setup.owner.role) == owner_secret
        assert (tmp_path / "userlist.txt").read_text() == f'"{app.role}" "{secret}"\n'

        rotated = Login(app.role, dbroles.generate_password())
        await asyncio.to_thread(setup.run, rotated)
        with pytest.raises(asyncpg.InvalidPasswordError):
            await connect(db, app)
        (await connect(db, rotated)).terminate()
        new_secret = await scalar(db.url, secret_sql, app.role)
        assert new_secret != secret
        assert (tmp_path / "userlist.txt").read_text() == f'"{app.role}" "{new_secret}"\n'


def test_the_db_setup_job_names_what_it_misses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db-setup", "--pgbouncer-out", str(tmp_path)]) == 2
    assert "SUPERUSER_DATABASE_URL" in capsys.readouterr().err


def test_the_db_setup_job_refuses_a_read_url_of_another_role(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replica has the primary's roles, and db-setup makes only DATABASE_URL's: a read URL
    that logs in as another role (or with another password) could never log in."""
    server = "postgresql+asyncpg://{}@127.0.0.1:1/storefront"
    monkeypatch.setenv("SUPERUSER_DATABASE_URL", server.format("postgres:x"))
    monkeypatch.setenv("MIGRATIONS_DATABASE_URL", server.format("storefront:owner-password"))
    monkeypatch.setenv("DATABASE_URL", server.format("storefront_app:app-password"))
    for login in ("reader:app-password", "storefront_app:other-password"):
        monkeypatch.setenv("DATABASE_READ_URL", server.format(login).replace(":1/", ":2/"))
        assert main(["db-setup", "--pgbouncer-out", str(tmp_path)]) == 2
        assert "DATABASE_READ_URL must log in as DATABASE_URL's role" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


async def test_an_owner_that_is_a_superuser_is_refused(
    make_database: Callable[[str], Awaitable[Database]],
) -> None:
    """A compose volume made before the roles were split has the owner as its superuser:
    db-setup says so instead of stripping the bootstrap superuser of its rights."""
    db = await make_database("superowner")
    owner = Login(f"super_owner_{secrets.token_hex(4)}", dbroles.generate_password())
    await admin_execute(db.server_url, f'CREATE ROLE "{owner.role}" SUPERUSER LOGIN')
    try:
        app = Login(f"app_{secrets.token_hex(4)}", dbroles.generate_password())
        with pytest.raises(ValueError, match="is a superuser here"):
            await dbroles.ensure_roles(db.url, owner=owner, app=app)
        assert await query(db.url, "SELECT 1 FROM pg_roles WHERE rolname = $1", app.role) == []
    finally:
        await admin_execute(db.server_url, f'DROP ROLE "{owner.role}"')


async def test_the_app_role_is_never_the_owner() -> None:
    same = Login("storefront", "x" * 43)
    with pytest.raises(ValueError, match="must not be the owner"):
        await dbroles.ensure_roles("postgresql+asyncpg://postgres:x@db/s", owner=same, app=same)


async def test_the_kubernetes_secret_pair_logs_in(
    concurrent_database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m api app-role-password`: the SCRAM secret (the operator's Secret) set as the
    role's password lets the password (the API's Secret) log in."""
    assert main(["app-role-password"]) == 0
    printed = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    password = printed["STOREFRONT_APP_PASSWORD"]
    secret = printed["STOREFRONT_APP_SCRAM_SECRET"].strip("'")
    assert secret.startswith(f"SCRAM-SHA-256${dbroles.APP_ROLE_SCRAM_ITERATIONS}:")
    role = f"k8s_app_{secrets.token_hex(4)}"
    await admin_execute(
        concurrent_database.url,
        f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{secret}'",
        f'GRANT CONNECT ON DATABASE "{concurrent_database.name}" TO "{role}"',
        database=None,
    )
    try:
        connection = await connect(concurrent_database, Login(role, password))
        assert await connection.fetchval("SELECT current_user") == role
        await connection.close()
        with pytest.raises(asyncpg.InvalidPasswordError):
            await connect(concurrent_database, Login(role, secret))
    finally:
        await admin_execute(
            concurrent_database.url,
            f'REVOKE ALL ON DATABASE "{concurrent_database.name}" FROM "{role}"',
            f'DROP ROLE "{role}"',
            database=None,
        )


def test_compose_env_is_production_with_distinct_random_secrets() -> None:
    values = dict(
        line.split("=", 1)
        for line in dbroles.compose_env().splitlines()
        if line and not line.startswith("#")
    )
    passwords = ["POSTGRES_PASSWORD", "STOREFRONT_OWNER_PASSWORD", "STOREFRONT_APP_PASSWORD"]
    assert values["ENVIRONMENT"] == "production"
    assert len(values["SECRET_KEY"]) >= 64
    assert len({values[name] for name in passwords}) == 3
    for name in passwords:  # 32 random bytes, and nothing a URL would have to escape
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", values[name])
