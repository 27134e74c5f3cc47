"""`make run`: the no-Docker stack. An embedded PostgreSQL kept in ./.data, PgBouncer in front when
installed, the migrations, then uvicorn in the foreground.

It supervises what it starts, as compose's `restart: unless-stopped` and Kubernetes do: a
PostgreSQL or PgBouncer that dies is reaped (no zombie, no stale pid file) and started again on
its port, with a log line, up to `RESTARTS` times within `RESTART_WINDOW` seconds; past that the
stack stops with a message and status 1. uvicorn that dies ends the stack with its status.
Ctrl-C or SIGTERM (to this process, or to uvicorn alone) stops everything, with status 0.
"""

import os
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from types import FrameType

import devstack
from api import launch

DATABASE = "storefront"
RESTARTS = 5
RESTART_WINDOW = 300.0  # seconds
POLL_SECONDS = 0.2
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


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
        env = {**launch.MALLOC_ENV, **os.environ, "MIGRATIONS_DATABASE_URL": direct}
        env.setdefault("ENVIRONMENT", "development")
        env.setdefault("LOG_JSON", "false")
        binary = devstack.make_run_pgbouncer()
        if binary:
            # As compose does when this PgBouncer can: prepared statements tracked, cache kept.
            bouncer = devstack.PgBouncer(
                data / "pgbouncer",
                server_port=postgres.port,
                password=postgres.password,
                max_prepared_statements=devstack.tracked_statements(binary),
                binary=binary,
            ).start()
            env.update(DATABASE_URL=bouncer.url(DATABASE), DB_POOL="null")
            env.update(bouncer.statement_cache_env())
            tracks = bouncer.max_prepared_statements > 0
            cache = "statement cache on" if tracks else "statement cache off (PgBouncer < 1.21)"
            version = ".".join(map(str, devstack.pgbouncer_version(binary)))
            say(f"PgBouncer {version} (transaction mode) on 127.0.0.1:{bouncer.port}; {cache}")
        else:
            env.update(DATABASE_URL=direct, DB_POOL="queue", DB_STATEMENT_CACHE="true")
            say("PgBouncer is not installed: the API connects directly with a pool. To run as in")
            say(f"production: {devstack.PGBOUNCER_INSTALL_HINT}")
        migrate = [sys.executable, "-m", "alembic", "upgrade", "head"]
        if not stopping:
            subprocess.run(migrate, cwd=devstack.ROOT, env=env, check=True)
        if stopping:
            return 0
        say(f"serving on http://{host}:{port} (Ctrl-C stops everything)")
        # As the image launches it (deploy/Dockerfile): the launcher empties the metrics
        # directory, then is uvicorn serving api.launch's app; glibc's MALLOC_ENV.
        env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(data / "metrics"))
        uvicorn = [sys.executable, "-m", "api", "serve", "--factory", "api.launch:create_app"]
        uvicorn += ["--host", host, "--port", str(port), "--timeout-graceful-shutdown", "10"]
        server = subprocess.Popen(
            uvicorn,
            cwd=devstack.ROOT,
            env=env,
            preexec_fn=devstack.child_setup(None, signal.SIGTERM),  # dies with us, even on kill -9
        )
        if stopping:
            server.send_signal(signal.SIGTERM)
        services: list[devstack.EmbeddedPostgres | devstack.PgBouncer] = [postgres]
        services += [bouncer] if bouncer is not None else []
        code = supervise(server, services)
        if stopping or (code < 0 and -code in STOP_SIGNALS):  # asked to stop: a normal exit
            return 0
        return code if code >= 0 else 128 - code  # as a shell reports a signal
    except (devstack.DevStackError, subprocess.CalledProcessError) as exc:
        say(f"failed: {exc}")
        return 1
    finally:
        devstack.terminate(server, signal.SIGTERM)
        if bouncer is not None:
            bouncer.stop()
        postgres.stop()
        say("stopped")


def supervise(
    server: subprocess.Popen[bytes],
    services: list[devstack.EmbeddedPostgres | devstack.PgBouncer],
) -> int:
    """Wait for uvicorn to end, meanwhile starting again any service that is not running;
    uvicorn's exit status, or 1 when a service needed more than RESTARTS starts within
    RESTART_WINDOW seconds."""
    starts: dict[str, deque[float]] = {service.name: deque() for service in services}
    not_before: dict[str, float] = {}  # after a failed start, a pause that grows with each
    while (code := server.poll()) is None:
        for service in services:
            process = service.process
            if process is not None and process.poll() is None:
                continue  # running; poll() reaps a child that has ended
            recent, now = starts[service.name], time.monotonic()
            if now < not_before.get(service.name, 0.0):
                continue
            if process is not None and process.returncode is not None:
                say(f"{service.name} {describe(process.returncode)}")
            while recent and now - recent[0] > RESTART_WINDOW:
                recent.popleft()
            if len(recent) >= RESTARTS:
                say(
                    f"{service.name} needed {RESTARTS} starts within {RESTART_WINDOW:.0f} s: "
                    "stopping everything (its log is in the data directory)"
                )
                return 1
            recent.append(now)
            say(f"starting {service.name} again ({len(recent)} of {RESTARTS})")
            try:
                service.start()
            except (devstack.DevStackError, OSError) as exc:
                say(f"{service.name} did not start: {exc}")
                not_before[service.name] = time.monotonic() + len(recent)
        time.sleep(POLL_SECONDS)
    return code


def describe(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with status {returncode}"
