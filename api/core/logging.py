"""Structured logs through structlog: JSON lines in production, readable lines in development.

Two paths into one stream (stderr): the standard library's loggers (the app's, uvicorn's,
SQLAlchemy's) through a handler whose formatter is structlog's, and the access line, one per
request, through structlog's own logger. That one skips the standard library's record, its
caller lookup and the formatter's copy of the record: a third of the cost of a line on the
request path (docs/benchmarks.md).
"""

import logging
import sys
from typing import Any, TextIO

import orjson
import structlog
from structlog.typing import FilteringBoundLogger, Processor

from api.core import request_id
from api.core.config import Settings

# The access lines' logger: set by configure_logging, which the running server's lifespan calls;
# None before (an app built by a test and never started writes none).
ACCESS: FilteringBoundLogger | None = None


def json_text(event: Any, **options: Any) -> str:
    """A line's JSON, by orjson (structlog's documented fast serializer): a fifth of the
    standard library's time for an access line. Values orjson cannot encode go to structlog's
    fallback (`default`), which writes their repr."""
    return orjson.dumps(event, default=options.get("default")).decode()


def configure_logging(settings: Settings, stream: TextIO | None = None) -> None:
    global ACCESS
    stream = stream or sys.stderr
    renderer: Processor = (
        structlog.processors.JSONRenderer(serializer=json_text)
        if settings.log_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Processor] = [
        request_id.add_to_log,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
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
    access: FilteringBoundLogger = structlog.wrap_logger(
        structlog.WriteLogger(stream),
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(root.level),
    )
    ACCESS = access.bind(logger="api.access")
