"""`make backup` and `make restore`: a consistent dump of the app's database, and its restore,
for the compose stack (through its `db` service) or make run's embedded cluster (./.data).

A backup is `pg_dump --format=custom` (one snapshot: consistent while the API writes), written to
`backups/storefront-<UTC time>-<Alembic revision>.dump` through a temporary name, so a file there
is always whole. A restore checks that the file is a whole dump, stops the API, refuses a
database that already holds tables unless forced (then the database is first dumped into
backups/, then dropped and made again, empty, for its owner), restores the dump in one
transaction, runs `alembic upgrade head` (a dump of an older release comes up to date) and
starts the API again.

Which stack: `--target compose` or `local`; by default compose when its `db` service runs,
else the embedded cluster, which is started for the command when make run is not running.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import devstack

DATABASE = "storefront"
BACKUPS = devstack.ROOT / "backups"


class BackupError(RuntimeError):
    """A backup or a restore could not be made; the message says why."""


class Target(Protocol):
    name: str

    def psql(self, sql: str, *, database: str = DATABASE) -> str: ...
    def dump(self, out: Path) -> None: ...
    def verify(self, dump: Path) -> None: ...
    def restore(self, dump: Path) -> None: ...
    def migrate(self) -> None: ...
    def stop_api(self) -> None: ...
    def start_api(self) -> None: ...


def run(
    command: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd)
    if result.returncode != 0:
        raise BackupError(f"{program(command)}: {result.stderr.strip()[-2000:]}")
    return result


def program(command: list[str]) -> str:
    """The PostgreSQL tool a command runs (inside `docker compose exec` too), for messages."""
    names = [Path(part).name for part in command]
    return next((name for name in names if name.startswith(("pg_", "psql"))), names[0])


def stream(command: list[str], *, source: Path | None = None, into: Path | None = None) -> None:
    """Run `command` with a dump file as its standard input (`source`) or output (`into`)."""
    with contextlib.ExitStack() as files:
        stdin = files.enter_context(source.open("rb")) if source else subprocess.DEVNULL
        stdout = files.enter_context(into.open("wb")) if into else subprocess.DEVNULL
        result = subprocess.run(command, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE)
    if result.returncode != 0:
        error = result.stderr.decode(errors="replace").strip()[-2000:]
        raise BackupError(f"{program(command)}: {error}")


@dataclass
class Compose:
    """The compose stack's `db` service, as its superuser (inside the container: no password)."""

    project: str | None = None
    name: str = "compose"

    def command(self, *args: str) -> list[str]:
        project = ["--project-name", self.project] if self.project else []
        return ["docker", "compose", "--project-directory", str(devstack.ROOT), *project, *args]

    def running(self) -> bool:
        result = subprocess.run(
            self.command("ps", "--status", "running", "--services"),
            capture_output=True,
            text=True,
        )
        return result.returncode == 0 and "db" in result.stdout.split()

    def exec_db(self, *args: str) -> list[str]:
        return self.command("exec", "-T", "db", *args)

    def psql(self, sql: str, *, database: str = DATABASE) -> str:
        return run(self.exec_db("psql", "-U", "postgres", "-d", database, "-XAtqc", sql)).stdout

    def dump(self, out: Path) -> None:
        stream(self.exec_db("pg_dump", "-U", "postgres", "--format=custom", DATABASE), into=out)

    def verify(self, dump: Path) -> None:
        stream(self.exec_db("pg_restore", "--list"), source=dump)

    def restore(self, dump: Path) -> None:
        restore = ["pg_restore", "-U", "postgres", "-d", DATABASE, "--exit-on-error"]
        stream(self.exec_db(*restore, "--single-transaction"), source=dump)

    def migrate(self) -> None:
        run(self.command("run", "--rm", "--no-deps", "migrate"))

    def stop_api(self) -> None:
        run(self.command("stop", "api"))

    def start_api(self) -> None:
        run(self.command("up", "--detach", "--wait", "api"))


@dataclass
class Local:
    """make run's embedded cluster in `data_dir`: the running one (its port from its pid file),
    or one started here for the command."""

    data_dir: Path
    name: str = "local"
    server: devstack.EmbeddedPostgres | None = None
    borrowed: bool = False  # the cluster was running already: make run's

    @property
    def postgres(self) -> devstack.EmbeddedPostgres:
        assert self.server is not None, "use Local inside its started() context"
        return self.server

    def running_port(self) -> int | None:
        """The port of the cluster make run is running, if it is."""
        try:
            lines = (self.data_dir / "cluster" / "postmaster.pid").read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return None
        return port

    @contextlib.contextmanager
    def started(self, *, fresh_ok: bool) -> Iterator[Local]:
        port = self.running_port()
        if port is None and not fresh_ok and not (self.data_dir / "cluster").exists():
            raise BackupError(f"no cluster in {self.data_dir}: nothing to back up")
        self.server = devstack.EmbeddedPostgres(self.data_dir, port=port or 0)
        self.borrowed = port is not None
        try:
            if port is None:
                self.server.start()
            if fresh_ok:
                self.server.create_database(DATABASE)
            elif not self.psql(
                f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'", database="postgres"
            ).strip():
                raise BackupError(f"no {DATABASE} database in {self.data_dir}: nothing to back up")
            yield self
        finally:
            if port is None:
                self.server.stop()

    def environment(self) -> dict[str, str]:
        return {**os.environ, "PGPASSWORD": self.postgres.password, "PGCONNECT_TIMEOUT": "5"}

    def connection(self, database: str = DATABASE) -> list[str]:
        return ["-h", "127.0.0.1", "-p", str(self.postgres.port), "-U", "postgres", "-d", database]

    def psql(self, sql: str, *, database: str = DATABASE) -> str:
        psql = str(self.postgres.bin_dir / "psql")
        command = [psql, *self.connection(database), "-XAtqc", sql]
        return run(command, env=self.environment()).stdout

    def dump(self, out: Path) -> None:
        pg_dump = str(self.postgres.bin_dir / "pg_dump")
        run(
            [pg_dump, *self.connection(), "--format=custom", "-f", str(out)], env=self.environment()
        )

    def verify(self, dump: Path) -> None:
        run([str(self.postgres.bin_dir / "pg_restore"), "--list", str(dump)])

    def restore(self, dump: Path) -> None:
        pg_restore = str(self.postgres.bin_dir / "pg_restore")
        command = [pg_restore, *self.connection(), "--exit-on-error", "--single-transaction"]
        run([*command, str(dump)], env=self.environment())

    def migrate(self) -> None:
        env = {**os.environ, "MIGRATIONS_DATABASE_URL": self.postgres.url(DATABASE)}
        env.setdefault("ENVIRONMENT", "development")
        run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=devstack.ROOT, env=env)

    def stop_api(self) -> None:
        """make run's API lives and dies with its cluster: a running one refuses the restore."""
        if self.borrowed or (self.server is None and self.running_port() is not None):
            raise BackupError("make run is running on this cluster: stop it, then restore")

    def start_api(self) -> None:
        """`make run` starts it again."""


def revision(target: Target) -> str:
    try:
        found = target.psql("SELECT version_num FROM alembic_version").split()
    except BackupError:
        return "unmigrated"
    return "+".join(found) or "unmigrated"


def backup(target: Target, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    final = directory / f"storefront-{stamp}-{revision(target)}.dump"
    if final.exists():
        raise BackupError(f"{final} exists")
    partial = final.with_suffix(".dump.partial")
    try:
        target.dump(partial)
        partial.rename(final)
    finally:
        partial.unlink(missing_ok=True)
    return final


def tables_in(target: Target) -> int:
    return int(target.psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"))


def restore(target: Target, dump: Path, *, force: bool, safety: Path = BACKUPS) -> None:
    if not dump.is_file():
        raise BackupError(f"{dump}: no such file")
    try:  # a truncated or foreign file is refused before anything changes
        target.verify(dump)
    except BackupError as exc:
        raise BackupError(f"{dump} is not a whole dump: {exc}") from exc
    target.stop_api()
    if tables_in(target):
        if not force:
            raise BackupError(
                f"the {target.name} database already holds tables: FORCE=1 replaces it "
                "(a dump of it is taken first)"
            )
        before = backup(target, safety)
        print(f"the database as it was, before the restore: {before}", file=sys.stderr)
        owner = target.psql(
            f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{DATABASE}'"
        ).strip()
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", owner):
            raise BackupError(f"unexpected owner of the database: {owner!r}")
        target.psql(f'DROP DATABASE "{DATABASE}" WITH (FORCE)', database="postgres")
        target.psql(f'CREATE DATABASE "{DATABASE}" OWNER "{owner}"', database="postgres")
    target.restore(dump)
    target.migrate()
    target.start_api()


def pick(name: str | None, data_dir: Path, project: str | None) -> Compose | Local:
    if name == "local":
        return Local(data_dir)
    compose = Compose(project)
    if name == "compose":
        return compose
    if shutil.which("docker") and compose.running():
        return compose
    return Local(data_dir)


def main_backup(target: Compose | Local, out: Path) -> Path:
    if isinstance(target, Local):
        with target.started(fresh_ok=False):
            return backup(target, out)
    return backup(target, out)


def main_restore(target: Compose | Local, dump: Path, *, force: bool, safety: Path) -> None:
    if isinstance(target, Local):
        target.stop_api()  # before starting a cluster of our own
        with target.started(fresh_ok=True):
            restore(target, dump, force=force, safety=safety)
        return
    restore(target, dump, force=force, safety=safety)
