"""`python -m bench.serve`: uvicorn as make bench runs it, for the API and the bare handler.

The same command line as `python -m uvicorn` (the Docker image's), with two additions, both set
up at import, so that uvicorn's spawned workers (which import this module again) get them too:

- the event loop's lag, always: each worker wakes a task every TICK seconds and writes how late
  it woke to `$BENCH_LOOP_LAG_DIR/<pid>.lag` (a line per wake: the wall time, the lateness in
  ms; written twice a second, in one write). A wake is late by as long as the loop ran other
  work without returning to its timers: one long callback (a loop blocked), a long batch of
  short ones (a loop saturated), or a process the kernel did not run (a machine oversubscribed).
  make bench reports each row's figures over its measured run. The task costs a worker a few
  microseconds per wake, 200 wakes a second when idle and fewer under load.
- an experiment, when asked (`make bench --connect-args/--engine-args`): BENCH_CONNECT_ARGS
  (JSON) is merged into the asyncpg connect arguments that `build_engine` passes,
  BENCH_ENGINE_ARGS (JSON) into its `create_async_engine` keyword arguments, to measure a
  proposed engine change before it lands in api/core/db.py.

And for `make bench --baseline`: with BENCH_API_ROOT set, the API's code is imported from that
checkout (a `git worktree` of an older commit) instead of this one; serve.py itself, its sampler
and the bench stay this checkout's.
"""

import asyncio
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import uvicorn.main
import uvicorn.server
from sqlalchemy.ext import asyncio as sa_asyncio

API_ROOT = os.environ.get("BENCH_API_ROOT")
if API_ROOT and API_ROOT not in sys.path:
    sys.path.insert(0, API_ROOT)  # before `api` is first imported, here or in a spawned worker

import api.core.db  # noqa: E402

TICK = 0.005  # seconds between wakes
FLUSH = 0.5  # seconds between writes
CONNECT_ARGS: dict[str, Any] = json.loads(os.environ.get("BENCH_CONNECT_ARGS") or "{}")
ENGINE_ARGS: dict[str, Any] = json.loads(os.environ.get("BENCH_ENGINE_ARGS") or "{}")
LOOP_LAG_DIR = os.environ.get("BENCH_LOOP_LAG_DIR")
_create_async_engine = sa_asyncio.create_async_engine
_startup = uvicorn.server.Server.startup


def create_async_engine(*args: Any, **kwargs: Any) -> sa_asyncio.AsyncEngine:
    kwargs.setdefault("connect_args", {}).update(CONNECT_ARGS)
    kwargs.update(ENGINE_ARGS)
    return _create_async_engine(*args, **kwargs)


async def sample_loop_lag(path: Path) -> None:
    lines: list[str] = []
    flush_at = time.monotonic() + FLUSH
    with path.open("a") as out:
        while True:
            slept = time.monotonic()
            await asyncio.sleep(TICK)
            woke = time.monotonic()
            lines.append(f"{time.time():.4f} {(woke - slept - TICK) * 1000:.3f}\n")
            if woke >= flush_at:
                out.write("".join(lines))
                out.flush()
                lines.clear()
                flush_at = woke + FLUSH


_samplers: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks


def sampler_ended(task: asyncio.Task[None]) -> None:
    """A sampler that fails says so in the server's log (make bench's rows would only lack it)."""
    if not task.cancelled() and (error := task.exception()) is not None:
        logging.getLogger(__name__).error("loop-lag sampler failed", exc_info=error)


async def startup(self: uvicorn.server.Server, sockets: list[socket.socket] | None = None) -> None:
    await _startup(self, sockets)
    if LOOP_LAG_DIR:
        path = Path(LOOP_LAG_DIR) / f"{os.getpid()}.lag"
        task = asyncio.get_running_loop().create_task(sample_loop_lag(path))
        task.add_done_callback(sampler_ended)
        _samplers.add(task)


api.core.db.create_async_engine = create_async_engine  # type: ignore[attr-defined]
uvicorn.server.Server.startup = startup  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.argv[0] = "uvicorn"
    sys.exit(uvicorn.main.main())
