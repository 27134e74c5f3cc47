"""uvicorn for `make bench --connect-args/--engine-args`: measure a proposed engine change before
it lands in api/core/db.py.

BENCH_CONNECT_ARGS (JSON) is merged into the asyncpg connect arguments that `build_engine` passes,
BENCH_ENGINE_ARGS (JSON) into its `create_async_engine` keyword arguments. The layering happens
at import, so that uvicorn's spawned workers (which import this module again) get it too. Without
either variable the bench runs `python -m uvicorn` itself, exactly as the Docker image does.
"""

import json
import os
import sys
from typing import Any

import uvicorn.main
from sqlalchemy.ext import asyncio as sa_asyncio

import api.core.db

CONNECT_ARGS: dict[str, Any] = json.loads(os.environ.get("BENCH_CONNECT_ARGS") or "{}")
ENGINE_ARGS: dict[str, Any] = json.loads(os.environ.get("BENCH_ENGINE_ARGS") or "{}")
_create_async_engine = sa_asyncio.create_async_engine


def create_async_engine(*args: Any, **kwargs: Any) -> sa_asyncio.AsyncEngine:
    kwargs.setdefault("connect_args", {}).update(CONNECT_ARGS)
    kwargs.update(ENGINE_ARGS)
    return _create_async_engine(*args, **kwargs)


api.core.db.create_async_engine = create_async_engine  # type: ignore[attr-defined]

if __name__ == "__main__":
    sys.argv[0] = "uvicorn"
    sys.exit(uvicorn.main.main())
