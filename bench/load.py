"""make bench's load and meters: wrk against a server (`wrk.lua`), pgbench against PostgreSQL and
PgBouncer, and what a measured run cost: CPU per process group (`Meter`), each worker's run-queue
wait and event-loop lag (`serve.py`'s files).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import devstack
from bench.dataset import DATABASE, PRODUCTS, Shape
from bench.report import Row
from bench.stack import BenchError, Server, descendants, pinned, processes, run_quiet, say

HERE = Path(__file__).resolve().parent


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
    preempted = preemptions(server)
    started = time.time()
    figures = run_wrk(wrk, server.url, server.tokens, shape, load, load.duration)
    ended = time.time()
    waited = since(waited, run_queue_ns(server))
    preempted = since(preempted, preemptions(server))
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
        preempted=(
            round(sum(preempted.values()) / figures["requests"], 3)
            if preempted and figures["requests"]
            else None
        ),
    )


def wrk_figures(server: str, shape: Shape, figures: dict[str, int]) -> dict[str, Any]:
    """A Row's fields from one wrk run's figures: rate, latencies, errors by kind."""
    kinds = {k: figures[k] for k in ("connect", "read", "write", "timeout", "status") if figures[k]}
    return {
        "server": server,
        "key": shape.key,
        "label": shape.label,
        "app": shape.app,
        "rps": round(figures["requests"] / (figures["duration_us"] / 1e6), 1),
        "p50_ms": round(figures["p50_us"] / 1000, 2),
        "p99_ms": round(figures["p99_us"] / 1000, 2),
        "requests": figures["requests"],
        "errors": sum(kinds.values()),
        "error_kinds": kinds,
    }


def per_worker(server: Server, figure: Callable[[int], int]) -> dict[int, int]:
    """`figure(pid)` of each worker; a worker whose figure cannot be read (gone) is left out."""
    found = {}
    for pid in server.worker_pids():
        with contextlib.suppress(OSError, IndexError, StopIteration, ValueError):
            found[pid] = figure(pid)
    return found


def since(before: dict[int, int], after: dict[int, int]) -> dict[int, int]:
    """Each worker's growth of a figure between two readings (0 for a worker new since)."""
    return {pid: n - before.get(pid, n) for pid, n in after.items()}


def run_queue_ns(server: Server) -> dict[int, int]:
    """Each worker's time so far ready to run but waiting for a CPU, in ns (its main thread's,
    the one running the event loop)."""
    return per_worker(
        server, lambda pid: int(Path(f"/proc/{pid}/schedstat").read_text().split()[1])
    )


def preemptions(server: Server) -> dict[int, int]:
    """How many times so far the kernel took the CPU from each worker while it could have run
    on (its main thread's involuntary context switches): another process woken on its CPU, a
    pipe's reader among them."""

    def switches(pid: int) -> int:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        line = next(line for line in status if line.startswith("nonvoluntary_ctxt_switches"))
        return int(line.split(":")[1])

    return per_worker(server, switches)


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
