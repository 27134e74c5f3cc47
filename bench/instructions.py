"""`python -m bench.instructions [--served] [--caches] [--requests N] [--rounds N]
[--concurrency N] [--variant NAME:...]`: what `GET /products/{id}` costs the app in machine
instructions per request, the API as shipped against variants of its settings (by default:
observability off, and each of its parts off alone; `--variant` as make bench's,
`NAME:KEY=VALUE` or `NAME:-KEY`, its environment only).
Needs valgrind (`apt-get install valgrind`).

The app runs as its servers launch it (`api.launch`, uvloop, NullPool through PgBouncer, the
metrics in a multiprocess directory, the log to a file) on make bench's stack and dataset, and
is called in-process as an ASGI app, one request at a time (`--concurrency N`: N at once),
under valgrind's cachegrind, which counts the instructions the process executes. With
`--served` the image's command serves it (`python -m api serve`, one uvicorn worker) and the
requests come over HTTP, on one connection per client: uvicorn's HTTP protocol is counted
too.

Each variant runs twice, with the same start and warm-up, the second time with `--requests`
more requests: the difference divided by that number is the cost of one. Each round runs in
another memory layout (`laid_out`), and a variant's figure is the median of its rounds. The
count hardly moves with the machine's other load, which make bench's rates do
(docs/benchmarks.md, "What observability costs a request"), so a change's effect of a few
percent shows in one run on a busy machine. It is not the time a request takes: the kernel's
work (system calls, the network) is not counted, and an instruction that misses the caches
counts as one. `--caches` adds what cachegrind's simulation of a core's caches and branch
predictor counts per request (`core_caches`): the misses that make some instructions cost
more than others, which this machine's processor does not let perf count. Not to be run
beside make bench: both use `.data/bench`.
"""

import argparse
import asyncio
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

import devstack
from bench.dataset import DATABASE, app_env, prepare_database
from bench.run import OBSERVABILITY_OFF
from bench.stack import (
    API,
    BenchError,
    Variant,
    add_variant,
    at_least_one,
    entry,
    running_pgbouncer,
    running_postgres,
    say,
    tool,
    wait_for_ready,
)
from devstack.dockerfile import stages

WARM_UP = 50  # requests before the counted ones, in both runs of a variant
LAYOUT_STEP = 397  # characters more in each round's environment (laid_out)
SHIPPED = Variant("as shipped")
VARIANTS = (
    Variant(OBSERVABILITY_OFF.name, dict(OBSERVABILITY_OFF.env)),
    Variant("no request ids", {"REQUEST_IDS": "false"}),
    Variant("no access log", {"ACCESS_LOG": "false"}),
    Variant("no metrics", {"METRICS_ENABLED": "false"}),
)
# cachegrind's summary's counts: `==PID== I1  misses:  1,234`, and the like (not its rates).
SUMMARY = re.compile(
    r"^==\d+== ((?:I|D|LL) +refs|(?:I1|D1|LLi|LLd|LL) +misses|Branches|Mispredicts):"
    r"\s+([\d,]+)",
    re.MULTILINE,
)
INSTRUCTIONS = "I refs"
CPU_CACHES = Path("/sys/devices/system/cpu/cpu0/cache")
# cachegrind's option for each cache the kernel describes by (level, type).
CACHE_OPTIONS = {("1", "Instruction"): "I1", ("1", "Data"): "D1", ("2", "Unified"): "LL"}
# What --caches reports beside the instructions: cachegrind's names, and this report's.
MISSES = {
    "I1 misses": "L1i misses",
    "D1 misses": "L1d misses",
    "LL misses": "L2 misses",
    "Mispredicts": "mispredicted",
}


async def serve_requests(requests: int, concurrency: int) -> None:
    """The child: the app as launched, sent `product_paths` by `concurrency` clients at once."""
    from asgi_lifespan import LifespanManager

    from api.launch import create_app
    from bench.layers import get

    app = create_app()
    # Valgrind runs the app tens of times slower: no limit on its start and stop.
    async with LifespanManager(app, startup_timeout=None, shutdown_timeout=None) as manager:
        await by_clients(
            requests,
            concurrency,
            lambda path: get(manager.app, path),  # type: ignore[arg-type]
        )


async def by_clients(
    requests: int, concurrency: int, send: Callable[[str], Awaitable[None]]
) -> None:
    """`product_paths` through `send`, by `concurrency` clients at once: each path goes to
    one of them, as it finishes its previous one."""
    paths = product_paths(requests)

    async def client() -> None:
        for path in paths:
            await send(path)

    await asyncio.gather(*(client() for _ in range(concurrency)))


def product_paths(requests: int) -> Iterator[str]:
    """What a run sends, in-process or served: the warm-up's and `requests` more GETs, of
    the dataset's products in turn."""
    from bench.layers import ROWS

    for n in range(WARM_UP + requests):
        yield f"/products/{n % ROWS + 1}"


def core_caches() -> list[str]:
    """cachegrind's options for one core of this machine (`--caches`): its L1 instruction and
    data caches, and as the last level its own L2, as the kernel describes them. The L3 is
    shared with the machine's other work; cachegrind's own guess, from CPUID, is wrong in a
    VM (here a direct-mapped 256 MiB last level). cachegrind still logs that guess as a
    warning, and simulates these options."""
    options = {}
    try:
        for index in CPU_CACHES.glob("index*"):
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            if (name := CACHE_OPTIONS.get((level, kind))) is not None:
                size = int((index / "size").read_text().strip().removesuffix("K")) * 1024
                ways = int((index / "ways_of_associativity").read_text())
                line = int((index / "coherency_line_size").read_text())
                options[name] = f"--{name}={size},{ways},{line}"
    except (OSError, ValueError) as error:
        raise BenchError(f"{CPU_CACHES} could not be read: {error}") from None
    if len(options) != 3:
        raise BenchError(f"{CPU_CACHES} does not describe a core's L1 and L2 caches")
    return list(options.values())


def laid_out(env: dict[str, str], round_: int) -> dict[str, str]:
    """`env` for one round: the same for every variant, and longer by LAYOUT_STEP characters
    each round. The size of a process's environment moves where its memory lies, and with it
    a count (the same server moved by up to 0.4 % between environments of 37 to 1,999 more
    characters, and by less than 0.01 % in one): rounds of several layouts, and their median,
    keep one layout from favouring one server."""
    return {**env, "BENCH_LAYOUT": "-" * (LAYOUT_STEP * round_)}


@dataclass(frozen=True)
class Counting:
    """What every run of one measurement shares: valgrind with its options, the figures of
    cachegrind's summary it reads, and how the requests are sent (`served`, by `concurrency`
    clients at once)."""

    valgrind: tuple[str, ...]
    figures: frozenset[str]
    served: bool
    concurrency: int

    @classmethod
    def of(cls, valgrind: str, args: argparse.Namespace) -> "Counting":
        """cachegrind's instruction count, and with `--caches` its simulation of a core."""
        options = ["--tool=cachegrind", "--cachegrind-out-file=/dev/null"]
        figures = {INSTRUCTIONS}
        if args.caches:
            options += ["--cache-sim=yes", "--branch-sim=yes", *core_caches()]
            figures |= MISSES.keys()
        else:
            options += ["--cache-sim=no"]
        return cls((valgrind, *options), frozenset(figures), args.served, args.concurrency)


def count(
    counting: Counting, env: dict[str, str], requests: int, log: Path, idle: float = 0.0
) -> tuple[dict[str, int], float]:
    """What cachegrind counted in one child run (its summary's figures by name: `I refs`, the
    instructions, and with `--caches` the misses), its output in `log`, and (served
    only) the seconds from its readiness to its last answer; the metrics in a directory of the
    run's own, unless `env` has no PROMETHEUS_MULTIPROC_DIR (a variant's
    `-PROMETHEUS_MULTIPROC_DIR`: in-memory values). Served: the image's command under
    valgrind, its requests sent over HTTP from here, then left idle until `idle` seconds have
    passed since it was ready (`served_count`); otherwise the app called in-process
    (`serve_requests`)."""
    with tempfile.TemporaryDirectory(prefix="instructions-") as scratch, log.open("wb") as out:
        if "PROMETHEUS_MULTIPROC_DIR" in env:
            env = {**env, "PROMETHEUS_MULTIPROC_DIR": scratch}
        seconds = 0.0
        if counting.served:
            report, returncode, seconds = served_count(
                counting, env, requests, idle, Path(scratch), out, log
            )
        else:
            report = Path(scratch) / "valgrind.txt"
            child = subprocess.run(
                [*counting.valgrind, f"--log-file={report}", sys.executable, "-m",
                 "bench.instructions", "--child", str(requests), "--concurrency",
                 str(counting.concurrency)],
                cwd=devstack.ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, check=False,
                preexec_fn=devstack.child_setup(None, signal.SIGKILL),
            )  # fmt: skip
            returncode = child.returncode
        found = {
            " ".join(name.split()): int(figure.replace(",", ""))
            for name, figure in SUMMARY.findall(report.read_text() if report.exists() else "")
        }
    missing = counting.figures - found.keys()
    if returncode != 0 or missing:
        what = (
            f"the app under valgrind exited with {returncode}"
            if returncode
            else f"valgrind's report has no {', '.join(sorted(missing))}"
        )
        tail = log.read_text(errors="replace")[-2000:]
        raise BenchError(f"{what} ({log}):\n{tail}")
    return found, seconds


# The image's settings for uvicorn, as deploy/Dockerfile sets them, with one worker: its
# request path.
UVICORN_ENV = (
    "FORWARDED_ALLOW_IPS",
    "UVICORN_TIMEOUT_KEEP_ALIVE",
    "UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN",
)


def image_env() -> dict[str, str]:
    env = stages()[-1].env()
    return {key: env[key] for key in UVICORN_ENV} | {"WEB_CONCURRENCY": "1"}


def served_count(
    counting: Counting,
    env: dict[str, str],
    requests: int,
    idle: float,
    scratch: Path,
    out: IO[bytes],
    log: Path,
) -> tuple[Path, int, float]:
    """The image's command (`python -m api serve`, which execs uvicorn in the same process)
    under valgrind, sent the warm-up and `requests`, left idle until `idle` seconds have passed
    since it answered ready, then SIGTERM; valgrind's report of that process, its exit status,
    and the seconds from ready to the last answer."""
    port = devstack.free_port()
    # --trace-children: valgrind follows the exec; %p: a report per process, should one start
    # another.
    server = subprocess.Popen(
        [*counting.valgrind, "--trace-children=yes", f"--log-file={scratch}/valgrind.%p",
         sys.executable, "-m", "api", "serve",
         "--factory", "api.launch:create_app", "--host", "127.0.0.1", "--port", str(port),
         "--proxy-headers"],
        cwd=devstack.ROOT, env={**env, **image_env()}, stdout=out, stderr=subprocess.STDOUT,
        preexec_fn=devstack.child_setup(None, signal.SIGKILL),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_ready(url, server, log, 900)  # valgrind starts it tens of times slower
        ready = time.monotonic()
        asyncio.run(send_requests(url, requests, counting.concurrency, log))
        seconds = time.monotonic() - ready
        time.sleep(max(0.0, idle - seconds))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            returncode = server.wait(timeout=600)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
            raise BenchError(
                f"the served app did not stop within 600 s of SIGTERM ({log})"
            ) from None
    # uvicorn, once it has shut down, raises the signal again, so that its status says why.
    report = scratch / f"valgrind.{server.pid}"
    return report, 0 if returncode == -signal.SIGTERM else returncode, seconds


async def send_requests(url: str, requests: int, concurrency: int, log: Path) -> None:
    """`product_paths` to the served app by `concurrency` clients at once, each on its own
    connection, as serve_requests sends them in-process."""
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:

        async def send(path: str) -> None:
            answer = await http.get(path)
            if answer.status_code != 200:
                raise BenchError(f"GET {path} answered {answer.status_code} ({log})")

        await by_clients(requests, concurrency, send)


def per_request(
    counting: Counting, env: dict[str, str], requests: int, log: Path
) -> dict[str, float]:
    """One request's instructions (and misses, with `--caches`): a run with `requests` more
    than another's, over that number. Served, the run without them stays up, idle, as long
    after it is ready as the other took to answer its warm-up and them: uvicorn's loop wakes
    ten times a second (and the app's in-flight publisher once), and those wake-ups then count
    alike in both."""
    more, seconds = count(counting, env, requests, log.with_suffix(f".{requests}.log"))
    fewer, _ = count(counting, env, 0, log.with_suffix(".0.log"), idle=seconds)
    return {name: (more[name] - fewer[name]) / requests for name in counting.figures}


def chosen(specs: list[str]) -> list[Variant]:
    """The shipped server, then the --variant specs' servers (make bench's form, environment
    only) or, without any, the default VARIANTS."""
    found = {SHIPPED.name: SHIPPED}
    for spec in specs:
        variant = add_variant(found, spec)
        if variant is SHIPPED or variant.factory != API:
            raise BenchError(f"--variant {spec!r}: another name, and no factory")
    return [SHIPPED, *(list(found.values())[1:] if specs else VARIANTS)]


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--requests", type=at_least_one, default=300, help="counted requests per run"
    )
    parser.add_argument(
        "--rounds",
        type=at_least_one,
        default=3,
        help="runs of each variant, each round in another memory layout (the median)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME[:KEY=VALUE|:-KEY]",
        help="a server whose environment gets KEY=VALUE or loses KEY (repeatable; every"
        " --variant of one NAME adds to it); replaces the default variants: "
        + "; ".join(v.name for v in VARIANTS),
    )
    parser.add_argument(
        "--served",
        action="store_true",
        help="serve the app as the image does (one uvicorn worker) and send it HTTP requests:"
        " uvicorn's HTTP protocol counted too",
    )
    parser.add_argument(
        "--concurrency",
        type=at_least_one,
        default=1,
        help="clients sending the requests at once (default 1): with more, a request's cost"
        " includes what the others in flight add (the collector's passes over their objects,"
        " the caches they share)",
    )
    parser.add_argument(
        "--caches",
        action="store_true",
        help="simulate a core's caches and branch predictor too (slower), and report their"
        " misses per request",
    )
    parser.add_argument("--data-dir", default=".data/bench")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve_requests(args.child, args.concurrency))
        return
    raise SystemExit(
        entry(
            lambda: measure(args),
            report=say,
            interrupted="interrupted",
            failures=(BenchError,),
        )
    )


def measure(args: argparse.Namespace) -> int:
    counting = Counting.of(tool("valgrind", "apt-get install valgrind"), args)
    variants = chosen(args.variant)
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    logs = data_dir / "instructions"
    logs.mkdir(exist_ok=True)
    with running_postgres(data_dir) as postgres, running_pgbouncer(data_dir, postgres) as bouncer:
        env = {
            **app_env(postgres, bouncer, bouncer.url(DATABASE)),
            "PYTHONHASHSEED": "0",  # the same string hashes, so the same set orders, every run
            "PROMETHEUS_MULTIPROC_DIR": "",  # each run's own (count)
        }
        prepare_database(postgres, env)  # the app takes the empty directory as none
        jobs = [
            (
                v.name,
                laid_out(v.environment(env), round_),
                logs / f"{v.name.replace(' ', '-')}-{round_}",
            )
            for round_ in range(args.rounds)
            for v in variants
        ]
        say(f"{len(jobs)} runs of 2 under valgrind, two at a time (a minute or more each)")
        with ThreadPoolExecutor(max_workers=2) as pool:
            figures = list(
                pool.map(
                    lambda job: per_request(counting, job[1], args.requests, job[2]),
                    jobs,
                )
            )
    by_name: dict[str, list[dict[str, float]]] = {}
    for (name, _, _), figure in zip(jobs, figures, strict=True):
        by_name.setdefault(name, []).append(figure)
    shipped = round(statistics.median(run[INSTRUCTIONS] for run in by_name[SHIPPED.name]))
    how = "over HTTP to the image's command, one worker" if args.served else "in-process"
    print(
        f"\nGET /products/{{id}}, NullPool through PgBouncer, {args.requests} requests a run by"
        f" {args.concurrency} client{'s' if args.concurrency > 1 else ''} at once, {how}"
    )
    print(f"{'server':<24} {'instructions/req':>16} {'x as shipped':>12} {'less':>10}")
    for name, runs in by_name.items():
        counts = [run[INSTRUCTIONS] for run in runs]
        median = round(statistics.median(counts))
        spread = f"  ({' '.join(f'{n:,.0f}' for n in counts)})" if len(counts) > 1 else ""
        print(f"{name:<24} {median:>16,} {median / shipped:>12.3f} {shipped - median:>10,}{spread}")
    if args.caches:
        print_misses(by_name)
    return 0


def print_misses(by_name: dict[str, list[dict[str, float]]]) -> None:
    """Each variant's misses per request (`MISSES`), the median of its rounds."""
    print(f"\n{'misses per request':<24}" + "".join(f" {label:>13}" for label in MISSES.values()))
    for name, runs in by_name.items():
        medians = (statistics.median(run[miss] for run in runs) for miss in MISSES)
        print(f"{name:<24}" + "".join(f" {median:>13,.0f}" for median in medians))


if __name__ == "__main__":
    run()
