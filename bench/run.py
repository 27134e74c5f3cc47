"""`make bench`: the API's speed on the stack `make run` starts, as one table.

This module holds the command line and the run's order; the rest lives beside it:
`stack.py` (PostgreSQL, PgBouncer, the servers and their processes), `dataset.py` (the SQL
dataset, the request shapes, statement counts), `load.py` (wrk, pgbench, the meters) and
`report.py` (rows, ratios, the table, the targets, the JSON).

What it does, from a clean clone:

1. starts an embedded PostgreSQL 18 (its cluster in `.data/bench/postgres`, kept between runs,
   with pg_stat_statements preloaded) and PgBouncer in transaction mode in front of it, both
   from `api.devstack` as `make run` does, on loopback only;
2. recreates the database `storefront_bench`, migrates it with Alembic (directly, never
   through PgBouncer) and loads a deterministic dataset generated in SQL (`dataset.sql`);
3. for each worker count (one by default; `--workers 1,2` adds two) starts uvicorn with the
   production settings (ENVIRONMENT=production, a generated SECRET_KEY, DB_POOL=null through
   PgBouncer, JSON logs with the app's access line per request, request ids, and Prometheus
   metrics counted in a multiprocess directory of the server's own) and launched as the Docker
   image launches it (`api.launch:create_app`, glibc's MALLOC_ENV), signs up a user and logs in
   that user and the first superuser; beside it, with the same settings and worker count, the
   yardsticks, each a server of its own: `bare.py` (bare asyncpg handlers for the single row,
   page 1 and the deep page by cursor, and FastAPI's floor) and `tutorial.py` (the app a user
   would write from the FastAPI + SQLAlchemy tutorials), all through `serve.py` (uvicorn's
   command line, with each worker's event-loop lag sampled). Each yardstick must answer its
   API request's JSON, and each bare handler send its statements, before anything is measured.
   For one worker, unless --no-pooled, the pooled arrangement runs beside it: the API with
   DB_POOL=queue and the bare handlers with an asyncpg pool, both through PgBouncer, and the
   tutorial-style app with its QueuePool straight to PostgreSQL. Every request shape is
   measured with wrk (`wrk.lua`, one thread by default, on the last CPU it may use): a warm-up
   run, then a measured run at 50 connections, three rounds in rotation by default. With
   `--variant` (another environment or factory) and `--baseline` (the API's code from another
   checkout), a server of each variant runs beside the default one, and every row is measured
   on each in turn, so that noise hits them alike. Unless --no-replica, a streaming replica of
   the cluster (pg_basebackup -R) with a PgBouncer of its own serves such a variant's anonymous
   reads (DATABASE_READ_URL): GET /products/ page 1 is measured on it beside the same request
   on the primary, the replica's CPU metered too;
4. counts the SQL statements each request shape sends (pg_stat_statements, see
   `dataset.count_statements`), reads the workers' RSS from /proc after each run and their
   loop lag during it;
5. runs pgbench on the same database with the same single-row query as `GET /products/{id}`,
   directly and through PgBouncer;
6. prints one table (and, with variants, each variant's rows beside its reference's), checks
   it against issue 23's targets (`report.targets`: ratios of rows measured in this run), and
   writes it as JSON to `bench/results/` (git-ignored).

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
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

from sqlalchemy.engine import make_url

import devstack
from api.core.config import Settings
from bench.dataset import (
    CATEGORIES,
    DATABASE,
    ORDERS,
    PRODUCTS,
    USERS,
    Counted,
    Shape,
    app_env,
    check_same_answers,
    count_statements,
    deep_cursor,
    prepare_database,
    shape_keys,
    shapes,
)
from bench.load import Load, measure, run_pgbench
from bench.report import (
    Row,
    Target,
    fill_ratios,
    machine,
    median_row,
    observability_cost,
    report,
    targets,
)
from bench.stack import (
    ADMIN,
    API,
    APP,
    BARE,
    TUTORIAL,
    YARDSTICKS,
    BenchError,
    Server,
    Variant,
    add_variant,
    at_least_one,
    entry,
    run_quiet,
    running_pgbouncer,
    running_postgres,
    running_replica,
    say,
    serving,
    tool,
    track_statements,
)

# --baseline serves these shapes only: the framework alone, and the route most read.
BASELINE_SHAPES = frozenset({"health", "product"})
# The pooled arrangement, one worker: the API with its own pool through PgBouncer, the bare
# handlers with an asyncpg pool through it, the tutorial-style app pooled straight to PostgreSQL.
POOLED = "pooled"
POOLED_SHAPES = frozenset({"product", "bare", "tutorial", "page1", "bare_page1", "tutorial_page1"})
# The tutorial-style app's URL straight to PostgreSQL (bench/tutorial.py).
TUTORIAL_DIRECT = "BENCH_TUTORIAL_DATABASE_URL"
# --tutorial-pgbouncer-pool: the tutorial-style app pooled through PgBouncer instead.
TUTORIAL_THROUGH_PGBOUNCER = "pooled, tutorial through PgBouncer"
# --pgbouncer-1.18: NullPool through the installed PgBouncer 1.18, statement cache off; its
# PgBouncer's CPU is metered as this group and shown as the PgBouncer's of its rows.
OLD_PGBOUNCER = "NullPool, PgBouncer 1.18"
OLD_PGBOUNCER_GROUP = "pgbouncer_1_18"
OLD_PGBOUNCER_SHAPES = frozenset({"product", "bare", "tutorial"})
# The replica's server (DATABASE_READ_URL) serves these, anonymously, beside the default one.
REPLICA = "reads on the replica"
REPLICA_SHAPES = frozenset({"page1"})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Measure the API on the make-run stack."
    )
    parser.add_argument(
        "--workers",
        default="1",
        help="uvicorn worker counts (default 1, where the targets are; 1,2 adds the two-worker"
        " rows, about 7 minutes more)",
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds measured per row")
    parser.add_argument("--warmup", type=int, default=5, help="seconds of warm-up per row")
    parser.add_argument(
        "--rounds",
        type=at_least_one,
        default=3,
        help="measure each row N times, in rotation, and report the median round (default 3):"
        " a ratio then compares medians taken over the same stretch of time",
    )
    parser.add_argument(
        "--fresh-servers",
        action="store_true",
        help="start every server afresh before each round after the first: a server process"
        " keeps a speed of its own for as long as it runs (up to 7 %% either way between twins),"
        " which the rounds then average over",
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
        "--only",
        default="",
        help="request shapes to run, e.g. health,product (default: all). The keys: "
        + ", ".join(shape.key for shape in shapes(2, "")),
    )
    parser.add_argument("--no-pgbench", action="store_true", help="skip the pgbench rows")
    parser.add_argument(
        "--no-pooled",
        action="store_true",
        help="skip the pooled arrangement (one worker: the API with DB_POOL=queue and the bare"
        " handlers pooled, both through PgBouncer, the tutorial-style app pooled straight to"
        " PostgreSQL)",
    )
    parser.add_argument(
        "--pgbouncer-1.18",
        dest="pgbouncer_118",
        action="store_true",
        help="also GET /products/{id} on the API, the bare handler and the tutorial-style app"
        " with NullPool through the installed PgBouncer (Debian 12's 1.18, which tracks no"
        f" prepared statements: DB_STATEMENT_CACHE=false), one worker (the variant"
        f" {OLD_PGBOUNCER!r})",
    )
    parser.add_argument(
        "--tutorial-pgbouncer-pool",
        action="store_true",
        help="also the tutorial-style app with its pool through PgBouncer, with the API's"
        f" connect arguments (the variant {TUTORIAL_THROUGH_PGBOUNCER!r}, one worker)",
    )
    parser.add_argument(
        "--no-replica",
        action="store_true",
        help="skip the replica pair: by default a streaming replica of the cluster, behind a"
        " PgBouncer of its own, serves a server's anonymous reads (DATABASE_READ_URL), and"
        " GET /products/ page 1 is measured on it beside the same request on the primary",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra setting for the API processes, e.g. DB_POOL=queue (repeatable)",
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
        " statement cache follows it unless --env DB_STATEMENT_CACHE says otherwise",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME[:KEY=VALUE|:-KEY|:factory=MODULE:ATTR]",
        help="servers launched another way, measured beside the default ones in the same run,"
        " rows interleaved: NAME's environment gets KEY=VALUE or loses KEY, or its API is"
        " another uvicorn factory (repeatable; every --variant of one NAME adds to it). E.g."
        f" --variant no-gc:factory={APP} (the app without api/launch.py's garbage-collector"
        " settling), --variant no-mallopt:-MALLOC_MMAP_THRESHOLD_",
    )
    parser.add_argument(
        "--observability-off",
        action="store_true",
        help="also serve the API with request ids, the access log and the metrics off (the"
        f" variant {OBSERVABILITY_OFF.name!r}), for what they cost GET /products/{{id}}",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="a checkout of another commit (git worktree add DIR COMMIT) whose API is served"
        " beside each server (its twin in every variant), for /health and GET /products/{id}",
    )
    parser.add_argument("--label", default="", help="a note recorded with the results")
    parser.add_argument(
        "--data-dir", type=Path, default=devstack.ROOT / ".data" / "bench", help="cluster, logs"
    )
    return parser.parse_args(argv)


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
    only = frozenset(key.strip() for key in args.only.split(",") if key.strip())
    chosen = variants(
        args.variant,
        args.baseline,
        observability_off=args.observability_off,
        pooled=not args.no_pooled,
        tutorial_pgbouncer_pool=args.tutorial_pgbouncer_pool,
    )
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
        say(
            f"PostgreSQL on 127.0.0.1:{postgres.port}, PgBouncer on 127.0.0.1:{bouncer.port}"
            f" (max_prepared_statements = {bouncer.max_prepared_statements})"
        )
        url = bouncer.url(DATABASE) + (f"?{args.url_query}" if args.url_query else "")
        env = {
            **app_env(postgres, bouncer, url),
            "ACCESS_TOKEN_EXPIRE_MINUTES": "240",
            "FIRST_SUPERUSER_EMAIL": ADMIN["email"],
            "FIRST_SUPERUSER_USERNAME": ADMIN["username"],
            "FIRST_SUPERUSER_PASSWORD": password,
            **extra,
        }
        for variant in chosen:
            if variant.name == POOLED:
                variant.env[TUTORIAL_DIRECT] = postgres.url(DATABASE)
        load_seconds = prepare_database(postgres, env)
        say(
            f"dataset loaded in {load_seconds:.1f} s: {PRODUCTS:,} products in {CATEGORIES}"
            f" categories, {USERS:,} users, {ORDERS:,} orders with 1-5 items each"
        )
        info = machine(postgres, wrk)
        assert postgres.process is not None
        assert bouncer.process is not None
        groups = {"pgbouncer": bouncer.process.pid, "postgres": postgres.process.pid}
        if not args.no_replica and (not only or REPLICA_SHAPES & only):
            replica = stack.enter_context(running_replica(data_dir, postgres))
            replica_bouncer = stack.enter_context(
                running_pgbouncer(
                    data_dir, replica, args.userlist, "\n".join(args.pgbouncer), "pgbouncer-replica"
                )
            )
            assert replica.process is not None
            assert replica_bouncer.process is not None
            groups |= {
                "replica_pgbouncer": replica_bouncer.process.pid,
                "replica": replica.process.pid,
            }
            chosen.append(
                Variant(
                    REPLICA,
                    {"DATABASE_READ_URL": replica_bouncer.url(DATABASE)},
                    keys=REPLICA_SHAPES,
                )
            )
        if args.pgbouncer_118:
            old = stack.enter_context(old_pgbouncer(data_dir, postgres, args))
            assert old.process is not None
            groups[OLD_PGBOUNCER_GROUP] = old.process.pid
            chosen.insert(
                1,
                Variant(
                    OLD_PGBOUNCER,
                    {"DATABASE_URL": old.url(DATABASE), "DB_STATEMENT_CACHE": "false"},
                    keys=OLD_PGBOUNCER_SHAPES,
                    workers=1,
                ),
            )
        stage = Stage(
            args, wrk, load, postgres, env, password, data_dir, chosen, only, groups=groups
        )  # fmt: skip
        for n, workers in enumerate(worker_counts):
            rows += measure_workers(stage, workers, first=n == 0)
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
                    run_pgbench(postgres, port, label, key, load, stage.groups, reconnect=reconnect)
                )
    fill_ratios(rows)
    api_settings = app_settings(env)
    pool_mode = api_settings.db_pool
    found = targets(rows, Variant().label(1), Variant(POOLED).label(1))
    found += same_statements(stage)
    config = {
        "pool_mode": pool_mode,
        "tls_to_pgbouncer": tls_mode(args.url_query, extra),
        "statement_cache": api_settings.db_statement_cache,
        "pgbouncer_userlist": args.userlist,
        "pgbouncer_settings": args.pgbouncer,
        "url_query": args.url_query,
        "env": extra,
        "variants": {
            v.name: {
                "env": without_passwords(v.env),
                "factory": v.factory,
                "api_root": v.api_root and str(v.api_root),
            }
            for v in chosen
            if v.name
        },
        "connections": load.connections,
        "threads": load.threads,
        "wrk_cpus": load.wrk_cpus,
        "app_cpus": args.app_cpus,
        "pgbench_threads": load.pgbench_threads,
        "warmup_s": load.warmup,
        "duration_s": load.duration,
        "rounds": args.rounds,
        "deep_page": args.deep_page,
        "replica": not args.no_replica,
        "pooled": not args.no_pooled,
        "label": args.label,
    }
    references = {
        v.label(workers): next(r for r in chosen if r.name == v.reference).label(workers)
        for v in chosen
        if v.name
        for workers in worker_counts
    }
    found += observability_cost(rows, OBSERVABILITY_OFF.label(1), Variant().label(1))
    report(rows, found, info, config, load_seconds, started_at, references)
    return 0


@dataclass
class Stage:
    """What every worker count's servers are measured with."""

    args: argparse.Namespace
    wrk: str
    load: Load
    postgres: devstack.EmbeddedPostgres
    env: dict[str, str]
    password: str
    data_dir: Path
    variants: list[Variant]
    only: frozenset[str]
    groups: dict[str, int]  # PgBouncer's and PostgreSQL's pids, for the meters
    counts: dict[tuple[str, str], Counted] = field(default_factory=dict)  # by variant, shape
    cursor: str = ""  # the deep page's, from the first API server


def measure_workers(stage: Stage, workers: int, *, first: bool) -> list[Row]:
    """Every request shape on servers of `workers` workers: for each variant served at that
    count, the API's server and, beside it, each yardstick's (bare.py's, tutorial.py's) that
    serves one of its shapes. The variants' rows are interleaved: in round r, shape i starts
    with the variant (r + i) mod n, so that none always runs first."""
    args = stage.args
    active = [v for v in stage.variants if v.workers in (None, workers)]
    everything = all_shapes(stage)
    with contextlib.ExitStack() as servers:
        by_server: dict[tuple[str, str], Server] = {}
        # Each server in a stack of its own, so that --fresh-servers can start it again.
        stacks: dict[tuple[str, str], contextlib.ExitStack] = {}

        @servers.callback
        def stop_all() -> None:
            for stack in reversed(stacks.values()):
                stack.close()

        lineup: list[tuple[Shape, list[Variant]]] = []

        def start(variant: Variant, app: str, *, signs_up: bool, round_: int = 0) -> None:
            slug = re.sub(r"\W+", "-", variant.name).strip("-")
            log = stage.data_dir / f"uvicorn-{workers}{'-' if slug else ''}{slug}.log"
            if app != API:
                log = log.with_name(f"{log.stem}-{app.split(':')[0].rsplit('.', 1)[-1]}.log")
            if round_:
                log = log.with_name(f"{log.stem}-round-{round_ + 1}.log")
            key = (variant.name, app)
            if key in stacks:
                stacks.pop(key).close()
            stack = stacks[key] = contextlib.ExitStack()
            by_server[key] = stack.enter_context(
                serving(stage.env, workers, log, stage.password, first=signs_up,
                        factory=variant.factory if app == API else app, cpus=args.app_cpus,
                        variant=variant)
            )  # fmt: skip

        for variant in active:
            apps = {s.app for s in everything if serves(variant, s, stage.only)}
            # The default server always runs: it signs the user up and gives the deep cursor.
            if API in apps or not variant.name:
                start(variant, API, signs_up=first and not variant.name)
            if not stage.cursor:
                stage.cursor, _ = deep_cursor(by_server["", API].url, args.deep_page)
                everything = all_shapes(stage)
            for app in YARDSTICKS:
                if app in apps:
                    start(variant, app, signs_up=False)
        for shape in everything:
            served_by = [v for v in active if serves(v, shape, stage.only)]
            if served_by:
                lineup.append((shape, served_by))
        by_key = {shape.key: shape for shape in everything}
        for shape, served_by in lineup:
            if shape.mirrors:
                for variant in served_by:
                    check_same_answers(
                        by_server["", API],
                        by_server[variant.name, shape.app],
                        shape,
                        by_key[shape.mirrors],
                    )
        uncounted = [(s, v) for s, vs in lineup for v in vs if (v.name, s.key) not in stage.counts]
        if uncounted:
            say("counting SQL statements per request (pg_stat_statements)")
            track_statements(stage.postgres, on=True)
            for shape, variant in uncounted:
                server = by_server[variant.name, shape.app]
                stage.counts[variant.name, shape.key] = count_statements(
                    stage.postgres, server, shape, args.count
                )
            track_statements(stage.postgres, on=False)
        runs: dict[tuple[str, str], list[Row]] = {}
        for round_ in range(args.rounds):
            if round_ and args.fresh_servers:
                say(f"starting every server afresh for round {round_ + 1}")
                for variant_name, app in list(stacks):
                    variant = next(v for v in active if v.name == variant_name)
                    start(variant, app, signs_up=False, round_=round_)
            of = f", round {round_ + 1} of {args.rounds}" if args.rounds > 1 else ""
            for i, (shape, served_by) in enumerate(lineup):
                turn = (round_ + i) % len(served_by)
                for variant in served_by[turn:] + served_by[:turn]:
                    server = by_server[variant.name, shape.app]
                    load = stage.load
                    say(f"{server.label}: {shape.label} ({load.warmup} s + {load.duration} s{of})")
                    runs.setdefault((variant.name, shape.key), []).append(
                        measure(stage.wrk, server, shape, load, stage.groups)
                    )
    rows = []
    for variant in active:
        for shape, served_by in lineup:
            if variant in served_by:
                row = median_row(runs[variant.name, shape.key])
                if row.cpu_ms is not None and OLD_PGBOUNCER_GROUP in row.cpu_ms:
                    old = row.cpu_ms.pop(OLD_PGBOUNCER_GROUP)
                    if variant.name == OLD_PGBOUNCER:  # the PgBouncer its servers go through
                        row.cpu_ms["pgbouncer"] = old
                if shape.app == TUTORIAL:
                    row.label += f", {tutorial_arrangement(variant, stage.env)}"
                counted = stage.counts[variant.name, shape.key]
                row.statements, row.statement_kinds = counted.total, counted.kinds
                row.statement_queries = counted.queries
                rows.append(row)
    return rows


@contextlib.contextmanager
def old_pgbouncer(
    data_dir: Path, postgres: devstack.EmbeddedPostgres, args: argparse.Namespace
) -> Iterator[devstack.PgBouncer]:
    """The installed PgBouncer, when it is one that tracks no prepared statements (1.18)."""
    binary = devstack.pgbouncer_binary()
    if binary is None or devstack.tracked_statements(binary):
        raise BenchError(f"--pgbouncer-1.18: the installed PgBouncer ({binary}) is not 1.18")
    with running_pgbouncer(
        data_dir, postgres, args.userlist, "\n".join(args.pgbouncer), "pgbouncer-1.18", binary
    ) as bouncer:
        say(f"PgBouncer 1.18 on 127.0.0.1:{bouncer.port}")
        yield bouncer


def tutorial_arrangement(variant: Variant, env: dict[str, str]) -> str:
    """How the tutorial-style app reaches the database on a variant's servers (tutorial.py)."""
    settings = variant.environment(env)
    if settings.get(TUTORIAL_DIRECT):
        return "pooled, direct"
    pool = "NullPool" if app_settings(settings).db_pool == "null" else "pooled"
    return f"{pool} via PgBouncer"


def same_statements(stage: Stage) -> list[Target]:
    """Whether each bare handler sent the statements of the API's route it mirrors, as
    pg_stat_statements counted them on the same variant's servers (or the default's)."""
    mirrors = {s.key: s.mirrors for s in all_shapes(stage) if s.app == BARE and s.mirrors}
    checked, differ = 0, []
    for (variant, key), counted in stage.counts.items():
        api = stage.counts.get((variant, mirrors.get(key, ""))) or stage.counts.get(
            ("", mirrors.get(key, ""))
        )
        if key not in mirrors or api is None:
            continue
        checked += 1
        if counted.app_statements != api.app_statements:
            differ.append(f"{variant or 'default'} {key}")
    if not checked:
        return []
    return [
        Target(
            "the bare handlers send the API's statements (pg_stat_statements)",
            ", ".join(differ) or f"{checked} rows alike",
            not differ,
        )
    ]


def all_shapes(stage: Stage) -> list[Shape]:
    return shapes(stage.args.deep_page, stage.cursor)


def serves(variant: Variant, shape: Shape, only: frozenset[str]) -> bool:
    """Whether the variant's servers measure the shape (--only, and a variant's own shapes)."""
    return (not only or shape.key in only) and (variant.keys is None or shape.key in variant.keys)


# Request ids, the access log and the metrics, all off: what they cost is issue 22's target.
# The API's rows only: the yardsticks have none of them.
OBSERVABILITY_OFF = Variant(
    "observability off",
    {"REQUEST_IDS": "false", "ACCESS_LOG": "false", "METRICS_ENABLED": "false"},
    keys=shape_keys(API),
)


def variants(
    specs: list[str],
    baseline: Path | None,
    *,
    observability_off: bool = False,
    pooled: bool = True,
    tutorial_pgbouncer_pool: bool = False,
) -> list[Variant]:
    """The servers measured side by side: the default, the pooled arrangement (one worker;
    its tutorial's URL is set once PostgreSQL runs), the tutorial pooled through PgBouncer when
    asked, each --variant's (its settings gathered from every --variant of its name), the API
    without its observability when asked and, with --baseline, a twin of each serving the API's
    code from that checkout, for /health and GET /products/{id}."""
    found = {"": Variant()}
    if pooled:
        found[POOLED] = Variant(POOLED, {"DB_POOL": "queue"}, keys=POOLED_SHAPES, workers=1)
    if tutorial_pgbouncer_pool:
        found[TUTORIAL_THROUGH_PGBOUNCER] = Variant(
            TUTORIAL_THROUGH_PGBOUNCER,
            {"DB_POOL": "queue"},
            keys=shape_keys(TUTORIAL),
            workers=1,
        )
    if observability_off:
        found[OBSERVABILITY_OFF.name] = Variant(
            OBSERVABILITY_OFF.name, dict(OBSERVABILITY_OFF.env), keys=OBSERVABILITY_OFF.keys
        )
    for spec in specs:
        add_variant(found, spec)
    if baseline is not None:
        root = baseline.resolve()
        if not (root / "api" / "main.py").is_file():
            raise BenchError(f"--baseline {baseline}: no api/main.py there")
        commit = run_quiet(["git", "-C", str(root), "rev-parse", "--short", "HEAD"]).stdout
        at = commit.strip() or root.name
        # A checkout without api/launch.py is served through its app factory (0d07f60's tuned
        # its process there).
        launched = (root / "api" / "launch.py").is_file()
        for variant in list(found.values()):
            name = f"{variant.name}, {at}" if variant.name else at
            factory = variant.factory if launched else APP
            keys = BASELINE_SHAPES & (variant.keys or BASELINE_SHAPES)
            found[name] = Variant(
                name, dict(variant.env), factory, root, variant.name, keys, variant.workers
            )
    return list(found.values())


def without_passwords(env: dict[str, str | None]) -> dict[str, str | None]:
    """A variant's environment as the report shows it: database URLs without their password."""
    return {
        key: make_url(value).render_as_string(hide_password=True)
        if value and key.endswith("_URL")
        else value
        for key, value in env.items()
    }


def tls_mode(url_query: str, extra: dict[str, str]) -> str:
    """What the app negotiates: a URL `ssl=` wins, else the DB_TLS setting (default disable)."""
    match = re.search(r"(?:^|&)ssl=([^&]+)", url_query)
    if match:
        return match.group(1)
    return f"DB_TLS={extra.get('DB_TLS') or os.environ.get('DB_TLS') or 'disable'}"


def app_settings(env: dict[str, str]) -> Settings:
    """What the API's own Settings make of `env` (its whole environment, --env included): its
    pool and whether it keeps asyncpg's statement cache."""
    with mock.patch.dict(os.environ, env, clear=True):
        return Settings(_env_file=None)
