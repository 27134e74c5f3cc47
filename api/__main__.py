"""The image's commands: `python -m api <command>` (development commands: `python -m devstack`).

serve             the server: uvicorn with the arguments that follow, once the metrics directory
                  (PROMETHEUS_MULTIPROC_DIR, when set) is empty, its own lines in the app's log
                  format (api/core/uvicorn_logging.json) and at LOG_LEVEL; uvicorn replaces
                  this process.
create-superuser  create (or promote) a superuser in the configured database, for deployments;
                  the password comes from FIRST_SUPERUSER_PASSWORD or is asked for.
db-setup          compose.yaml's one-shot job before PgBouncer and the migrations: as the superuser
                  (SUPERUSER_DATABASE_URL), create or update the owner (MIGRATIONS_DATABASE_URL's
                  login) and the app's role (DATABASE_URL's, which DATABASE_READ_URL's must be),
                  then render deploy/pgbouncer's template for a PgBouncer container with the
                  app role's SCRAM secret.
app-role-password print a new password for the app's role and its SCRAM secret (16 rounds), as
                  shell assignments: the Kubernetes Secrets of deploy/README.md.
compose-env       print a .env for docker compose: production, a random SECRET_KEY and random
                  passwords for its three database roles (`make compose-env` writes it, 0600).
"""

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import get_args

from pydantic_settings import BaseSettings

from api import dbroles, pgbouncer
from api.core.config import Settings

UVICORN_LOG_CONFIG = Path(__file__).parent / "core" / "uvicorn_logging.json"


def create_superuser(email: str, username: str) -> int:
    import asyncio
    import getpass

    from api.core.config import get_settings
    from api.core.db import build_engine, build_sessionmaker
    from api.users import service as user_service

    settings = get_settings()
    secret = settings.first_superuser_password
    password = secret.get_secret_value() if secret else getpass.getpass("Password: ")
    if len(password) < 8:
        print("The password needs 8 characters or more.", file=sys.stderr)
        return 2

    async def run() -> bool:
        engine = build_engine(settings)
        try:
            async with build_sessionmaker(engine)() as session, session.begin():
                _, created = await user_service.ensure_superuser(
                    session=session, email=email, username=username, password=password, promote=True
                )
            return created
        finally:
            await engine.dispose()

    created = asyncio.run(run())
    print(f"superuser {email}: {'created' if created else 'already there; now a superuser'}")
    return 0


def environment_url(name: str, meaning: str) -> str:
    url = os.environ.get(name)
    if not url:
        raise ValueError(f"{name} ({meaning}) is not set")
    return url


def db_setup(args: argparse.Namespace) -> int:
    import asyncio

    try:
        superuser = environment_url("SUPERUSER_DATABASE_URL", "the superuser's direct URL")
        direct = environment_url("MIGRATIONS_DATABASE_URL", "the owner's direct URL")
        app = dbroles.Login.from_url(environment_url("DATABASE_URL", "the app's URL"))
        owner = dbroles.Login.from_url(direct)
        read_url = os.environ.get("DATABASE_READ_URL")
        # A replica has the primary's roles (it copies the whole cluster), and only the app's is
        # made here: the read URL must log in as it.
        if read_url and dbroles.Login.from_url(read_url) != app:
            raise ValueError(
                f"DATABASE_READ_URL must log in as DATABASE_URL's role {app.role}, with its "
                "password: a replica has the roles made here, and only those"
            )
        secret = asyncio.run(dbroles.ensure_roles(superuser, owner=owner, app=app))
        ini = pgbouncer.write_for_container(
            args.pgbouncer_out,
            server_url=direct,
            user=app.role,
            secret=secret,
            listen_port=args.listen_port,
            auth_file=args.auth_file,
            max_prepared_statements=args.max_prepared_statements,
            default_pool_size=args.default_pool_size,
            max_client_conn=args.max_client_conn,
        )
    except ValueError as exc:
        print(f"db-setup: {exc}", file=sys.stderr)
        return 2
    print(f"roles {owner.role} (owner) and {app.role} (the app's); wrote {ini} and userlist.txt")
    return 0


class LaunchSettings(BaseSettings):
    """What the launcher reads before uvicorn starts, from where the app's Settings read it
    (the environment, then .env), without validating the app's other settings: a value they
    refuse stops uvicorn at the app's start, with the reason."""

    model_config = Settings.model_config.copy()
    log_level: str = ""


def serve(arguments: Sequence[str]) -> int:
    """Empty the metrics directory, then become uvicorn (the same process: PID 1 in the image
    stays uvicorn, and gets its signals). The workers count in that directory, and a worker
    must not empty it when it starts, or it would wipe the others' counts: this runs once,
    before any of them. Only prometheus-client's files go (*.db), whatever else is there."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
    given = {argument.split("=")[0] for argument in arguments}
    if "--log-config" not in given:
        # uvicorn's own lines (before the app starts, and all of the supervisor's when there
        # are several workers) in the app's format: JSON in production.
        arguments = [*arguments, "--log-config", str(UVICORN_LOG_CONFIG)]
    level = LaunchSettings().log_level.strip().upper()
    if level in get_args(Settings.model_fields["log_level"].annotation) and (
        "--log-level" not in given
    ):
        # At the app's level: its log configuration leaves uvicorn's loggers at INFO, which
        # LOG_LEVEL=WARNING would not otherwise quiet, in the supervisor or in the workers. A
        # level the settings refuse is left to them: they stop uvicorn with the reason.
        arguments = [*arguments, "--log-level", level.lower()]
    os.execv(sys.executable, [sys.executable, "-m", "uvicorn", *arguments])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "serve", help="uvicorn with the arguments that follow, the metrics directory emptied"
    )
    superuser = commands.add_parser("create-superuser", help="create or promote a superuser")
    superuser.add_argument("--email", required=True)
    superuser.add_argument("--username", default="admin")
    config = commands.add_parser(
        "db-setup", help="the database's roles, then PgBouncer's configuration"
    )
    config.add_argument(
        "--pgbouncer-out", type=Path, required=True, help="directory to write PgBouncer's files"
    )
    config.add_argument("--listen-port", type=int, default=6432)
    config.add_argument(
        "--auth-file",
        type=Path,
        default=Path("/etc/pgbouncer/userlist.txt"),
        help="where PgBouncer will find userlist.txt",
    )
    config.add_argument(
        "--max-prepared-statements",
        type=int,
        default=None,
        help="tracked prepared statements (PgBouncer >= 1.21; omit for an older PgBouncer)",
    )
    config.add_argument("--default-pool-size", type=int, default=20)
    config.add_argument("--max-client-conn", type=int, default=500)
    commands.add_parser("compose-env", help="print a .env with random secrets for compose")
    commands.add_parser("app-role-password", help="a password for the app's role, its secret")
    args, rest = parser.parse_known_args(argv)
    if args.command == "serve":
        return serve(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "create-superuser":
        return create_superuser(args.email, args.username)
    if args.command == "db-setup":
        return db_setup(args)
    if args.command == "compose-env":
        print(dbroles.compose_env(), end="")
        return 0
    password = dbroles.generate_password()  # app-role-password
    secret = dbroles.scram_secret(password, iterations=dbroles.APP_ROLE_SCRAM_ITERATIONS)
    print(f"STOREFRONT_APP_PASSWORD={password}\nSTOREFRONT_APP_SCRAM_SECRET='{secret}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
