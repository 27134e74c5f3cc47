"""`python -m bench.alone [--calls N] [--rounds N]`: what request ids, the access line and the
metrics cost a request when nothing else runs, in microseconds.

Each part is on alone, then all three, with the middleware create_app adds for those settings
(its own configuration, the body limit and the optional slash included) around an ASGI app
that answers at once, called in-process on uvloop, N calls a round after a warm-up, the rounds
interleaved; the median of the rounds, less all three off's. The access line is rendered as in
production (JSON) into /dev/null; the metrics count in a multiprocess directory of their own,
as the image's workers do.

Alone, their code and data stay in the caches and their branches are learnt: these figures
are a floor. In a server the same code runs among a whole request's, and costs more than
these and more than its instructions at the request's pace (docs/benchmarks.md, "The log
pipe's reader, woken on the worker's core"); make bench and bench.instructions measure it
there.
"""

import argparse
import asyncio
import os
import secrets
import statistics
import tempfile
import time
from typing import TYPE_CHECKING, Any, TextIO

import uvloop
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from api.core.config import Settings

WARM_UP = 1_000  # calls before each round's timed ones


async def answer(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


class Route:
    """What routing leaves in the scope for the access line and the metrics."""

    path_format = "/products/{product_id}"


def request_scope() -> Scope:
    return {
        "type": "http",
        "method": "GET",
        "path": "/products/1",
        "raw_path": b"/products/1",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk")],
        "client": ("127.0.0.1", 40000),
        "route": Route(),
        "state": {},
    }


async def receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: Message) -> None:
    pass


async def microseconds(app: ASGIApp, calls: int) -> float:
    for _ in range(WARM_UP):
        await app(request_scope(), receive, send)
    started = time.perf_counter()
    for _ in range(calls):
        await app(request_scope(), receive, send)
    return (time.perf_counter() - started) / calls * 1e6


# Each part's setting; all three off is the app's other middleware alone (make bench's all off).
PARTS = {"request ids": "request_ids", "access line": "access_log", "metrics": "metrics_enabled"}


def around(app: ASGIApp, settings: "Settings") -> ASGIApp:
    """`app` inside the middleware create_app adds for `settings`, stacked as Starlette stacks
    it (the first added innermost)."""
    from api.main import create_app

    for cls, args, kwargs in reversed(create_app(settings).user_middleware):
        app = cls(app, *args, **kwargs)
    return app


def layers() -> dict[str, ASGIApp]:
    """All three off, each part on alone, then all three, around the app that answers."""
    from api.core.config import Settings

    off: dict[str, Any] = dict.fromkeys(PARTS.values(), False)
    found = {"all off": around(answer, Settings(**off))}
    for name, setting in PARTS.items():
        found[name] = around(answer, Settings(**{**off, setting: True}))
    found["all three"] = around(answer, Settings())
    return found


async def main(calls: int, rounds: int, log: TextIO) -> None:
    from api.core import logging as app_logging
    from api.core.config import Settings

    app_logging.configure_logging(Settings(), stream=log)
    apps = layers()
    figures: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(rounds):
        for name, app in apps.items():
            figures[name].append(await microseconds(app, calls))
    app_logging.flush_access_lines()
    base = statistics.median(figures.pop("all off"))
    print(f"\n{calls:,} calls x {rounds} rounds; all three off: {base:.2f} us a call")
    print(f"{'part':<12} {'us/request':>10}  (each round's, less all off's median)")
    for name, found in figures.items():
        rounds_cell = " ".join(f"{f - base:.2f}" for f in found)
        print(f"{name:<12} {statistics.median(found) - base:>10.2f}  ({rounds_cell})")


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000, help="per part and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-alone-") as directory:
        # Read when api.core.metrics is first imported: set before layers() imports it.
        os.environ.update(
            PROMETHEUS_MULTIPROC_DIR=directory,
            ENVIRONMENT="production",
            SECRET_KEY=secrets.token_urlsafe(48),
            LOG_JSON="true",
            LOG_LEVEL="INFO",
            ACCESS_LOG="true",
            METRICS_ENABLED="true",
            REQUEST_IDS="true",
        )
        with (
            open(os.devnull, "w") as log,
            asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
        ):
            runner.run(main(args.calls, args.rounds, log))


if __name__ == "__main__":
    run()
