"""make bench's report: a row per request shape and server (`Row`, the median of its rounds),
the ratios to /health, the text table, the targets it is checked against, the machine, and the
JSON written to `bench/results/` (git-ignored).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import devstack
from bench.dataset import CATEGORIES, ORDERS, PRODUCTS, USERS
from bench.stack import API, run_quiet

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


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
    app: str = ""  # the uvicorn factory that served it (stack.API, BARE, TUTORIAL); "": pgbench
    ratio: float | None = None  # to /health of the same server (pgbench: of the first server)
    statements: float | None = None  # per request, everything the database executed
    statement_kinds: dict[str, float] | None = None
    statement_queries: list[dict[str, Any]] | None = None
    rss_mb: list[float] | None = None  # each uvicorn worker, after this row's run
    other_cpu_pct: float | None = None  # CPU used by processes not ours (and steal) in the run
    cpu_ms: dict[str, float] | None = None  # CPU per request: app, pgbouncer, postgres, client
    round_rps: list[float] | None = None  # with --rounds N: each round's rps (this is the median)
    round_app_cpu_ms: list[float] | None = None  # with --rounds N: each round's app CPU per request
    worst_tail: float | None = None  # with --rounds N: the highest p99/p50 of any round
    worst_tail_loop: str | None = None  # with --rounds N: that round's lag_cell
    # How late each worker's loop woke a sleeping task during the run (serve.py), in ms:
    # p50, p99, max and the number of wakes. See loop_lag.
    loop_lag_ms: dict[str, float] | None = None
    # The share of the run the busiest-waiting worker was ready to run but not running: the
    # kernel's run-queue wait (/proc/<pid>/schedstat), in %. High: the machine was oversubscribed.
    run_queue_pct: float | None = None
    # How many times per request the kernel took the CPU from a worker that could have run on
    # (involuntary context switches, all workers): a process woken on its CPU.
    preempted: float | None = None

    @property
    def failed(self) -> bool:
        return self.errors > 0


# --- the table -----------------------------------------------------------------------------


def median_row(runs: list[Row]) -> Row:
    """The round with the median rate (the lower middle of an even count), with every round's
    rate and the worst round's tail (p99/p50) kept in it; a run with errors in any round is
    reported as failed, with the most errors."""
    row = sorted(runs, key=lambda r: r.rps)[(len(runs) - 1) // 2]
    if len(runs) > 1:
        row.round_rps = [r.rps for r in runs]
        if all(r.cpu_ms and "app" in r.cpu_ms for r in runs):
            row.round_app_cpu_ms = [r.cpu_ms["app"] for r in runs if r.cpu_ms]
        tails = [(r.p99_ms / r.p50_ms, r) for r in runs if r.p50_ms]
        if tails:
            tail, worst_round = max(tails, key=lambda pair: pair[0])
            row.worst_tail, row.worst_tail_loop = tail, lag_cell(worst_round)
        worst = max(runs, key=lambda r: r.errors)
        if worst.errors > row.errors:
            row.errors, row.error_kinds = worst.errors, worst.error_kinds
    return row


def fill_ratios(rows: list[Row]) -> None:
    """Each row's rate over /health's on its server; on a server without a /health row (a
    variant serving a few shapes) over the default server's of the same worker count ("1
    worker, pooled": "1 worker"); pgbench's over the first server's."""
    health = {row.server: row.rps for row in rows if row.key == "health"}
    floor = next(iter(health.values()), None)
    for row in rows:
        base = health.get(row.server) or health.get(row.server.split(",")[0], floor)
        row.ratio = round(row.rps / base, 3) if base else None


def cpu_cell(cpu: dict[str, float] | None) -> str:
    if not cpu:
        return ""
    parts = [cpu.get("app"), cpu.get("pgbouncer"), cpu.get("postgres")]
    cell = "+".join("-" if v is None else f"{v:.2f}" for v in parts)
    if "replica" in cpu:  # the replica's PgBouncer and PostgreSQL, beside the primary's
        replica = [cpu.get("replica_pgbouncer"), cpu["replica"]]
        cell += " (replica " + "+".join("-" if v is None else f"{v:.2f}" for v in replica) + ")"
    return cell


def lag_cell(row: Row) -> str:
    cells = []
    if row.loop_lag_ms:
        cells.append(f"{row.loop_lag_ms['p99']:.0f}/{row.loop_lag_ms['max']:.0f}")
    if row.run_queue_pct is not None:
        cells.append(f"{row.run_queue_pct:.0f}%")
    if row.preempted is not None:
        cells.append(f"{row.preempted:.2f}")
    return ", ".join(cells)


def first_cells(row: Row) -> list[str]:
    """A row's first cells in a table (here and bench-compose's): server, request, rps, p50,
    p99, errors."""
    return [
        row.server,
        row.label,
        f"{row.rps:,.0f}",
        f"{row.p50_ms:.1f}",
        f"{row.p99_ms:.1f}",
        f"FAILED {row.errors}" if row.failed else "0",
    ]


def table(rows: list[Row]) -> str:
    head = ["server", "request", "rps", "p50 ms", "p99 ms", "errors", "x /health", "SQL/req"]
    head += [
        "CPU ms/req app+pgb+pg",
        "RSS MB",
        "other CPU",
        "loop lag p99/max ms, run queue, preempted/req",
    ]
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
                *first_cells(row),
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


def ratios_by_round(mine: list[float] | None, theirs: list[float] | None) -> list[float]:
    """Each round's figure over the reference's in the same round; none without both."""
    if not mine or not theirs:
        return []
    return [round(a / b, 3) for a, b in zip(mine, theirs, strict=True) if b]


def comparisons(rows: list[Row], references: dict[str, str]) -> list[dict[str, Any]]:
    """Each variant's row beside its reference's (same request shape): rates and their ratio
    by round, the app's CPU per request and its ratio by round, the workers' RSS."""
    by_server = {(row.server, row.key): row for row in rows}
    found = []
    for row in rows:
        reference = by_server.get((references.get(row.server, ""), row.key))
        if reference is None:
            continue
        by_round = ratios_by_round(
            row.round_rps or [row.rps], reference.round_rps or [reference.rps]
        )
        cpu_by_round = ratios_by_round(row.round_app_cpu_ms, reference.round_app_cpu_ms)
        rss, reference_rss = sum(row.rss_mb or []), sum(reference.rss_mb or [])
        found.append(
            {
                "server": row.server,
                "reference": reference.server,
                "key": row.key,
                "label": row.label,
                "rps": row.rps,
                "reference_rps": reference.rps,
                "ratio": statistics.median(by_round) if by_round else None,
                "ratio_by_round": by_round,
                "rss_mb": row.rss_mb,
                "reference_rss_mb": reference.rss_mb,
                "rss_ratio": round(rss / reference_rss, 3) if reference_rss else None,
                "cpu_ms_app": (row.cpu_ms or {}).get("app"),
                "reference_cpu_ms_app": (reference.cpu_ms or {}).get("app"),
                "cpu_ratio": statistics.median(cpu_by_round) if cpu_by_round else None,
                "cpu_ratio_by_round": cpu_by_round,
            }
        )
    return found


def comparison_table(compared: list[dict[str, Any]]) -> str:
    head = ["server", "request", "rps", "reference", "rps", "x ref", "by round"]
    head += ["app CPU ms/req", "RSS MB", "ref RSS MB", "RSS x ref"]
    lines = [head]

    def mb(values: list[float] | None) -> str:
        return "/".join(f"{v:.0f}" for v in values or [])

    for c in compared:
        cpu = [c["cpu_ms_app"], c["reference_cpu_ms_app"]]
        lines.append(
            [
                c["server"],
                c["label"],
                f"{c['rps']:,.0f}",
                c["reference"],
                f"{c['reference_rps']:,.0f}",
                "" if c["ratio"] is None else f"{c['ratio']:.3f}",
                " ".join(f"{r:.2f}" for r in c["ratio_by_round"]),
                " vs ".join("-" if v is None else f"{v:.2f}" for v in cpu)
                + ("" if c["cpu_ratio"] is None else f" ({c['cpu_ratio']:.3f}x by round)"),
                mb(c["rss_mb"]),
                mb(c["reference_rss_mb"]),
                "" if c["rss_ratio"] is None else f"{c['rss_ratio']:.3f}",
            ]
        )
    return aligned(lines, right={2, 4, 5, 8, 9, 10})


@dataclass
class Target:
    name: str
    value: str
    met: bool


def targets(rows: list[Row], default: str, pooled: str) -> list[Target]:
    """Issue 23's targets, each a ratio of two rows of this run, on one worker: `default` is
    the server as shipped (NullPool through PgBouncer), `pooled` the pooled arrangement (the
    API's own pool and the bare handlers' through PgBouncer, the tutorial-style app's straight
    to PostgreSQL). A target whose rows were not measured (--only, --no-pooled) is left out."""
    servers: dict[str, dict[str, Row]] = {}
    for row in rows:
        servers.setdefault(row.server, {})[row.key] = row
    found: list[Target] = []

    def rate(server: str, key: str) -> float | None:
        row = servers.get(server, {}).get(key)
        return row.rps if row is not None and row.rps else None

    def at_least(name: str, a: tuple[str, str], b: tuple[str, str], floor: float) -> None:
        mine, theirs = rate(*a), rate(*b)
        if mine is not None and theirs is not None:
            value = mine / theirs
            found.append(Target(name, f"{value:.2f}x", value >= floor))

    at_least(
        "GET /products/{id} >= 0.8x the bare asyncpg handler (NullPool through PgBouncer)",
        (default, "product"),
        (default, "bare"),
        0.8,
    )
    at_least(
        "GET /products/{id} >= 2x the tutorial-style app (pooled: the API's through PgBouncer,"
        " the tutorial's direct)",
        (pooled, "product"),
        (pooled, "tutorial"),
        2.0,
    )
    at_least(
        "GET /products/{id} >= 0.5x the bare asyncpg handler (both pooled through PgBouncer)",
        (pooled, "product"),
        (pooled, "bare"),
        0.5,
    )
    at_least(
        "GET /products/ page 1 >= 0.5x the bare page handler",
        (default, "page1"),
        (default, "bare_page1"),
        0.5,
    )
    at_least(
        "GET /products/ deep page by cursor >= 0.5x the bare page handler's",
        (default, "cursor"),
        (default, "bare_cursor"),
        0.5,
    )
    # A page deep in the list by cursor costs what page 1 costs: its time within 1.2x.
    page1, cursor = rate(default, "page1"), rate(default, "cursor")
    if page1 is not None and cursor is not None:
        value = page1 / cursor
        found.append(
            Target(
                "deep page by cursor within 1.2x of page 1's cost: rps(page 1)/rps(cursor)",
                f"{value:.2f}x",
                value <= 1.2,
            )
        )
    # The middleware stack's fixed cost: the API's /health against FastAPI's floor (bench/bare.py),
    # both one worker at saturation, where 1/rps is a request's time on the worker.
    health, floor = rate(default, "health"), rate(default, "floor")
    if health is not None and floor is not None:
        cost = 1e6 * (1 / health - 1 / floor)
        found.append(
            Target(
                "middleware <= 60 us per request: 1/rps(/health) - 1/rps(bare FastAPI /health)",
                f"{cost:.0f} us",
                cost <= 60,
            )
        )
    at_least("POST /orders/ 10 lines >= 0.5x 1 line", (default, "post10"), (default, "post1"), 0.5)
    api_rows = [row for row in rows if row.app == API]
    # With --rounds, a row's worst round counts, not only the median one shown.
    slow = []
    for row in api_rows:
        tail = row.worst_tail or (row.p99_ms / row.p50_ms if row.p50_ms else 0.0)
        if tail > 3:
            # What its loop did in that round: busy, blocked, or not run at all.
            loop = row.worst_tail_loop if row.worst_tail else lag_cell(row)
            slow.append(
                f"{row.server} {row.key} {tail:.1f}x"
                + (f" (loop lag p99/max ms, run queue, preempted/req: {loop})" if loop else "")
            )
    if api_rows:
        found.append(
            Target(
                "p99 <= 3x p50 in every API row (every round)",
                ", ".join(slow) or "all rows",
                not slow,
            )
        )
    failed = [f"{r.server} {r.key}" for r in rows if r.failed]
    found.append(Target("zero errors in every row", ", ".join(failed) or "none", not failed))
    if api_rows:
        rss = max((mb for r in api_rows for mb in r.rss_mb or []), default=0.0)
        name = "an API worker's RSS < 120 MB after the runs"
        found.append(Target(name, f"{rss:.0f} MB", rss < 120))
    return found


def observability_cost(rows: list[Row], off: str, on: str) -> list[Target]:
    """GET /products/{id} on the one-worker server as shipped (`on`: request ids, the access
    log, the metrics) against the same server with them off, round by round. Beside the rate,
    the worker's CPU per request: on a machine whose cores the worker shares with PgBouncer,
    PostgreSQL and wrk, the rate moves by less than the worker's own cost."""
    compared = [c for c in comparisons(rows, {off: on}) if c["key"] == "product"]
    if not compared or not compared[0]["ratio"]:
        return []
    value = 1 / compared[0]["ratio"]
    cpu = compared[0]["cpu_ratio"]
    shown = f"{value:.3f}x"
    if cpu:
        shown += f" (the worker's CPU per request: {1 / cpu:.3f}x all off's)"
    name = "GET /products/{id} with request ids, access log, metrics >= 0.95x all off (1 worker)"
    return [Target(name, shown, value >= 0.95)]


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


def report(
    rows: list[Row],
    found: list[Target],
    info: dict[str, Any],
    config: dict[str, Any],
    load_seconds: float,
    started_at: datetime,
    references: dict[str, str] | None = None,
) -> None:
    """Print the run and write it as JSON; `references`: each variant's server (its label) and
    the server its rows are compared with."""
    print()
    print(
        f"make bench, {started_at:%Y-%m-%d %H:%M} UTC: {info['cores']} cores ({info['cpu']}),"
        f" {info['python']}, {info['postgres']}, {info['pgbouncer']}"
    )
    print(
        f"app: uvicorn, DB_POOL={config['pool_mode']} through PgBouncer (transaction mode),"
        f" TLS to PgBouncer: {config['tls_to_pgbouncer']},"
        f" statement cache {'on' if config['statement_cache'] else 'off'}"
    )
    print(
        f"PgBouncer auth file: {config['pgbouncer_userlist']}"
        + (f"; PgBouncer: {config['pgbouncer_settings']}" if config["pgbouncer_settings"] else "")
        + (f"; DATABASE_URL query: {config['url_query']}" if config["url_query"] else "")
        + (f"; env: {config['env']}" if config["env"] else "")
    )
    for name, variant in config["variants"].items():
        settings = ", ".join(
            f"{key}={value}" if value is not None else f"{key} unset"
            for key, value in variant["env"].items()
        )
        factory = f"--factory {variant['factory']}" if variant["factory"] != API else ""
        root = f"the API from {variant['api_root']}" if variant["api_root"] else ""
        print(f"variant {name}: {'; '.join(filter(None, [settings, factory, root]))}")
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
    compared = comparisons(rows, references or {})
    if compared:
        print(comparison_table(compared))
        print()
        for line in (
            "x ref: a variant's rate over its reference's (the server it is measured beside), the",
            "median of the rounds' ratios (each round runs both back to back). app CPU ms/req: the",
            "median rounds' figures, and the median of the rounds' ratios. RSS: each worker after",
            "the row's median round, and the sum's ratio to the reference's.",
        ):
            print(line)
        print()
    for line in (
        "SQL/req: statements the database executed per request (pg_stat_statements): app and",
        "driver (+ BEGIN/COMMIT/SAVEPOINT). x /health: to /health of the same server (pgbench:",
        "of the first). CPU ms/req: CPU time of the app's workers, PgBouncer and PostgreSQL per",
        "request. RSS: each worker after its row. other CPU: what processes not started by the",
        "bench (and the hypervisor's steal) took during the row, in % of the machine. loop lag:",
        "how late the workers' event loops woke a task sleeping 5 ms, p99 and max over the row",
        "(a turn of a busy loop, a blocked loop, or a worker the kernel did not run), and the",
        "share of the row a worker waited in the kernel's run queue (the machine oversubscribed),",
        "and how often per request the kernel took a worker's CPU (another process woken on it).",
    ):
        print(line)
    print()
    for target in found:
        print(f"  {'met   ' if target.met else 'MISSED'}  {target.name}: {target.value}")
    document = {
        "started_at": started_at.isoformat(),
        "machine": info,
        "config": config,
        "dataset": dataset_figures(load_seconds),
        "rows": [asdict(row) | {"failed": row.failed} for row in rows],
        "targets": [asdict(target) for target in found],
        "comparisons": compared,
        "load_average_at_end": os.getloadavg(),
    }
    save(document, f"bench-{started_at:%Y%m%d-%H%M%S}.json", "latest.json")


def dataset_figures(load_seconds: float) -> dict[str, Any]:
    """What the results' JSON says of the dataset."""
    return {
        "products": PRODUCTS,
        "categories": CATEGORIES,
        "users": USERS,
        "orders": ORDERS,
        "load_seconds": round(load_seconds, 1),
    }


def save(document: dict[str, Any], name: str, latest: str) -> None:
    """The results as JSON in bench/results/`name`, copied to `latest`."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(document, indent=2) + "\n")
    shutil.copyfile(path, RESULTS / latest)
    print(f"\nwritten to {path.relative_to(devstack.ROOT)}")
