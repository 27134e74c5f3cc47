"""The app's log as a server writes it, in-process: `configure_logging` (what the lifespan
runs) with JSON lines into a buffer, and the process's logging put back afterwards."""

import io
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from api.core.config import Settings
from api.core.logging import configure_logging

SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


@contextmanager
def json_log(settings: Settings) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """Logging configured from `settings`, as JSON lines; yields a function that answers the
    lines written so far, parsed."""
    root = logging.getLogger()
    saved_root = root.handlers[:], root.level
    saved = {
        name: (logging.getLogger(name).handlers[:], logging.getLogger(name).propagate)
        for name in SERVER_LOGGERS
    }
    configure_logging(settings.model_copy(update={"log_json": True}))
    [handler] = root.handlers
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    handler.setStream(buffer)
    try:
        yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    finally:
        root.handlers[:], level = saved_root
        root.setLevel(level)
        for name, (handlers, propagate) in saved.items():
            logging.getLogger(name).handlers[:] = handlers
            logging.getLogger(name).propagate = propagate
