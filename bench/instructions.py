"""`python -m bench.instructions [--requests N] [--variant NAME:VAR=VALUE+VAR=VALUE]...`: what
`GET /products/{id}` costs the app in machine instructions per request, the API as shipped
against variants of its settings (by default: observability off, and each of its parts off
alone). Needs valgrind (`apt-get install valgrind`).

The app runs as its servers launch it (`api.launch`, uvloop, NullPool through PgBouncer, the
metrics in a multiprocess directory, the log to a file) on make bench's stack and dataset, and
is called in-process as an ASGI app, one request at a time, under valgrind's cachegrind, which
counts the instructions the process executes. Each variant runs twice, with the same start and
warm-up, the second time with `--requests` more requests: the difference divided by that number
is the cost of one. The count does not move with the machine's other load, which make bench's
rates do (docs/benchmarks.md, "What observability costs a request"): a change's effect shows in
one run on a busy machine. It is not the time a request takes: the kernel's work (system calls,
the network) is not counted, and an instruction that misses the caches counts as one. Not to be
run beside make bench: both use `.data/bench`.
"""

import argparse
import asyncio
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
from collections.abc import MutableMapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import devstack
from bench.dataset import DATABASE, prepare_database
from bench.stack import BenchError, running_pgbouncer, running_postgres, say, tool

ROWS = 1_000  # ids asked for, all present in make bench's dataset
WARM_UP = 50  # requests before the counted ones, in both runs of a variant
OFF = "REQUEST_IDS=false+ACCESS_LOG=false+METRICS_ENABLED=false"
VARIANTS = (
    f"observability off:{OFF}",
    "no request ids:REQUEST_IDS=false",
    "no access log:ACCESS_LOG=false",
    "no metrics:METRICS_ENABLED=false",
)
COUNTED = re.compile(r"I\s+refs:\s+([\d,]+)")


async def serve_requests(requests: int) -> None:
    """The child: the app as launched, `WARM_UP + requests` GETs of a product, one at a time."""
    from asgi_lifespan import LifespanManager

    from api.launch import create_app

    app = create_app()
    async with LifespanManager(app) as manager:
        for n in range(WARM_UP + requests):
            path = f"/products/{n % ROWS + 1}"
            scope = {
                "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
                "query_string": b"", "root_path": "", "client": ("127.0.0.1", 40000),
                "headers": [(b"host", b"instructions"), (b"accept", b"*/*")],
                "server": ("127.0.0.1", 80), "state": {},
            }  # fmt: skip
            sent: list[MutableMapping[str, Any]] = []

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(message: MutableMapping[str, Any]) -> None:
                sent.append(message)  # noqa: B023 (awaited before the next request)

            await manager.app(scope, receive, send)
            if sent[0]["status"] != 200:
                raise SystemExit(f"{path} answered {sent[0]['status']}")


def count(valgrind: str, env: dict[str, str], requests: int, log: Path) -> int:
    """The instructions of one child run (valgrind's `I refs`); the app's output goes to `log`."""
    with tempfile.TemporaryDirectory(prefix="instructions-") as scratch, log.open("ab") as out:
        report = Path(scratch) / "valgrind.txt"
        result = subprocess.run(
            [valgrind, "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
             f"--log-file={report}", sys.executable, "-m", "bench.instructions", "--child",
             str(requests)],
            cwd=devstack.ROOT, env={**env, "PROMETHEUS_MULTIPROC_DIR": scratch},
            stdout=out, stderr=subprocess.STDOUT, check=False,
        )  # fmt: skip
        text = report.read_text() if report.exists() else ""
    found = COUNTED.search(text)
    if result.returncode != 0 or found is None:
        raise BenchError(f"the app under valgrind failed (its output: {log}):\n{text[-2000:]}")
    return int(found.group(1).replace(",", ""))


def per_request(valgrind: str, env: dict[str, str], requests: int, log: Path) -> float:
    return (count(valgrind, env, requests, log) - count(valgrind, env, 0, log)) / requests


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, settings = text.partition(":")
    pairs = [item.split("=", 1) for item in settings.split("+") if item]
    if not name or any(len(pair) != 2 for pair in pairs):
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME:VAR=VALUE+VAR=VALUE")
    return name, dict(pairs)


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="counted requests per run")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each variant (median)")
    parser.add_argument(
        "--variant",
        type=parse_variant,
        action="append",
        help=f"replaces the default variants ({'; '.join(VARIANTS)})",
    )
    parser.add_argument("--data-dir", default=".data/bench")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve_requests(args.child))
        return
    valgrind = tool("valgrind", "apt-get install valgrind")
    variants = [("as shipped", {}), *(args.variant or [parse_variant(v) for v in VARIANTS])]
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "instructions.log"
    log.unlink(missing_ok=True)
    with running_postgres(data_dir) as postgres, running_pgbouncer(data_dir, postgres) as bouncer:
        env = {
            **os.environ,
            "ENVIRONMENT": "production",
            "SECRET_KEY": secrets.token_urlsafe(48),
            "DATABASE_URL": bouncer.url(DATABASE),
            "DB_POOL": "null",
            "MIGRATIONS_DATABASE_URL": postgres.url(DATABASE),
            "LOG_JSON": "true",
            "LOG_LEVEL": "INFO",
            "PYTHONHASHSEED": "0",  # the same dict and set orders in every run
            **bouncer.statement_cache_env(),
        }
        prepare_database(postgres, env)
        jobs = [(name, {**env, **extra}) for name, extra in variants for _ in range(args.rounds)]
        say(f"{len(jobs)} runs of 2 under valgrind, two at a time (about a minute each)")
        with ThreadPoolExecutor(max_workers=2) as pool:
            figures = list(
                pool.map(lambda job: per_request(valgrind, job[1], args.requests, log), jobs)
            )
    by_name: dict[str, list[float]] = {}
    for (name, _), figure in zip(jobs, figures, strict=True):
        by_name.setdefault(name, []).append(figure)
    shipped = statistics.median(by_name["as shipped"])
    print(f"\nGET /products/{{id}}, NullPool through PgBouncer, {args.requests} requests a run")
    print(f"{'server':<24} {'instructions/req':>16} {'x as shipped':>12} {'less':>10}")
    for name, runs in by_name.items():
        median = statistics.median(runs)
        print(f"{name:<24} {median:>16,.0f} {median / shipped:>12.3f} {shipped - median:>10,.0f}")


if __name__ == "__main__":
    run()
