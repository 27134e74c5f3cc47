"""Structured logs through structlog: JSON lines in production, readable lines in development.

Two paths into one stream (stderr): the standard library's loggers (the app's, uvicorn's,
SQLAlchemy's) through a handler whose formatter is structlog's, and the access line, one per
request, through structlog's own logger. That one skips the standard library's record, its
caller lookup and the formatter's copy of the record: a third of the cost of a line on the
request path (docs/benchmarks.md). Its lines wait up to a tenth of a second and go out together
(`BatchedLines`).
"""

import asyncio
import atexit
import logging
import select
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson
import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor

from api.core import request_id
from api.core.config import Settings

# The access lines' logger: set by configure_logging, which the running server's lifespan calls;
# None before (an app built by a test and never started writes none).
ACCESS: FilteringBoundLogger | None = None
_ACCESS_LINES: "BatchedLines | None" = None


class BatchedLines:
    """structlog's logger for the access lines: a line waits up to `wait` seconds (a tenth by
    default), and the lines waiting go out together, in writes of whole lines of at most
    `select.PIPE_BUF` bytes. A container's output is a pipe whose reader (the container
    runtime) each write wakes, and the kernel runs the woken reader on the writer's core: a
    write per turn of the event loop would preempt a busy worker about 0.3 times more per request
    than no access lines, batched a few hundredths (docs/benchmarks.md). A pipe takes up to
    PIPE_BUF bytes in one piece, so the lines of several workers sharing it never interleave (a
    single line longer than that, which an access line is not, is written alone, and may be).
    Outside a running loop a line is written at once. A stopping server writes the lines
    waiting (the lifespan's `flush_access_lines`), and so does the process's exit, for lines
    written after that (a request cancelled at the end of the graceful shutdown) or without it
    (a forced exit)."""

    def __init__(self, stream: TextIO, wait: float = 0.1) -> None:
        self._stream = stream
        self._wait = wait
        self._lines: list[str] = []
        self._flushing_on: asyncio.AbstractEventLoop | None = None  # the loop that will flush
        self._flush: asyncio.TimerHandle | None = None  # its timer

    def info(self, message: str) -> None:
        self._lines.append(message)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if self._flushing_on is not loop:
            self._flush = loop.call_later(self._wait, self.flush)
            self._flushing_on = loop

    def flush(self) -> None:
        """Write the lines waiting."""
        if self._flush is not None:
            self._flush.cancel()  # written early (at shutdown, for a test): no timer left behind
        lines, self._lines = self._lines, []
        self._flushing_on = self._flush = None
        if len(lines) == 1:  # one line waiting (a quiet server's, or a line outside a loop)
            self._write(lines[0] + "\n")
            return
        chunk: list[str] = []
        size = 0
        for line in lines:
            length = (len(line) if line.isascii() else len(line.encode())) + 1
            if chunk and size + length > select.PIPE_BUF:
                self._write("\n".join(chunk) + "\n")
                chunk, size = [], 0
            chunk.append(line)
            size += length
        if chunk:
            self._write("\n".join(chunk) + "\n")

    def _write(self, text: str) -> None:
        """One write; a stream that refuses it (closed, a broken pipe) loses its lines, not
        the others waiting, as the standard library's handlers do."""
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):
            pass


def flush_access_lines() -> None:
    """Write the access lines still waiting (at shutdown, or before a test reads the log)."""
    if _ACCESS_LINES is not None:
        _ACCESS_LINES.flush()


# Lines written after the lifespan's flush, or with no lifespan shutdown at all (a forced exit),
# go out when the process exits; a uvicorn worker exits through sys.exit, which runs this.
atexit.register(flush_access_lines)


def json_text(event: Any, **options: Any) -> str:
    """A line's JSON, by orjson (structlog's documented fast serializer): a fifth of the
    standard library's time for an access line. A datetime is written in ISO 8601, a UTC one
    with `Z`. Values orjson cannot encode go to structlog's fallback (`default`), which writes
    their repr."""
    return orjson.dumps(event, default=options.get("default"), option=orjson.OPT_UTC_Z).decode()


def utc_timestamp(_logger: Any, _method: str, event: EventDict) -> EventDict:
    """structlog processor for JSON lines: the line's time as a UTC datetime, which orjson
    writes as structlog's `TimeStamper(fmt="iso", utc=True)` would (`2026-12-04T15:00:00.123456Z`),
    in a quarter of its time: TimeStamper formats the text in Python, orjson in Rust."""
    event["timestamp"] = datetime.now(UTC)
    return event


def _renderer_and_chain(settings: Settings) -> tuple[Processor, list[Processor]]:
    """The line's renderer (JSON, or readable in development) and the processors every line
    goes through before it. Each kind of line adds its level itself: the access lines' is
    bound once (they are all info), the standard library's lines add theirs."""
    renderer: Processor
    timestamp: Processor
    if settings.log_json:
        renderer = structlog.processors.JSONRenderer(serializer=json_text)
        timestamp = utc_timestamp
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
        timestamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    shared: list[Processor] = [request_id.add_to_log, timestamp]
    return renderer, shared


def _formatter(renderer: Processor, shared: list[Processor]) -> logging.Formatter:
    """The standard library's lines (the app's, uvicorn's, SQLAlchemy's) in the app's format."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            *shared,
            structlog.stdlib.add_logger_name,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )


def server_formatter() -> logging.Formatter:
    """The app's format from the environment's settings, for uvicorn's own log configuration
    (api/core/uvicorn_logging.json, which `python -m api serve` passes it): the lines uvicorn
    writes before the app starts, and those of the process that supervises several workers,
    which never starts the app, in the app's format too. Settings that do not validate stop
    uvicorn there, before it starts a worker, with the reason."""
    return _formatter(*_renderer_and_chain(Settings()))


def configure_logging(settings: Settings, stream: TextIO | None = None) -> None:
    global ACCESS, _ACCESS_LINES
    stream = stream or sys.stderr
    renderer, shared = _renderer_and_chain(settings)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_formatter(renderer, shared))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # The app writes one access line per request itself (api.core.observability). A logger
    # with no handler anywhere up its tree is what tells uvicorn to write none of its own.
    uvicorn_access = logging.getLogger("uvicorn.access")
    uvicorn_access.handlers[:] = []
    uvicorn_access.propagate = False
    flush_access_lines()  # a previous configuration's, into its own stream
    _ACCESS_LINES = BatchedLines(stream)
    # It writes info lines only: their level is bound once, not added to each.
    access: FilteringBoundLogger = structlog.wrap_logger(
        _ACCESS_LINES,
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(root.level),
    )
    ACCESS = access.bind(logger="api.access", level="info")
