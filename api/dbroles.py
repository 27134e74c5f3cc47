"""The database roles of a deployment, and what each may do.

Three roles, so that the process serving the internet cannot change the schema:
- a superuser (the server's own, compose's `postgres`), used only to create the two below;
- the owner, which owns the database and its schema: the migrations run as it;
- the app's role, which logs in through PgBouncer and may only read and write rows.

The app's role gets a generated password (32 random bytes). Key stretching protects a password a
person chose from offline guessing; a random 256-bit secret needs none, and on NullPool every
request is a login that pays the stretching twice (the client computes its proof; PgBouncer checks
it). So its SCRAM secret is made with `APP_ROLE_SCRAM_ITERATIONS` rounds, while roles people use
keep PostgreSQL's 4096. The secret is computed here and sent as such (PostgreSQL stores a SCRAM
secret it is given as it is): no password crosses the wire or reaches a server log, and the same
secret goes into PgBouncer's auth file, where it lets PgBouncer check a login without deriving a
key (see deploy/pgbouncer and docs).

`python -m api db-setup` (compose's one-shot `db-setup` job) calls `ensure_roles`; the migrations
call `grant_app_role` as the owner after every upgrade, so every table, present and future, is
granted to the app's role and no migration can forget it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

APP_ROLE_SCRAM_ITERATIONS = 16
PEOPLE_SCRAM_ITERATIONS = 4096  # PostgreSQL's default, for the owner's password
GENERATED_PASSWORD_BYTES = 32


def generate_password() -> str:
    """32 random bytes, URL-safe (it goes into database URLs as it is)."""
    return secrets.token_urlsafe(GENERATED_PASSWORD_BYTES)


def compose_env() -> str:
    """A .env for docker compose outside a laptop: production, and every secret random."""
    return (
        "# Written by `make compose-env`: secrets for compose.yaml. Keep this file private.\n"
        "ENVIRONMENT=production\n"
        f"SECRET_KEY={secrets.token_urlsafe(48)}\n"
        f"POSTGRES_PASSWORD={generate_password()}\n"
        f"STOREFRONT_OWNER_PASSWORD={generate_password()}\n"
        f"STOREFRONT_APP_PASSWORD={generate_password()}\n"
    )


def scram_secret(password: str, *, iterations: int, salt: bytes | None = None) -> str:
    """PostgreSQL's SCRAM-SHA-256 secret for `password` (RFC 5802 and 7677, in pg_authid's
    format). scramp, the Python SCRAM library, refuses fewer than 4096 iterations, which is the
    point here; the derivation is the RFC's few lines over hashlib."""
    if iterations < 1:
        raise ValueError("iterations must be 1 or more")
    salt = secrets.token_bytes(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


@dataclass(frozen=True)
class Login:
    """A role and its password, as a database URL carries them."""

    role: str
    password: str

    @classmethod
    def from_url(cls, url: str) -> Login:
        parsed = make_url(url)
        if not parsed.username or parsed.password is None:
            raise ValueError("the URL needs a user and a password")
        return cls(parsed.username, str(parsed.password))


async def _execute_formatted(connection: AsyncConnection, template: str, *args: str) -> None:
    """Run a utility statement (no bind parameters there) whose identifiers (%I) and literals
    (%L) PostgreSQL's own format() quotes."""
    params = {f"a{i}": arg for i, arg in enumerate(args)}
    placeholders = "".join(f", CAST(:a{i} AS text)" for i in range(len(args)))
    statement = await connection.scalar(text(f"SELECT format('{template}'{placeholders})"), params)
    await connection.exec_driver_sql(str(statement))


def matches(secret: str | None, password: str, iterations: int) -> bool:
    """Whether `secret` is the SCRAM secret of `password` with `iterations` rounds (its salt)."""
    found = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$[^:]+:.+", secret or "")
    if found is None or int(found[1]) != iterations:
        return False
    salt = base64.b64decode(found[2])
    return hmac.compare_digest(scram_secret(password, iterations=iterations, salt=salt), found[0])


async def _ensure_login(connection: AsyncConnection, login: Login, iterations: int) -> str:
    """The role with LOGIN and no other attribute; its SCRAM secret, kept when it already
    matches the password (a new salt would change the secret, and PgBouncer's copy with it)."""
    current = await connection.execute(
        text("SELECT rolpassword FROM pg_authid WHERE rolname = :role"), {"role": login.role}
    )
    row = current.first()
    if row is None:
        await _execute_formatted(connection, "CREATE ROLE %I", login.role)
    await _execute_formatted(
        connection,
        "ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS",
        login.role,
    )
    stored = row[0] if row is not None else None
    if matches(stored, login.password, iterations):
        return str(stored)
    secret = scram_secret(login.password, iterations=iterations)
    await _execute_formatted(connection, "ALTER ROLE %I PASSWORD %L", login.role, secret)
    return secret


async def ensure_roles(superuser_url: str, *, owner: Login, app: Login) -> str:
    """Create or update the owner and the app's role on the database of `superuser_url`, make
    the owner own that database, and let the app's role connect to it. Idempotent: the same
    password keeps its secret, a new one replaces it. Returns the app role's SCRAM secret (for
    PgBouncer)."""
    if owner.role == app.role:
        raise ValueError("the app's role must not be the owner")
    database = make_url(superuser_url).database
    if not database:
        raise ValueError("the superuser URL must name the app's database")
    engine = create_async_engine(superuser_url, poolclass=NullPool, hide_parameters=True)
    try:
        async with engine.begin() as connection:
            superuser = await connection.scalar(
                text("SELECT rolsuper FROM pg_roles WHERE rolname = :role"), {"role": owner.role}
            )
            if superuser:
                raise ValueError(
                    f"{owner.role} is a superuser here (a volume made before the roles were "
                    "split, when it was POSTGRES_USER): see CHANGELOG.md, 'Upgrading from 0.1.0'"
                )
            await _ensure_login(connection, owner, PEOPLE_SCRAM_ITERATIONS)
            app_secret = await _ensure_login(connection, app, APP_ROLE_SCRAM_ITERATIONS)
            await _execute_formatted(
                connection, "ALTER DATABASE %I OWNER TO %I", database, owner.role
            )
            # PostgreSQL 15 and later: public belongs to pg_database_owner, the owner above.
            await _execute_formatted(connection, "REVOKE ALL ON DATABASE %I FROM PUBLIC", database)
            await _execute_formatted(
                connection, "GRANT CONNECT ON DATABASE %I TO %I", database, app.role
            )
    finally:
        await engine.dispose()
    return app_secret


APP_ROLE_GRANTS = (
    "GRANT USAGE ON SCHEMA public TO {role}",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
    "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA public "
    "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {role}",
    # Alembic's bookkeeping is the migrations' own.
    "REVOKE ALL ON TABLE alembic_version FROM {role}",
)


def grant_app_role(connection: Connection, role: str) -> None:
    """Rows, not schema: what the app's role may do on every table the migrations (the owner)
    made or will make. Runs in the migrations' transaction."""
    quoted = connection.dialect.identifier_preparer.quote(role)
    for grant in APP_ROLE_GRANTS:
        connection.execute(text(grant.format(role=quoted)))
