"""Liveness and readiness."""

import time
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy import text

from api.core.config import Settings
from api.core.errors import DATABASE_ERRORS, DatabaseUnavailable, responses

router = APIRouter(prefix="/health", tags=["health"])


class Liveness(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ok"] = "ok"
    database: Literal["ok"] = "ok"
    latency_ms: float
    pool_mode: Literal["null", "queue"]


@router.get("")
async def health() -> Liveness:
    """Liveness: the process answers. Touches no database."""
    return Liveness()


@router.get("/ready", responses=responses(503))
async def ready(request: Request) -> Readiness:
    """Readiness: one database round trip, bounded by the connect and command timeouts."""
    settings: Settings = request.app.state.settings
    started = time.perf_counter()
    try:
        async with request.app.state.sessionmaker() as session:
            await session.exec(text("SELECT 1"))
    except DATABASE_ERRORS as exc:
        # Not ready whatever the reason: unreachable, wrong password, missing database.
        raise DatabaseUnavailable from exc
    latency = round((time.perf_counter() - started) * 1000, 2)
    return Readiness(latency_ms=latency, pool_mode=settings.db_pool_mode)
