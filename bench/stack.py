"""make bench's processes: the embedded PostgreSQL and PgBouncer (as `make run` starts them),
the uvicorn servers (through `serve.py`) and who logs in to them, the short-lived tools, what
/proc says of each process, and a bench's own process (`entry`: signals, one-line failures).

Every process started here dies with the bench: a context manager stops it in order, and the
kernel's parent-death signal stops it after a `kill -9` of the bench.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import httpx

import devstack

API = "api.launch:create_app"  # the API as its servers launch it (deploy/Dockerfile)
APP = "api.main:create_app"  # the app alone, without the launch's tuning
BARE = "bench.bare:create_app"  # the bare asyncpg handlers, the driver's yardstick
TUTORIAL = "bench.tutorial:create_app"  # the tutorial-style app, what users would write instead
YARDSTICKS = (BARE, TUTORIAL)  # the apps beside the API, served alike
BENCH_USER = {"username": "bench_user", "email": "bench_user@example.com"}
ADMIN = {"username": "bench_admin", "email": "bench_admin@example.com"}
Auth = Literal["", "user", "superuser"]


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    """The benchmark cannot go on (a missing tool, a server that does not start, a bad answer)."""


def run_quiet(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """A short-lived child (wrk, pgbench, psql) that the kernel kills if we die."""
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        preexec_fn=devstack.child_setup(None, signal.SIGKILL),
        **kwargs,
    )


def tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BenchError(f"{name} is not installed: {hint}")
    return path


# --- PostgreSQL and PgBouncer --------------------------------------------------------------


@contextlib.contextmanager
def running_postgres(data_dir: Path) -> Iterator[devstack.EmbeddedPostgres]:
    """The embedded server, durable as `make run` keeps it, with pg_stat_statements loaded."""
    postgres = devstack.EmbeddedPostgres(data_dir / "postgres")
    try:
        postgres.start()
        if "pg_stat_statements" not in postgres.psql("SHOW shared_preload_libraries").stdout:
            say("preloading pg_stat_statements (a restart of the benchmark's own cluster)")
            postgres.psql("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
            postgres.stop()
            postgres.start()
        track_statements(postgres, on=False)
        yield postgres
    finally:
        postgres.stop()


@contextlib.contextmanager
def running_pgbouncer(
    data_dir: Path,
    postgres: devstack.EmbeddedPostgres,
    userlist: str = "scram",
    extra: str = "",
    name: str = "pgbouncer",
    binary: str | None = None,
) -> Iterator[devstack.PgBouncer]:
    """PgBouncer as `make run` starts it: its auth file holds the server's SCRAM secret, and
    one that can (1.21 and later) tracks prepared statements (the app's statement cache then
    stays on: `PgBouncer.statement_cache_env`). `userlist="plain"` writes the password instead
    (the old way, to measure it: PgBouncer 1.18 then derives a secret from the password at every
    login); `extra` is configuration appended to the template's (a later setting wins);
    `binary` another PgBouncer than make run's (the installed 1.18, say)."""
    binary = binary or devstack.make_run_pgbouncer()
    # A max_prepared_statements among the extra settings replaces make run's (the app's cache
    # follows it: PgBouncer.statement_cache_env).
    given = re.search(r"^\s*max_prepared_statements\s*=\s*(\d+)\s*$", extra, re.MULTILINE)
    tracked = devstack.tracked_statements(binary) if binary else 0
    bouncer = devstack.PgBouncer(
        data_dir / name,
        server_port=postgres.port,
        password=postgres.password,
        max_prepared_statements=int(given.group(1)) if given else tracked,
        extra=extra,
        binary=binary,
    )
    try:
        bouncer.start()
        if userlist == "plain":
            password = bouncer.password
            (bouncer.run_dir / "userlist.txt").write_text(f'"{bouncer.user}" "{password}"\n')
            assert bouncer.process is not None
            bouncer.process.send_signal(signal.SIGHUP)  # PgBouncer rereads its auth file
            time.sleep(0.5)
        yield bouncer
    finally:
        bouncer.stop()


@contextlib.contextmanager
def running_replica(
    data_dir: Path, postgres: devstack.EmbeddedPostgres
) -> Iterator[devstack.EmbeddedPostgres]:
    """A streaming replica of the benchmark's cluster (`pg_basebackup -R`), made afresh for the
    run in `data_dir/replica` (the dataset was just loaded) and removed after it."""
    replica_dir = data_dir / "replica"
    shutil.rmtree(replica_dir, ignore_errors=True)
    started = time.monotonic()
    replica = postgres.base_backup(replica_dir)
    try:
        replica.start()
        postgres.wait_until_streaming()
        say(f"replica on 127.0.0.1:{replica.port}, copied in {time.monotonic() - started:.0f} s")
        yield replica
    finally:
        replica.stop()
        shutil.rmtree(replica_dir, ignore_errors=True)


def track_statements(postgres: devstack.EmbeddedPostgres, *, on: bool) -> None:
    """pg_stat_statements counts only while statements are being counted, not under load."""
    postgres.psql(f"ALTER SYSTEM SET pg_stat_statements.track = '{'top' if on else 'none'}'")
    postgres.psql("SELECT pg_reload_conf()")
    time.sleep(0.5)  # backends (PgBouncer's idle server connections too) reload on their own


# --- processes, from /proc -----------------------------------------------------------------


def processes() -> dict[int, tuple[int, int, bytes]]:
    """Every process: pid -> (parent pid, CPU ticks so far with its reaped children's, command)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
            # utime + stime, and cutime + cstime: a child it reaped (a PostgreSQL backend
            # whose client left) still counts, in its parent.
            ticks = sum(int(f) for f in fields[11:15])
            found[int(entry.name)] = (int(fields[1]), ticks, cmdline)
    return found


def children(parent: int) -> list[tuple[int, bytes]]:
    return [(pid, cmd) for pid, (ppid, _, cmd) in processes().items() if ppid == parent]


def descendants(table: dict[int, tuple[int, int, bytes]], roots: set[int]) -> set[int]:
    tree = set(roots)
    while more := {pid for pid, (ppid, _, _) in table.items() if ppid in tree} - tree:
        tree |= more
    return tree


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# --- the API's servers ---------------------------------------------------------------------


@dataclass
class Variant:
    """A way to launch the servers, measured beside the default one in the same run, its rows
    interleaved with the default's (`make bench --variant/--baseline`): other environment
    variables (a value of None unsets one), another factory, or the API's code from another
    checkout."""

    name: str = ""  # "": the servers as make bench launches them by default
    env: dict[str, str | None] = field(default_factory=dict)
    factory: str = API  # the API's uvicorn factory
    api_root: Path | None = None  # serve.py imports `api` from there (BENCH_API_ROOT)
    reference: str = ""  # the variant its rows are compared with
    keys: frozenset[str] | None = None  # the request shapes it serves; None: all
    workers: int | None = None  # the one worker count it is served at; None: every one

    def label(self, workers: int) -> str:
        count = f"{workers} worker{'s' if workers > 1 else ''}"
        return f"{count}, {self.name}" if self.name else count

    def environment(self, env: dict[str, str]) -> dict[str, str]:
        changed = {**env, **{k: v for k, v in self.env.items() if v is not None}}
        if self.api_root is not None:
            changed["BENCH_API_ROOT"] = str(self.api_root)
        return {k: v for k, v in changed.items() if self.env.get(k, "") is not None}


def add_variant(found: dict[str, Variant], spec: str) -> Variant:
    """One `--variant` spec (NAME, NAME:KEY=VALUE, NAME:-KEY or NAME:factory=MODULE:ATTR)
    added to the variant of its name in `found`, made if new; that variant."""
    name, _, setting = (part.strip() for part in spec.partition(":"))
    key, equals, value = setting.removeprefix("-").partition("=")
    unset = setting.startswith("-")
    if not name or (setting and (not key or unset == bool(equals))):
        raise BenchError(
            f"--variant {spec!r}: NAME, NAME:KEY=VALUE, NAME:-KEY or NAME:factory=MODULE:ATTR"
        )
    variant = found.setdefault(name, Variant(name))
    if key == "factory" and equals:
        variant.factory = value
    elif setting:
        variant.env[key] = None if unset else value
    return variant


@dataclass
class Server:
    """A uvicorn with `workers` worker processes, serving the app on a loopback port."""

    label: str
    url: str
    process: subprocess.Popen[bytes]
    workers: int
    lag_dir: Path  # where serve.py writes each worker's loop lag, <pid>.lag
    tokens: dict[str, str] = field(default_factory=dict)

    def worker_pids(self) -> list[int]:
        if self.workers == 1:
            return [self.process.pid]
        return [pid for pid, cmdline in children(self.process.pid) if b"spawn_main" in cmdline]

    def rss_mb(self) -> list[float]:
        return [round(rss_kib(pid) / 1024, 1) for pid in self.worker_pids()]


@contextlib.contextmanager
def serving(
    env: dict[str, str],
    workers: int,
    log: Path,
    password: str,
    *,
    first: bool,
    factory: str = API,
    cpus: str = "",
    variant: Variant | None = None,
) -> Iterator[Server]:
    variant = variant or Variant()
    port = devstack.free_port()
    # As the Docker image runs uvicorn (deploy/Dockerfile), with the worker count and a loopback
    # port, through serve.py: the same command line, plus the loop-lag sampler and any
    # experiment's engine arguments.
    lag_dir = log.with_suffix(".lag")
    shutil.rmtree(lag_dir, ignore_errors=True)
    lag_dir.mkdir(parents=True)
    # The workers count their metrics in a directory of their own, empty at the start, as the
    # image's launcher (`python -m api serve`) leaves /tmp/metrics.
    metrics_dir = log.with_suffix(".metrics")
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    env = variant.environment({**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    env["BENCH_LOOP_LAG_DIR"] = str(lag_dir)
    command = [*pinned(cpus), sys.executable, "-m", "bench.serve", "--factory", factory]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    command += ["--timeout-graceful-shutdown", "10"]
    if factory in YARDSTICKS:
        command += ["--no-access-log"]  # a yardstick: nothing but the framework and its database
    # The server writes its log into a pipe that another process reads and stores, as a
    # container's output reaches its runtime (Docker's and Kubernetes' log files), not straight
    # into a file: each write to a pipe wakes its reader, and the writer pays for that.
    with log.open("wb") as out:
        reader = subprocess.Popen(
            [tool("cat", "coreutils provide it")], stdin=subprocess.PIPE, stdout=out
        )
    assert reader.stdin is not None
    try:
        with reader.stdin:  # the server's end only: the reader stops when the server's closes
            process = subprocess.Popen(
                command,
                cwd=devstack.ROOT,
                env=env,
                stdout=reader.stdin,
                stderr=subprocess.STDOUT,
                preexec_fn=devstack.child_setup(None, signal.SIGTERM),
            )
        server = Server(
            variant.label(workers), f"http://127.0.0.1:{port}", process, workers, lag_dir
        )
        try:
            wait_until_ready(server, log)
            if factory not in YARDSTICKS:
                server.tokens = log_in(server.url, password, sign_up=first)
            yield server
        finally:
            devstack.terminate(process, signal.SIGTERM)
    finally:
        try:
            reader.wait(timeout=30)  # the pipe's last lines stored
        except subprocess.TimeoutExpired:  # a worker left behind holds the pipe open
            reader.kill()
            reader.wait()


def pinned(cpus: str) -> list[str]:
    """The prefix that runs a command on the CPUs listed (taskset's list: "1", "0-1")."""
    return [tool("taskset", "util-linux provides it"), "-c", cpus] if cpus else []


def wait_until_ready(server: Server, log: Path) -> None:
    wait_for_ready(
        server.url,
        server.process,
        log,
        60,
        workers_up=lambda: len(server.worker_pids()) == server.workers,
    )


def wait_for_ready(
    url: str,
    process: subprocess.Popen[bytes],
    log: Path,
    seconds: float,
    workers_up: Callable[[], bool] = lambda: True,
) -> None:
    """Until the uvicorn `process` serving `url` answers `/health/ready` (and `workers_up`);
    a BenchError with its log's tail if it exits or is not ready within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"uvicorn exited:\n{log.read_text(errors='replace')[-3000:]}")
        with contextlib.suppress(httpx.TransportError):
            answer = httpx.get(f"{url}/health/ready", timeout=2)
            if answer.status_code == 200 and workers_up():
                return
        time.sleep(0.2)
    raise BenchError(
        f"uvicorn was not ready in {seconds:.0f} s:\n{log.read_text(errors='replace')[-3000:]}"
    )


def log_in(
    url: str, password: str, *, sign_up: bool, roles: Sequence[Auth] = ("user", "superuser")
) -> dict[str, str]:
    """Bearer tokens of the benchmark's user (signed up when `sign_up`) and superuser, of those
    in `roles`, from the API at `url`."""
    with httpx.Client(base_url=url, timeout=30) as client:
        if sign_up:
            answer = client.post("/users/", json={**BENCH_USER, "password": password})
            if answer.status_code not in (201, 409):
                raise BenchError(f"sign-up answered {answer.status_code}: {answer.text}")
        tokens = {}
        for role, who in (("user", BENCH_USER), ("superuser", ADMIN)):
            if role not in roles:
                continue
            answer = client.post(
                "/auth/token", data={"username": who["username"], "password": password}
            )
            if answer.status_code != 200:
                raise BenchError(f"login of {who['username']}: {answer.status_code} {answer.text}")
            tokens[role] = answer.json()["access_token"]
    return tokens


# --- a bench's own process -----------------------------------------------------------------


def at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not 1 or more")
    return value


def entry(
    measure: Callable[[], int],
    *,
    report: Callable[[str], None],
    interrupted: str,
    failures: tuple[type[Exception], ...],
) -> int:
    """A bench's process: SIGTERM (and the death of make or uv) stops it as Ctrl-C does; an
    expected failure is one line, not a traceback."""

    def stop(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    devstack.die_with_parent(signal.SIGTERM)
    try:
        return measure()
    except KeyboardInterrupt:
        report(interrupted)
        return 130
    except failures as exc:
        report(f"failed: {exc}")
        return 1
