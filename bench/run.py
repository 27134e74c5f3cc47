"""`make bench`: the API's speed on the stack `make run` starts, as one table.

What it does, from a clean clone:

1. starts an embedded PostgreSQL 18 (its cluster in `.data/bench/postgres`, kept between runs,
   with pg_stat_statements preloaded) and PgBouncer in transaction mode in front of it, both
   from `api.devstack` as `make run` does, on loopback only;
2. recreates the database `storefront_bench`, migrates it with Alembic (directly, never
   through PgBouncer) and loads a deterministic dataset generated in SQL (`dataset.sql`);
3. for each worker count (1 and 2 by default) starts uvicorn with the production settings
   (ENVIRONMENT=production, a generated SECRET_KEY, DB_POOL_MODE=null through PgBouncer, JSON
   logs with uvicorn's access log, as the Docker image runs it), signs up a user and logs in
   that user and the first superuser, then measures every request shape with wrk (`wrk.lua`,
   one thread by default, on the last CPU it may use): a warm-up run, then a measured run at 50
   connections; then, with the same settings and worker count, the bare asyncpg handler of
   `bare.py` (`GET /products/{id}` without SQLAlchemy): the yardstick of what SQLAlchemy and
   our code add to the driver; both through `serve.py` (uvicorn's command line, with each
   worker's event-loop lag sampled);
4. counts the SQL statements each request shape sends (pg_stat_statements, see
   `count_statements`), reads the workers' RSS from /proc after each run and their loop lag
   during it;
5. runs pgbench on the same database with the same single-row query as `GET /products/{id}`,
   directly and through PgBouncer;
6. prints one table, checks it against the targets of issue 6, and writes it as JSON to
   `bench/results/` (git-ignored).

Every process it starts dies with it: on Ctrl-C or SIGTERM everything is stopped in order, and
after a `kill -9` the kernel's parent-death signal stops uvicorn, PgBouncer and PostgreSQL.

A row with any non-2xx answer or socket error is FAILED. wrk counts statuses >= 400 and socket
errors (connect, read, write, timeout); before its runs every request shape is sent once per
counted request and must answer its exact 2xx status without a redirect, which rules out 3xx.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Literal
from unittest import mock

import httpx

import devstack
from api.core.config import Settings

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DATASET = HERE / "dataset.sql"
DATABASE = "storefront_bench"
PRODUCTS, USERS, ORDERS, CATEGORIES = 100_000, 10_000, 50_000, 50
PAGE_SIZE = 20
BENCH_USER = {"username": "bench_user", "email": "bench_user@example.com"}
ADMIN = {"username": "bench_admin", "email": "bench_admin@example.com"}
Auth = Literal["", "user", "superuser"]
API = "api.main:create_app"
BARE = "bench.bare:create_app"  # the bare asyncpg handler, the driver's yardstick


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    """The benchmark cannot go on (a missing tool, a server that does not start, a bad answer)."""


# --- request shapes ------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """One kind of request: wrk sends it with random ids/bodies drawn the same way as here."""

    key: str
    label: str
    path: str
    method: str = "GET"
    ids: int = 0  # "{id}" in the path is a random id from 1 to ids
    lines: int = 0  # POST /orders/ bodies with this many distinct random products
    auth: Auth = ""
    status: int = 200
    app: str = API  # the uvicorn factory that serves it

    def draw(self, rng: random.Random) -> tuple[str, dict[str, Any] | None]:
        """One request of this shape: its path and JSON body (as wrk.lua draws them)."""
        path = self.path.replace("{id}", str(rng.randint(1, self.ids))) if self.ids else self.path
        if not self.lines:
            return path, None
        products = rng.sample(range(1, PRODUCTS + 1), self.lines)
        return path, {"items": [{"product_id": p, "quantity": 1} for p in products]}


def shapes(deep_page: int, cursor: str) -> list[Shape]:
    deep = f"page {deep_page:,} of {PAGE_SIZE}"
    return [
        Shape("health", "GET /health", "/health"),
        Shape("product", "GET /products/{id}", "/products/{id}", ids=PRODUCTS),
        Shape(
            "bare",
            "GET /products/{id}, bare asyncpg handler",
            "/products/{id}",
            ids=PRODUCTS,
            app=BARE,
        ),
        Shape("page1", f"GET /products/ page 1 of {PAGE_SIZE}", f"/products/?size={PAGE_SIZE}"),
        Shape("offset", f"GET /products/ {deep}, offset", f"/products/?page={deep_page}&size=20"),
        Shape("cursor", f"GET /products/ {deep}, cursor", f"/products/?cursor={cursor}&size=20"),
        Shape(
            "order",
            "GET /orders/{id}/details",
            "/orders/{id}/details",
            ids=ORDERS,
            auth="superuser",
        ),
        Shape(
            "post1", "POST /orders/ 1 line", "/orders/", "POST", lines=1, auth="user", status=201
        ),
        Shape(
            "post10",
            "POST /orders/ 10 lines",
            "/orders/",
            "POST",
            lines=10,
            auth="user",
            status=201,
        ),
    ]


# --- results -------------------------------------------------------------------------------


@dataclass
class Row:
    server: str  # "1 worker", "2 workers" or "postgres"; bench-compose: the auth arrangement
    key: str
    label: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    error_kinds: dict[str, int] = field(default_factory=dict)
    ratio: float | None = None  # to /health of the same server (pgbench: of the first server)
    statements: float | None = None  # per request, everything the database executed
    statement_kinds: dict[str, float] | None = None
    statement_queries: list[dict[str, Any]] | None = None
    rss_mb: list[float] | None = None  # each uvicorn worker, after this row's run
    other_cpu_pct: float | None = None  # CPU used by processes not ours (and steal) in the run
    cpu_ms: dict[str, float] | None = None  # CPU per request: app, pgbouncer, postgres, client
    round_rps: list[float] | None = None  # with --rounds N: each round's rps (this is the median)
    worst_tail: float | None = None  # with --rounds N: the highest p99/p50 of any round
    worst_tail_loop: str | None = None  # with --rounds N: that round's lag_cell
    # How late each worker's loop woke a sleeping task during the run (serve.py), in ms:
    # p50, p99, max and the number of wakes. See loop_lag.
    loop_lag_ms: dict[str, float] | None = None
    # The share of the run the busiest-waiting worker was ready to run but not running: the
    # kernel's run-queue wait (/proc/<pid>/schedstat), in %. High: the machine was oversubscribed.
    run_queue_pct: float | None = None

    @property
    def failed(self) -> bool:
        return self.errors > 0


# --- processes -----------------------------------------------------------------------------


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


def psql_script_options(variables: dict[str, str]) -> list[str]:
    """psql's options for a script run in one transaction that stops at its first error, with
    psql variables."""
    args = ["-X", "-q", "-1", "-v", "ON_ERROR_STOP=1"]
    for name, value in variables.items():
        args += ["-v", f"{name}={value}"]
    return args


def psql_file(postgres: devstack.EmbeddedPostgres, script: Path, **variables: str) -> None:
    """Run an SQL file in one transaction on the benchmark database, with psql variables."""
    args = [str(postgres.bin_dir / "psql"), *psql_script_options(variables)]
    args += ["-h", "127.0.0.1", "-p", str(postgres.port), "-U", devstack.SUPERUSER]
    args += ["-d", DATABASE, "-f", str(script)]
    result = run_quiet(args, env={**os.environ, "PGPASSWORD": postgres.password})
    if result.returncode != 0:
        raise BenchError(f"{script.name} failed: {result.stderr.strip()}")


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
    data_dir: Path, postgres: devstack.EmbeddedPostgres, userlist: str = "scram", extra: str = ""
) -> Iterator[devstack.PgBouncer]:
    """PgBouncer as `make run` starts it: its auth file holds the server's SCRAM secret, and
    one that can (1.21 and later) tracks prepared statements (the app's statement cache then
    stays on: `PgBouncer.statement_cache_env`). `userlist="plain"` writes the password instead
    (the old way, to measure it: PgBouncer 1.18 then derives a secret from the password at every
    login); `extra` is configuration appended to the template's (a later setting wins)."""
    binary = devstack.make_run_pgbouncer()
    # A max_prepared_statements among the extra settings replaces make run's (the app's cache
    # follows it: PgBouncer.statement_cache_env).
    given = re.search(r"^\s*max_prepared_statements\s*=\s*(\d+)\s*$", extra, re.MULTILINE)
    tracked = devstack.tracked_statements(binary) if binary else 0
    bouncer = devstack.PgBouncer(
        data_dir / "pgbouncer",
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


def statement_cache_of(env: dict[str, str]) -> bool:
    """Whether the API keeps asyncpg's statement cache with `env` (its whole environment, --env
    included): what its own Settings make of it."""
    with mock.patch.dict(os.environ, env, clear=True):
        return Settings(_env_file=None).statement_cache


def track_statements(postgres: devstack.EmbeddedPostgres, *, on: bool) -> None:
    """pg_stat_statements counts only while statements are being counted, not under load."""
    postgres.psql(f"ALTER SYSTEM SET pg_stat_statements.track = '{'top' if on else 'none'}'")
    postgres.psql("SELECT pg_reload_conf()")
    time.sleep(0.5)  # backends (PgBouncer's idle server connections too) reload on their own


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


class Meter:
    """CPU time during a measured run, per process group: each of ours (uvicorn and its
    workers, PgBouncer, PostgreSQL and its backends, the load generator: our waited-for
    children) and everybody else's. On a shared machine the last says how much of the
    figures is somebody else's doing; per request, ours say where the time goes whatever the
    machine's load."""

    def __init__(self, groups: dict[str, int]) -> None:
        self.groups = groups  # name -> root pid
        self.started = time.monotonic()
        self.steal = self._steal_ticks()
        self.children = self._children_seconds()
        self.before = self._ticks()

    @staticmethod
    def _steal_ticks() -> int:
        """CPU time the hypervisor gave to other machines (a virtual machine's "steal")."""
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        return int(fields[8]) if len(fields) > 8 else 0

    @staticmethod
    def _children_seconds() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    def _ticks(self) -> dict[str, dict[int, int]]:
        table = processes()
        ours = descendants(table, {os.getpid()})
        found = {"others": {pid: t for pid, (_, t, _) in table.items() if pid not in ours}}
        for name, root in self.groups.items():
            found[name] = {pid: table[pid][1] for pid in descendants(table, {root})}
        return found

    def read(self, requests: int, client: str) -> tuple[float, dict[str, float]]:
        """Others' CPU in % of the machine; ours in ms per request, by group."""
        after = self._ticks()
        hz = os.sysconf("SC_CLK_TCK")
        seconds = {
            name: sum(max(0, t - self.before[name].get(pid, 0)) for pid, t in pids.items()) / hz
            for name, pids in after.items()
        }
        seconds[client] = self._children_seconds() - self.children
        elapsed = (time.monotonic() - self.started) * (os.cpu_count() or 1)
        seconds["others"] += (self._steal_ticks() - self.steal) / hz
        others = round(100 * seconds.pop("others") / elapsed, 1) if elapsed else 0.0
        per_request = {k: round(1000 * v / max(requests, 1), 3) for k, v in seconds.items()}
        return others, per_request


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


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
) -> Iterator[Server]:
    port = devstack.free_port()
    label = f"{workers} worker{'s' if workers > 1 else ''}"
    # As the Docker image runs uvicorn (deploy/Dockerfile), with the worker count and a loopback
    # port, through serve.py: the same command line, plus the loop-lag sampler and any
    # experiment's engine arguments.
    lag_dir = log.with_suffix(".lag")
    shutil.rmtree(lag_dir, ignore_errors=True)
    lag_dir.mkdir(parents=True)
    env = {**env, "BENCH_LOOP_LAG_DIR": str(lag_dir)}
    command = [*pinned(cpus), sys.executable, "-m", "bench.serve", "--factory", factory]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    command += ["--timeout-graceful-shutdown", "10"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=devstack.ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=devstack.child_setup(None, signal.SIGTERM),
        )
    server = Server(label, f"http://127.0.0.1:{port}", process, workers, lag_dir)
    try:
        wait_until_ready(server, log)
        if factory == API:
            server.tokens = log_in(server.url, password, sign_up=first)
        yield server
    finally:
        devstack.terminate(process, signal.SIGTERM)


def pinned(cpus: str) -> list[str]:
    """The prefix that runs a command on the CPUs listed (taskset's list: "1", "0-1")."""
    return [tool("taskset", "util-linux provides it"), "-c", cpus] if cpus else []


def wait_until_ready(server: Server, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise BenchError(f"uvicorn exited:\n{log.read_text(errors='replace')[-3000:]}")
        with contextlib.suppress(httpx.TransportError):
            answer = httpx.get(f"{server.url}/health/ready", timeout=2)
            if answer.status_code == 200 and len(server.worker_pids()) == server.workers:
                return
        time.sleep(0.2)
    raise BenchError(f"uvicorn was not ready in 60 s:\n{log.read_text(errors='replace')[-3000:]}")


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


# --- the stack, the dataset ----------------------------------------------------------------


def prepare_database(postgres: devstack.EmbeddedPostgres, env: dict[str, str]) -> float:
    """A fresh database, migrated and loaded; the seconds the load took."""
    postgres.drop_database(DATABASE)
    postgres.create_database(DATABASE)
    postgres.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", DATABASE)
    migrate = [sys.executable, "-m", "alembic", "upgrade", "head"]
    result = run_quiet(migrate, cwd=devstack.ROOT, env=env)
    if result.returncode != 0:
        raise BenchError(f"migrations failed:\n{result.stdout}\n{result.stderr}")
    started = time.perf_counter()
    psql_file(postgres, DATASET, **dataset_variables())
    postgres.psql("VACUUM ANALYZE", DATABASE)
    return time.perf_counter() - started


def dataset_variables() -> dict[str, str]:
    """dataset.sql's psql variables: one real hash of a random password, from the app's own
    hasher, shared by every generated user (nobody logs in as them)."""
    from api.core import security  # imported only when needed

    return {"hashed_password": security.password_hash.hash(secrets.token_urlsafe(16))}


def deep_cursor(url: str, deep_page: int) -> tuple[str, list[int]]:
    """The `next_cursor` of the page before `deep_page` (by offset), and the ids of `deep_page`
    by offset, which the cursor's page must repeat."""
    with httpx.Client(base_url=url, timeout=60) as client:
        before = client.get("/products/", params={"page": deep_page - 1, "size": PAGE_SIZE})
        deep = client.get("/products/", params={"page": deep_page, "size": PAGE_SIZE})
        if before.status_code != 200 or deep.status_code != 200:
            raise BenchError(f"deep pages answered {before.status_code}, {deep.status_code}")
        cursor = before.json()["next_cursor"]
        if not cursor:
            raise BenchError(f"page {deep_page - 1} has no next_cursor")
        by_cursor = client.get("/products/", params={"cursor": cursor, "size": PAGE_SIZE})
    ids = [item["id"] for item in deep.json()["items"]]
    if [item["id"] for item in by_cursor.json()["items"]] != ids:
        raise BenchError("the cursor's page is not the offset's page")
    return cursor, ids


# --- measuring -----------------------------------------------------------------------------


def headers_for(shape: Shape, server: Server) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.tokens[shape.auth]}"} if shape.auth else {}


def send_checked(url: str, shape: Shape, headers: dict[str, str], requests: int, seed: str) -> None:
    """Send `requests` requests of `shape` one after another; each must answer its exact status
    (redirects are not followed, so a 3xx fails too)."""
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=60, headers=headers) as client:
        for _ in range(requests):
            path, body = shape.draw(rng)
            answer = client.request(shape.method, path, json=body)
            if answer.status_code != shape.status:
                raise BenchError(
                    f"{shape.label}: {shape.method} {path} answered {answer.status_code}"
                    f" (expected {shape.status}): {answer.text[:500]}"
                )


@dataclass
class Counted:
    """What the database executed per request of one shape."""

    total: float
    kinds: dict[str, float]  # app, transaction (BEGIN/COMMIT/SAVEPOINT...), driver
    queries: list[dict[str, Any]]  # each statement: per request, kind, its text (shortened)


def count_statements(
    postgres: devstack.EmbeddedPostgres, server: Server, shape: Shape, requests: int
) -> Counted:
    """Send `requests` requests of `shape` one after another, each of which must answer its
    status, and divide what pg_stat_statements counted in the benchmark database by them.

    pg_stat_statements counts every statement the server executed, whoever sent it: the app's
    queries, BEGIN/COMMIT/SAVEPOINT (track_utility is on) and the driver's own queries (type
    introspection reads pg_catalog), so driver set-up per connection shows here too. A statement
    prepared and then executed counts once (the Parse round trip is not a statement).
    """
    postgres.psql("SELECT pg_stat_statements_reset()", DATABASE)
    send_checked(server.url, shape, headers_for(shape, server), requests, f"count-{shape.key}")
    time.sleep(0.2)
    result = postgres.psql(
        "SELECT coalesce(json_agg(json_build_object('calls', calls, 'query', query)"
        " ORDER BY calls DESC, query), '[]') FROM pg_stat_statements WHERE dbid = "
        f"(SELECT oid FROM pg_database WHERE datname = '{DATABASE}')",
        DATABASE,
    )
    kinds = {"app": 0.0, "transaction": 0.0, "driver": 0.0}
    queries = []
    for entry in json.loads(result.stdout):
        text = " ".join(entry["query"].split())
        query = text.upper()
        if "PG_STAT_STATEMENTS" in query:
            continue
        if re.match(r"(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|START TRANSACTION)\b", query):
            kind = "transaction"
        elif "PG_CATALOG." in query or "PG_TYPE" in query or query.startswith(("SHOW", "SET")):
            kind = "driver"
        else:
            kind = "app"
        per_request = entry["calls"] / requests
        kinds[kind] += per_request
        queries.append({"per_request": round(per_request, 2), "kind": kind, "query": text[:300]})
    return Counted(
        round(sum(kinds.values()), 2), {k: round(v, 2) for k, v in kinds.items()}, queries
    )


@dataclass
class Load:
    connections: int
    threads: int  # wrk's
    pgbench_threads: int
    warmup: int
    duration: int
    timeout: int
    wrk_cpus: str = ""  # taskset's CPU list for wrk; "" lets the kernel place it


def run_wrk(
    wrk: str, url: str, tokens: dict[str, str], shape: Shape, load: Load, seconds: int
) -> dict[str, int]:
    """One wrk run of `shape` against the API at `url` (wrk.lua); its BENCH_JSON figures."""
    env = {
        **os.environ,
        "BENCH_METHOD": shape.method,
        "BENCH_PATH": shape.path,
        "BENCH_IDS": str(shape.ids),
        "BENCH_LINES": str(shape.lines),
        "BENCH_PRODUCTS": str(PRODUCTS),
        "BENCH_TOKEN": tokens[shape.auth] if shape.auth else "",
    }
    args = [*pinned(load.wrk_cpus), wrk, f"-t{load.threads}", f"-c{load.connections}"]
    args += [f"-d{seconds}s"]
    args += [f"--timeout={load.timeout}s", "-s", str(HERE / "wrk.lua"), url]
    result = run_quiet(args, env=env)
    for line in result.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            figures: dict[str, int] = json.loads(line.removeprefix("BENCH_JSON "))
            return figures
    raise BenchError(f"wrk gave no figures ({result.returncode}):\n{result.stdout}{result.stderr}")


def measure(wrk: str, server: Server, shape: Shape, load: Load, groups: dict[str, int]) -> Row:
    if load.warmup:
        run_wrk(wrk, server.url, server.tokens, shape, load, load.warmup)
    meter = Meter({"app": server.process.pid, **groups})
    waited = run_queue_ns(server)
    started = time.time()
    figures = run_wrk(wrk, server.url, server.tokens, shape, load, load.duration)
    ended = time.time()
    waited = {pid: ns - waited.get(pid, ns) for pid, ns in run_queue_ns(server).items()}
    others, cpu = meter.read(figures["requests"], "wrk")
    return Row(
        **wrk_figures(server.label, shape, figures),
        rss_mb=server.rss_mb(),
        other_cpu_pct=others,
        cpu_ms=cpu,
        loop_lag_ms=loop_lag(server, started, ended),
        run_queue_pct=(
            round(max(waited.values()) / ((ended - started) * 1e7), 1) if waited else None
        ),
    )


def wrk_figures(server: str, shape: Shape, figures: dict[str, int]) -> dict[str, Any]:
    """A Row's fields from one wrk run's figures: rate, latencies, errors by kind."""
    kinds = {k: figures[k] for k in ("connect", "read", "write", "timeout", "status") if figures[k]}
    return {
        "server": server,
        "key": shape.key,
        "label": shape.label,
        "rps": round(figures["requests"] / (figures["duration_us"] / 1e6), 1),
        "p50_ms": round(figures["p50_us"] / 1000, 2),
        "p99_ms": round(figures["p99_us"] / 1000, 2),
        "requests": figures["requests"],
        "errors": sum(kinds.values()),
        "error_kinds": kinds,
    }


def run_queue_ns(server: Server) -> dict[int, int]:
    """Each worker's time so far ready to run but waiting for a CPU, in ns (its main thread's,
    the one running the event loop)."""
    found = {}
    for pid in server.worker_pids():
        with contextlib.suppress(OSError, IndexError, ValueError):
            found[pid] = int(Path(f"/proc/{pid}/schedstat").read_text().split()[1])
    return found


def loop_lag(server: Server, started: float, ended: float) -> dict[str, float] | None:
    """The workers' loop lag between two wall times, from serve.py's files: p50, p99 and max
    in ms, and the wakes counted. Waits up to 1.5 s (three flushes) for every worker to have
    written its wakes past the end.

    Under load a wake is late by a whole turn of the loop: every request's callbacks that were
    ready when it began. A max near what a few requests cost in CPU is a busy loop; far above
    it, with the worker not saturated, something blocked it or the kernel did not run it. A
    saturated row has a few hundred wakes, so its p99 is one of its latest few."""
    files = [server.lag_dir / f"{pid}.lag" for pid in server.worker_pids()]
    lags: list[float] = []
    deadline = time.monotonic() + 1.5
    while True:
        lags.clear()
        newest = dict.fromkeys(files, 0.0)
        for path in files:
            with contextlib.suppress(OSError):
                text = path.read_text()
                # Only whole lines: a flush may be read while it is being written.
                for line in text[: text.rfind("\n") + 1].splitlines():
                    at, lag = (float(v) for v in line.split())
                    newest[path] = max(newest[path], at)
                    if started <= at <= ended:
                        lags.append(lag)
        if min(newest.values(), default=ended) >= ended or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if not lags:
        return None
    lags.sort()
    return {
        "p50": round(percentile(lags, 50), 1),
        "p99": round(percentile(lags, 99), 1),
        "max": round(lags[-1], 1),
        "wakes": len(lags),
    }


def pgbench_script(directory: Path) -> Path:
    """`GET /products/{id}`'s query, compiled from the ORM model, with a random id."""
    from sqlalchemy.dialects import postgresql

    from bench.bare import product_query

    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    sql = str(product_query().compile(dialect=dialect)).replace("%(id)s", ":id")
    script = directory / "product.sql"
    script.write_text(f"\\set id random(1, {PRODUCTS})\n{' '.join(sql.split())};\n")
    return script


def run_pgbench(
    postgres: devstack.EmbeddedPostgres,
    port: int,
    label: str,
    key: str,
    load: Load,
    groups: dict[str, int],
    *,
    reconnect: bool = False,
) -> Row:
    """pgbench at the same concurrency, extended protocol with unnamed statements (what asyncpg
    sends with its statement cache off); latencies from its per-transaction log."""
    with tempfile.TemporaryDirectory(prefix="bench-pgbench-") as tmp:
        directory = Path(tmp)
        args = [str(postgres.bin_dir / "pgbench"), "-n", "-M", "extended"]
        args += ["-c", str(load.connections), "-j", str(load.pgbench_threads)]
        args += ["-f", str(pgbench_script(directory))]
        args += ["-h", "127.0.0.1", "-p", str(port), "-U", devstack.SUPERUSER]
        if reconnect:
            args.append("-C")
        env = {**os.environ, "PGPASSWORD": postgres.password}
        if load.warmup:
            run_quiet([*args, "-T", str(load.warmup), DATABASE], env=env, cwd=directory)
        measured = [*args, "-T", str(load.duration), "-l", f"--log-prefix={directory}/tx"]
        meter = Meter(groups)
        result = run_quiet([*measured, DATABASE], env=env, cwd=directory)
        latencies = sorted(
            int(line.split()[2])
            for log in directory.glob("tx.*")
            for line in log.read_text().splitlines()
        )
        others, cpu = meter.read(len(latencies), "pgbench")
    tps = re.search(r"^tps = ([\d.]+)", result.stdout, re.MULTILINE)
    failed = re.search(r"number of failed transactions: (\d+)", result.stdout)
    errors = int(failed.group(1)) if failed else 0
    if result.returncode != 0 or tps is None or not latencies:
        errors = max(errors, 1)
        say(f"pgbench {label} failed ({result.returncode}): {result.stderr.strip()[-500:]}")
    return Row(
        server="postgres",
        key=key,
        label=label,
        rps=round(float(tps.group(1)), 1) if tps else 0.0,
        p50_ms=round(percentile(latencies, 50) / 1000, 2),
        p99_ms=round(percentile(latencies, 99) / 1000, 2),
        requests=len(latencies),
        errors=errors,
        statements=1.0,
        other_cpu_pct=others,
        cpu_ms=cpu,
    )


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    if not sorted_values:
        return 0.0
    return float(sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * pct / 100))])


# --- the table -----------------------------------------------------------------------------


def median_row(runs: list[Row]) -> Row:
    """The round with the median rate (the lower middle of an even count), with every round's
    rate and the worst round's tail (p99/p50) kept in it; a run with errors in any round is
    reported as failed, with the most errors."""
    row = sorted(runs, key=lambda r: r.rps)[(len(runs) - 1) // 2]
    if len(runs) > 1:
        row.round_rps = [r.rps for r in runs]
        tails = [(r.p99_ms / r.p50_ms, r) for r in runs if r.p50_ms]
        if tails:
            tail, worst_round = max(tails, key=lambda pair: pair[0])
            row.worst_tail, row.worst_tail_loop = tail, lag_cell(worst_round)
        worst = max(runs, key=lambda r: r.errors)
        if worst.errors > row.errors:
            row.errors, row.error_kinds = worst.errors, worst.error_kinds
    return row


def fill_ratios(rows: list[Row]) -> None:
    health = {row.server: row.rps for row in rows if row.key == "health"}
    floor = next(iter(health.values()), None)
    for row in rows:
        base = health.get(row.server, floor)
        row.ratio = round(row.rps / base, 3) if base else None


def cpu_cell(cpu: dict[str, float] | None) -> str:
    if not cpu:
        return ""
    parts = [cpu.get("app"), cpu.get("pgbouncer"), cpu.get("postgres")]
    return "+".join("-" if v is None else f"{v:.2f}" for v in parts)


def lag_cell(row: Row) -> str:
    cells = []
    if row.loop_lag_ms:
        cells.append(f"{row.loop_lag_ms['p99']:.0f}/{row.loop_lag_ms['max']:.0f}")
    if row.run_queue_pct is not None:
        cells.append(f"{row.run_queue_pct:.0f}%")
    return ", ".join(cells)


def table(rows: list[Row]) -> str:
    head = ["server", "request", "rps", "p50 ms", "p99 ms", "errors", "x /health", "SQL/req"]
    head += ["CPU ms/req app+pgb+pg", "RSS MB", "other CPU", "loop lag p99/max ms, run queue"]
    rounds = any(row.round_rps for row in rows)
    if rounds:
        head.append("rps by round")
    lines = [head]
    for row in rows:
        statements = "" if row.statements is None else f"{row.statements:g}"
        if row.statement_kinds and row.statement_kinds.get("transaction"):
            app = row.statement_kinds["app"] + row.statement_kinds["driver"]
            statements += f" ({app:g}+{row.statement_kinds['transaction']:g} tx)"
        lines.append(
            [
                row.server,
                row.label,
                f"{row.rps:,.0f}",
                f"{row.p50_ms:.1f}",
                f"{row.p99_ms:.1f}",
                f"FAILED {row.errors}" if row.failed else "0",
                "" if row.ratio is None else f"{row.ratio:.3f}",
                statements,
                cpu_cell(row.cpu_ms),
                "" if not row.rss_mb else "/".join(f"{mb:.0f}" for mb in row.rss_mb),
                "" if row.other_cpu_pct is None else f"{row.other_cpu_pct:.0f}%",
                lag_cell(row),
            ]
            + ([" ".join(f"{rps:,.0f}" for rps in row.round_rps or [])] if rounds else [])
        )
    return aligned(lines, right={2, 3, 4, 5, 6, 9, 10, 11})


def aligned(lines: list[list[str]], right: set[int]) -> str:
    """A text table: the first line is the head, underlined; the columns in `right` (by index)
    are right-aligned, the others left-aligned."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = []
    for n, line in enumerate(lines):
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


@dataclass
class Target:
    name: str
    value: str
    met: bool


def targets(rows: list[Row], pool_mode: str) -> list[Target]:
    """Issue 6's targets, on the one-worker server (ratios to its own /health)."""
    server = next((r.server for r in rows if r.server == "1 worker"), None)
    server = server or next((r.server for r in rows if r.server != "postgres"), None)
    mine = {row.key: row for row in rows if row.server == server}
    found: list[Target] = []

    def ratio_of(a: str, b: str, floor: float, name: str) -> None:
        if a in mine and b in mine and mine[b].rps:
            value = mine[a].rps / mine[b].rps
            found.append(Target(name, f"{value:.2f}x", value >= floor))

    if "product" in mine and mine["product"].ratio is not None:
        floor = 0.25 if pool_mode == "queue" else 0.12
        value = mine["product"].ratio
        found.append(
            Target(
                f"GET /products/{{id}} >= {floor}x /health ({pool_mode} pool)",
                f"{value:.3f}x",
                value >= floor,
            )
        )
    # Against the bare handler (bench/bare.py) on this machine, in this run: the driver's
    # ceiling measured beside the route, not assumed.
    ratio_of(
        "product",
        "bare",
        0.8,
        "GET /products/{id} >= 0.8x the bare asyncpg handler (SQLAlchemy and ours <= 1/4 on top)",
    )
    ratio_of("page1", "product", 0.5, "page 1 >= 0.5x GET /products/{id}")
    ratio_of("cursor", "offset", 5.0, "deep page by cursor >= 5x by offset")
    ratio_of("post10", "post1", 0.5, "POST /orders/ 10 lines >= 0.5x 1 line")
    app_rows = [row for row in rows if row.server != "postgres"]
    # With --rounds, a row's worst round counts, not only the median one shown.
    slow = []
    for row in app_rows:
        tail = row.worst_tail or (row.p99_ms / row.p50_ms if row.p50_ms else 0.0)
        if tail > 3:
            # What its loop did in that round: busy, blocked, or not run at all.
            loop = row.worst_tail_loop if row.worst_tail else lag_cell(row)
            slow.append(
                f"{row.server} {row.key} {tail:.1f}x"
                + (f" (loop lag p99/max ms, run queue: {loop})" if loop else "")
            )
    found.append(
        Target("p99 <= 3x p50 in every row (every round)", ", ".join(slow) or "all rows", not slow)
    )
    failed = [f"{r.server} {r.key}" for r in rows if r.failed]
    found.append(Target("zero errors in every row", ", ".join(failed) or "none", not failed))
    rss = max((mb for r in app_rows for mb in r.rss_mb or []), default=0.0)
    found.append(Target("worker RSS < 120 MB after the runs", f"{rss:.0f} MB", rss < 120))
    return found


# --- the machine ---------------------------------------------------------------------------


def first_line(args: list[str]) -> str:
    with contextlib.suppress(OSError):
        result = run_quiet(args)
        return (result.stdout or result.stderr).strip().splitlines()[0]
    return "?"


def machine(postgres: devstack.EmbeddedPostgres, wrk: str) -> dict[str, Any]:
    return {
        **host(wrk),
        "python": platform.python_version(),
        "postgres": first_line([str(postgres.bin_dir / "postgres"), "--version"]),
        "pgbouncer": first_line([devstack.make_run_pgbouncer() or "pgbouncer", "--version"]),
    }


def host(wrk: str, dirty_paths: Sequence[str] = ("api/",)) -> dict[str, Any]:
    """The machine, wrk and the checkout's commit (+dirty when any of `dirty_paths` differs)."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    memory = re.search(r"^MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text(), re.MULTILINE)
    commit = first_line(["git", "-C", str(devstack.ROOT), "rev-parse", "--short", "HEAD"])
    git_status = ["git", "-C", str(devstack.ROOT), "status", "--porcelain", "--", *dirty_paths]
    dirty = " ".join(dirty_paths) if run_quiet(git_status).stdout else ""
    return {
        "cpu": model.group(1) if model else platform.processor(),
        "cores": os.cpu_count(),
        "memory_gib": round(int(memory.group(1)) / 1024 / 1024, 1) if memory else None,
        "os": platform.platform(),
        "wrk": first_line([wrk, "-v"]),
        "commit": commit + (f"+dirty {dirty}" if dirty else ""),
        "load_average_at_start": os.getloadavg(),
    }


# --- main ----------------------------------------------------------------------------------


def at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not 1 or more")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Measure the API on the make-run stack."
    )
    parser.add_argument("--workers", default="1,2", help="uvicorn worker counts (default 1,2)")
    parser.add_argument("--duration", type=int, default=10, help="seconds measured per row")
    parser.add_argument("--warmup", type=int, default=5, help="seconds of warm-up per row")
    parser.add_argument(
        "--rounds",
        type=at_least_one,
        default=1,
        help="measure each row N times, in rotation, and report the median round: a ratio to"
        " /health then compares medians, not one /health run against later rows",
    )
    parser.add_argument(
        "--connections", type=int, default=50, help="wrk connections, pgbench clients"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="wrk threads (default 1: wrk needs little CPU a request, and on two cores a second"
        " thread competes with a one-worker server for its core)",
    )
    parser.add_argument(
        "--wrk-cpus",
        default=str(max(cpus)) if len(cpus := os.sched_getaffinity(0)) > 1 else "",
        help="run wrk on these CPUs only (taskset's list; '' lets the kernel place it). Default:"
        " the last CPU this process may use: placed by the kernel, wrk and a one-worker server"
        " take turns on one core, and the tail latencies are wrk's own",
    )
    parser.add_argument(
        "--app-cpus",
        default="",
        help="run the uvicorn servers on these CPUs only (e.g. 0); PostgreSQL and PgBouncer"
        " stay unpinned",
    )
    parser.add_argument(
        "--pgbench-threads",
        type=at_least_one,
        default=2,
        help="pgbench threads (default 2: with one, pgbench's own client holds it back)",
    )
    parser.add_argument("--timeout", type=int, default=10, help="wrk's per-request timeout, s")
    parser.add_argument("--deep-page", type=int, default=4000, help="the deep page's number")
    parser.add_argument("--count", type=int, default=20, help="requests per statement count")
    parser.add_argument(
        "--only", default="", help="request shapes to run, e.g. health,product (default: all)"
    )
    parser.add_argument("--no-pgbench", action="store_true", help="skip the pgbench rows")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra setting for the API processes, e.g. DB_POOL_MODE=queue (repeatable)",
    )
    parser.add_argument(
        "--url-query",
        default="",
        help="appended to the app's DATABASE_URL, e.g. ssl=disable (asyncpg connect arguments)",
    )
    parser.add_argument(
        "--connect-args",
        default="",
        metavar="JSON",
        help="an experiment: asyncpg connect arguments merged over api/core/db.py's (serve.py)",
    )
    parser.add_argument(
        "--engine-args",
        default="",
        metavar="JSON",
        help="an experiment: create_async_engine arguments merged over api/core/db.py's",
    )
    parser.add_argument(
        "--userlist",
        choices=("plain", "scram"),
        default="scram",
        help="PgBouncer's auth file: the server's SCRAM secret (as make run) or the password",
    )
    parser.add_argument(
        "--pgbouncer",
        action="append",
        default=[],
        metavar="SETTING",
        help="a PgBouncer setting appended to the template's, e.g. 'auth_type = md5' (repeatable);"
        " a max_prepared_statements replaces make run's (200 from 1.21 on, else 0), and the app's"
        " statement cache follows it unless --env PGBOUNCER_PREPARED_STATEMENTS says otherwise",
    )
    parser.add_argument("--label", default="", help="a note recorded with the results")
    parser.add_argument(
        "--data-dir", type=Path, default=devstack.ROOT / ".data" / "bench", help="cluster, logs"
    )
    return parser.parse_args(argv)


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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return entry(
        lambda: run(args),
        report=say,
        interrupted="interrupted; everything it started is stopped",
        failures=(BenchError, devstack.DevStackError),
    )


def run(args: argparse.Namespace) -> int:
    wrk = tool("wrk", "`make bench` installs it (apt-get install wrk)")
    if devstack.make_run_pgbouncer() is None:
        raise BenchError(devstack.PGBOUNCER_INSTALL_HINT)
    worker_counts = [int(n) for n in args.workers.split(",") if n.strip()]
    only = {key.strip() for key in args.only.split(",") if key.strip()}
    load = Load(
        args.connections, args.threads, args.pgbench_threads, args.warmup, args.duration,
        args.timeout, args.wrk_cpus,
    )  # fmt: skip
    extra = dict(item.split("=", 1) for item in args.env)
    for name, value in (
        ("BENCH_CONNECT_ARGS", args.connect_args),
        ("BENCH_ENGINE_ARGS", args.engine_args),
    ):
        if value:
            json.loads(value)  # fail now, not in the server
            extra[name] = value
    data_dir: Path = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(18)
    started_at = datetime.now(UTC)
    rows: list[Row] = []
    with contextlib.ExitStack() as stack:
        postgres = stack.enter_context(running_postgres(data_dir))
        bouncer = stack.enter_context(
            running_pgbouncer(data_dir, postgres, args.userlist, "\n".join(args.pgbouncer))
        )
        cache = bouncer.statement_cache_env()
        say(
            f"PostgreSQL on 127.0.0.1:{postgres.port}, PgBouncer on 127.0.0.1:{bouncer.port}"
            f" (max_prepared_statements = {bouncer.max_prepared_statements})"
        )
        url = bouncer.url(DATABASE) + (f"?{args.url_query}" if args.url_query else "")
        env = {
            **os.environ,
            "ENVIRONMENT": "production",
            "SECRET_KEY": secrets.token_urlsafe(48),
            "DATABASE_URL": url,
            "DB_POOL_MODE": "null",
            "MIGRATIONS_DATABASE_URL": postgres.url(DATABASE),
            "LOG_JSON": "true",
            "LOG_LEVEL": "INFO",
            "ACCESS_TOKEN_EXPIRE_MINUTES": "240",
            "FIRST_SUPERUSER_EMAIL": ADMIN["email"],
            "FIRST_SUPERUSER_USERNAME": ADMIN["username"],
            "FIRST_SUPERUSER_PASSWORD": password,
            **cache,
            **extra,
        }
        load_seconds = prepare_database(postgres, env)
        say(
            f"dataset loaded in {load_seconds:.1f} s: {PRODUCTS:,} products in {CATEGORIES}"
            f" categories, {USERS:,} users, {ORDERS:,} orders with 1-5 items each"
        )
        info = machine(postgres, wrk)
        assert postgres.process is not None
        assert bouncer.process is not None
        groups = {"pgbouncer": bouncer.process.pid, "postgres": postgres.process.pid}
        counts: dict[str, Counted] = {}
        cursor = ""
        for n, workers in enumerate(worker_counts):
            with contextlib.ExitStack() as servers:
                # The API first (the cursor comes from it); the bare handler, when asked for, on
                # a server of its own beside it, so that its rounds rotate with the API's.
                api = servers.enter_context(
                    serving(env, workers, data_dir / f"uvicorn-{workers}.log", password,
                            first=n == 0, factory=API, cpus=args.app_cpus)
                )  # fmt: skip
                if not cursor:
                    cursor, _ = deep_cursor(api.url, args.deep_page)
                todo = [s for s in shapes(args.deep_page, cursor) if not only or s.key in only]
                by_app = {API: api}
                if any(shape.app == BARE for shape in todo):
                    by_app[BARE] = servers.enter_context(
                        serving(env, workers, data_dir / f"uvicorn-{workers}-bare.log", password,
                                first=False, factory=BARE, cpus=args.app_cpus)
                    )  # fmt: skip
                if any(shape.key not in counts for shape in todo):
                    say("counting SQL statements per request (pg_stat_statements)")
                    track_statements(postgres, on=True)
                    for shape in todo:
                        if shape.key not in counts:
                            counts[shape.key] = count_statements(
                                postgres, by_app[shape.app], shape, args.count
                            )
                    track_statements(postgres, on=False)
                runs: dict[str, list[Row]] = {}
                for round_ in range(1, args.rounds + 1):
                    for shape in todo:
                        server = by_app[shape.app]
                        of = f", round {round_} of {args.rounds}" if args.rounds > 1 else ""
                        say(
                            f"{server.label}: {shape.label}"
                            f" ({load.warmup} s + {load.duration} s{of})"
                        )
                        runs.setdefault(shape.key, []).append(
                            measure(wrk, server, shape, load, groups)
                        )
            for shape in todo:
                row = median_row(runs[shape.key])
                counted = counts[shape.key]
                row.statements, row.statement_kinds = counted.total, counted.kinds
                row.statement_queries = counted.queries
                rows.append(row)
        if not args.no_pgbench:
            for port, label, key, reconnect in (
                (postgres.port, "pgbench, the same query, direct", "pgbench_direct", False),
                (bouncer.port, "pgbench, via PgBouncer", "pgbench_pgbouncer", False),
                (
                    bouncer.port,
                    "pgbench, via PgBouncer, a connection per query (-C)",
                    "pgbench_connect",
                    True,
                ),
            ):
                say(label)
                rows.append(
                    run_pgbench(postgres, port, label, key, load, groups, reconnect=reconnect)
                )
    fill_ratios(rows)
    pool_mode = env_pool_mode(extra)
    found = targets(rows, pool_mode)
    config = {
        "pool_mode": pool_mode,
        "tls_to_pgbouncer": tls_mode(args.url_query, extra),
        "statement_cache": statement_cache_of(env),
        "pgbouncer_userlist": args.userlist,
        "pgbouncer_settings": args.pgbouncer,
        "url_query": args.url_query,
        "env": extra,
        "connections": load.connections,
        "threads": load.threads,
        "wrk_cpus": load.wrk_cpus,
        "app_cpus": args.app_cpus,
        "pgbench_threads": load.pgbench_threads,
        "warmup_s": load.warmup,
        "duration_s": load.duration,
        "rounds": args.rounds,
        "deep_page": args.deep_page,
        "label": args.label,
    }
    report(rows, found, info, config, load_seconds, started_at)
    return 0


def env_pool_mode(extra: dict[str, str]) -> str:
    return extra.get("DB_POOL_MODE", "null")


def tls_mode(url_query: str, extra: dict[str, str]) -> str:
    """What the app negotiates: a URL `ssl=` wins, else the DB_TLS setting (default disable)."""
    match = re.search(r"(?:^|&)ssl=([^&]+)", url_query)
    if match:
        return match.group(1)
    return f"DB_TLS={extra.get('DB_TLS') or os.environ.get('DB_TLS') or 'disable'}"


def report(
    rows: list[Row],
    found: list[Target],
    info: dict[str, Any],
    config: dict[str, Any],
    load_seconds: float,
    started_at: datetime,
) -> None:
    print()
    print(
        f"make bench, {started_at:%Y-%m-%d %H:%M} UTC: {info['cores']} cores ({info['cpu']}),"
        f" {info['python']}, {info['postgres']}, {info['pgbouncer']}"
    )
    print(
        f"app: uvicorn, DB_POOL_MODE={config['pool_mode']} through PgBouncer (transaction mode),"
        f" TLS to PgBouncer: {config['tls_to_pgbouncer']},"
        f" statement cache {'on' if config['statement_cache'] else 'off'}"
    )
    print(
        f"PgBouncer auth file: {config['pgbouncer_userlist']}"
        + (f"; PgBouncer: {config['pgbouncer_settings']}" if config["pgbouncer_settings"] else "")
        + (f"; DATABASE_URL query: {config['url_query']}" if config["url_query"] else "")
        + (f"; env: {config['env']}" if config["env"] else "")
    )
    print(
        f"load: wrk, {config['connections']} connections, {config['threads']} threads"
        f" (pgbench: {config['pgbench_threads']}),"
        f" {config['warmup_s']} s warm-up + {config['duration_s']} s per row"
        + (f", the median of {config['rounds']} rounds" if config["rounds"] > 1 else "")
        + (f"; wrk on CPUs {config['wrk_cpus']}" if config["wrk_cpus"] else "")
        + (f"; the app on CPUs {config['app_cpus']}" if config["app_cpus"] else "")
    )
    print()
    print(table(rows))
    print()
    for line in (
        "SQL/req: statements the database executed per request (pg_stat_statements): app and",
        "driver (+ BEGIN/COMMIT/SAVEPOINT). x /health: to /health of the same server (pgbench:",
        "of the first). CPU ms/req: CPU time of the app's workers, PgBouncer and PostgreSQL per",
        "request. RSS: each worker after its row. other CPU: what processes not started by the",
        "bench (and the hypervisor's steal) took during the row, in % of the machine. loop lag:",
        "how late the workers' event loops woke a task sleeping 5 ms, p99 and max over the row",
        "(a turn of a busy loop, a blocked loop, or a worker the kernel did not run), and the",
        "share of the row a worker waited in the kernel's run queue (the machine oversubscribed).",
    ):
        print(line)
    print()
    for target in found:
        print(f"  {'met   ' if target.met else 'MISSED'}  {target.name}: {target.value}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    document = {
        "started_at": started_at.isoformat(),
        "machine": info,
        "config": config,
        "dataset": {
            "products": PRODUCTS,
            "categories": CATEGORIES,
            "users": USERS,
            "orders": ORDERS,
            "load_seconds": round(load_seconds, 1),
        },
        "rows": [asdict(row) | {"failed": row.failed} for row in rows],
        "targets": [asdict(target) for target in found],
        "load_average_at_end": os.getloadavg(),
    }
    path = RESULTS / f"bench-{started_at:%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    shutil.copyfile(path, RESULTS / "latest.json")
    print(f"\nwritten to {path.relative_to(devstack.ROOT)}")
