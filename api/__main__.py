"""Command line: `python -m api <command>`.

serve-local       the no-Docker stack behind `make run`: embedded PostgreSQL kept in ./.data,
                  PgBouncer in front when installed, migrations, then uvicorn in the foreground.
create-superuser  create (or promote) a superuser in the configured database, for deployments;
                  the password comes from FIRST_SUPERUSER_PASSWORD or is asked for.
db-setup          compose.yaml's one-shot job before PgBouncer and the migrations: as the superuser
                  (SUPERUSER_DATABASE_URL), create or update the owner (MIGRATIONS_DATABASE_URL's
                  login) and the app's role (DATABASE_URL's), then render deploy/pgbouncer's
                  template for a PgBouncer container with the app role's SCRAM secret.
app-role-password print a new password for the app's role and its SCRAM secret (16 rounds), as
                  shell assignments: the Kubernetes Secrets of deploy/README.md.
compose-env       print a .env for docker compose: production, a random SECRET_KEY and random
                  passwords for its three database roles (`make compose-env` writes it, 0600).
hash-benchmark    what one password verify costs here with the configured argon2id parameters.
"""

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from api import devstack, pgbouncer

DATABASE = "storefront"


def say(message: str) -> None:
    print(f"[serve-local] {message}", file=sys.stderr, flush=True)


def serve_local(host: str, port: int, data: Path) -> int:
    server: subprocess.Popen[bytes] | None = None
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    devstack.die_with_parent(signal.SIGTERM)  # `make` or `uv` killed: stop as on Ctrl-C

    postgres = devstack.EmbeddedPostgres(data / "postgres")
    bouncer: devstack.PgBouncer | None = None
    try:
        postgres.start()
        postgres.create_database(DATABASE)
        direct = postgres.url(DATABASE)
        say(f"PostgreSQL (embedded) on 127.0.0.1:{postgres.port}, data in {postgres.data_dir}")
        env = {**os.environ, "MIGRATIONS_DATABASE_URL": direct}
        env.setdefault("ENVIRONMENT", "development")
        env.setdefault("LOG_JSON", "false")
        binary = devstack.pgbouncer_binary()
        if binary:
            # As compose does when this PgBouncer can: prepared statements tracked, cache kept.
            bouncer = devstack.PgBouncer(
                data / "pgbouncer",
                server_port=postgres.port,
                password=postgres.password,
                max_prepared_statements=devstack.tracked_statements(binary),
            ).start()
            env.update(DATABASE_URL=bouncer.url(DATABASE), DB_POOL_MODE="null")
            env.update(bouncer.statement_cache_env())
            tracks = bouncer.max_prepared_statements > 0
            cache = "statement cache on" if tracks else "statement cache off (PgBouncer < 1.21)"
            say(f"PgBouncer (transaction mode) on 127.0.0.1:{bouncer.port}; NullPool, {cache}")
        else:
            env.update(DATABASE_URL=direct, DB_POOL_MODE="queue")
            say("PgBouncer is not installed: the API connects directly with a pool. To run as in")
            say(f"production: {devstack.PGBOUNCER_INSTALL_HINT}")
        migrate = [sys.executable, "-m", "alembic", "upgrade", "head"]
        if not stopping:
            subprocess.run(migrate, cwd=devstack.ROOT, env=env, check=True)
        if stopping:
            return 0
        say(f"serving on http://{host}:{port} (Ctrl-C stops everything)")
        uvicorn = [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app"]
        uvicorn += ["--host", host, "--port", str(port), "--timeout-graceful-shutdown", "10"]
        server = subprocess.Popen(
            uvicorn,
            cwd=devstack.ROOT,
            env=env,
            preexec_fn=devstack.child_setup(None, signal.SIGTERM),  # dies with us, even on kill -9
        )
        if stopping:
            server.send_signal(signal.SIGTERM)
        code = server.wait()
        return 0 if stopping else code
    except (devstack.DevStackError, subprocess.CalledProcessError) as exc:
        say(f"failed: {exc}")
        return 1
    finally:
        devstack.terminate(server, signal.SIGTERM)
        if bouncer is not None:
            bouncer.stop()
        postgres.stop()
        say("stopped")


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

    from api import dbroles

    try:
        superuser = environment_url("SUPERUSER_DATABASE_URL", "the superuser's direct URL")
        direct = environment_url("MIGRATIONS_DATABASE_URL", "the owner's direct URL")
        app = dbroles.Login.from_url(environment_url("DATABASE_URL", "the app's URL"))
        owner = dbroles.Login.from_url(direct)
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


def hash_benchmark(rounds: int) -> int:
    from api.core import security

    hashed = security.password_hash.hash("correct horse battery staple")
    started = time.perf_counter()
    for _ in range(rounds):
        security.password_hash.verify("correct horse battery staple", hashed)
    elapsed = (time.perf_counter() - started) / rounds * 1000
    params = f"m={security.MEMORY_COST_KIB} KiB, t={security.TIME_COST}, p={security.PARALLELISM}"
    print(f"argon2id {params}: {elapsed:.1f} ms per verify (mean of {rounds})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve-local", help="run the API on the embedded stack")
    serve.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    serve.add_argument("--data-dir", type=Path, default=devstack.ROOT / ".data")
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
    bench = commands.add_parser("hash-benchmark", help="time one password verify")
    bench.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    if args.command == "serve-local":
        return serve_local(args.host, args.port, args.data_dir.resolve())
    if args.command == "create-superuser":
        return create_superuser(args.email, args.username)
    if args.command == "db-setup":
        return db_setup(args)
    if args.command in {"compose-env", "app-role-password"}:
        from api import dbroles

        if args.command == "compose-env":
            print(dbroles.compose_env(), end="")
        else:
            password = dbroles.generate_password()
            secret = dbroles.scram_secret(password, iterations=dbroles.APP_ROLE_SCRAM_ITERATIONS)
            print(f"STOREFRONT_APP_PASSWORD={password}\nSTOREFRONT_APP_SCRAM_SECRET='{secret}'")
        return 0
    return hash_benchmark(args.rounds)


if __name__ == "__main__":
    sys.exit(main())
