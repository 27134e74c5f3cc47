"""`make run`: the no-Docker stack. An embedded PostgreSQL kept in ./.data, PgBouncer in front when
installed, the migrations, then uvicorn in the foreground; Ctrl-C or SIGTERM stops everything."""

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

import devstack

DATABASE = "storefront"


def say(message: str) -> None:
    print(f"[make run] {message}", file=sys.stderr, flush=True)


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
