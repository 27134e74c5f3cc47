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
3. for each worker count (1 and 2 by default) starts uvicorn with the production settings
   (ENVIRONMENT=production, a generated SECRET_KEY, DB_POOL_MODE=null through PgBouncer, JSON
   logs with uvicorn's access log) and launched as the Docker image launches it
   (`api.launch:create_app`, glibc's MALLOC_ENV), signs up a user and logs in that user and
   the first superuser, then measures every request shape with wrk (`wrk.lua`, one thread by
   default, on the last CPU it may use): a warm-up run, then a measured run at 50 connections;
   then, with the same settings and worker count, the bare asyncpg handler of `bare.py`
   (`GET /products/{id}` without SQLAlchemy): the yardstick of what SQLAlchemy and our code add
   to the driver; both through `serve.py` (uvicorn's command line, with each worker's
   event-loop lag sampled);
4. counts the SQL statements each request shape sends (pg_stat_statements, see
   `dataset.count_statements`), reads the workers' RSS from /proc after each run and their
   loop lag during it;
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
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import devstack
from api import launch
from api.core.config import Settings
from bench.dataset import (
    CATEGORIES,
    DATABASE,
    ORDERS,
    PRODUCTS,
    USERS,
    Counted,
    count_statements,
    deep_cursor,
    prepare_database,
    shapes,
)
from bench.load import Load, measure, run_pgbench
from bench.report import Row, fill_ratios, machine, median_row, report, targets
from bench.stack import (
    ADMIN,
    API,
    BARE,
    BenchError,
    at_least_one,
    entry,
    running_pgbouncer,
    running_postgres,
    say,
    serving,
    tool,
    track_statements,
)


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
            **launch.MALLOC_ENV,  # as deploy/Dockerfile launches the API
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


def statement_cache_of(env: dict[str, str]) -> bool:
    """Whether the API keeps asyncpg's statement cache with `env` (its whole environment, --env
    included): what its own Settings make of it."""
    with mock.patch.dict(os.environ, env, clear=True):
        return Settings(_env_file=None).statement_cache
