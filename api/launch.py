"""The API as its servers launch it: `uvicorn --factory api.launch:create_app` (deploy/Dockerfile,
make run, make bench). The app is api.main's; what this adds tunes the server's process, which
an app built in a test (many in one process) leaves alone.
"""

from __future__ import annotations

import gc
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from fastapi import FastAPI

    from api.core.config import Settings

# glibc reads it when a process starts, so whoever starts the server sets it (deploy/Dockerfile,
# devstack/serve.py, make bench): blocks of 128 KiB and more always come from mmap and go back
# when freed. Unset, glibc raises that threshold to the size of each large block freed, and a
# password hash's 19 MiB stays resident in a worker from its second hash on. Kept because make
# bench shows it in the workers' memory (docs/benchmarks.md, "Process tuning").
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def settle_garbage_collector() -> None:
    """What is alive once the app has started (modules, the app, its routes and models) lives
    as long as the worker: it leaves the collector's sight (gc.freeze), and the youngest
    generation is collected every 20,000 allocations instead of 700. Kept because make bench
    shows it in the CPU each request costs (docs/benchmarks.md, "Process tuning")."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)


def create_app(settings: Settings | None = None) -> FastAPI:
    """api.main's app, whose startup ends by settling the garbage collector."""
    # Imported here: make run's supervisor reads MALLOC_ENV without loading the app.
    from api import main

    app = main.create_app(settings)
    started = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with started(app):
            settle_garbage_collector()
            yield

    app.router.lifespan_context = lifespan
    return app
