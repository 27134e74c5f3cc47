"""The app's log as a server writes it, in-process: `configure_logging` (what the lifespan
runs) into a buffer, and the process's logging put back afterwards."""

import io
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from api.core import logging as app_logging
from api.core.config import Settings
from api.core.logging import configure_logging

SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


@contextmanager
def captured_log(settings: Settings) -> Iterator[Callable[[], str]]:
    """Logging configured from `settings`; yields a function that answers what was written."""
    root = logging.getLogger()
    saved_root = root.handlers[:], root.level
    saved = {
        name: (logging.getLogger(name).handlers[:], logging.getLogger(name).propagate)
        for name in SERVER_LOGGERS
    }
    saved_access = app_logging.ACCESS, app_logging._ACCESS_LINES
    buffer = io.StringIO()
    configure_logging(settings, stream=buffer)

    def written() -> str:
        app_logging.flush_access_lines()  # the access lines still waiting too
        return buffer.getvalue()

    try:
        yield written
    finally:
        app_logging.flush_access_lines()
        app_logging.ACCESS, app_logging._ACCESS_LINES = saved_access
        root.handlers[:], level = saved_root
        root.setLevel(level)
        for name, (handlers, propagate) in saved.items():
            logging.getLogger(name).handlers[:] = handlers
            logging.getLogger(name).propagate = propagate


@contextmanager
def json_log(settings: Settings) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """`captured_log` as JSON lines, parsed."""
    with captured_log(settings.model_copy(update={"log_json": True})) as text:
        yield lambda: [json.loads(line) for line in text().splitlines()]


def access_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("logger") == "api.access"]
