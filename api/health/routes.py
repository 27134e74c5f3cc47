"""The root, liveness, readiness and the database's figures."""

import time
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.pool import QueuePool

from api.auth.dependencies import admin_only
from api.core.config import Settings
from api.core.db import SessionDep
from api.core.errors import DATABASE_ERRORS, DatabaseUnavailable, responses
from api.core.models import EVERY_FIELD_ANSWERED
from api.core.replica import Replica, Status

router = APIRouter(prefix="/health", tags=["health"])
root = APIRouter(tags=["health"])


class Index(BaseModel):
    model_config = EVERY_FIELD_ANSWERED

    name: str
    version: str
    docs: str = "/docs"
    openapi: str = "/openapi.json"
    health: str = "/health"
    ready: str = "/health/ready"


@root.get("/")
async def index(request: Request) -> Index:
    """What this is, and where to look next."""
    return Index(name=request.app.title, version=request.app.version)


class Liveness(BaseModel):
    model_config = EVERY_FIELD_ANSWERED

    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    model_config = EVERY_FIELD_ANSWERED

    status: Literal["ok"] = "ok"
    database: Literal["ok"] = "ok"
    latency_ms: float
    pool_mode: Literal["null", "queue"]


def _ms_since(started: float) -> float:
    """The milliseconds since `started` (a `time.perf_counter()` reading), to two decimals."""
    return round((time.perf_counter() - started) * 1000, 2)


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
    return Readiness(latency_ms=_ms_since(started), pool_mode=settings.db_pool)


class PoolFigures(BaseModel):
    size: int
    checked_in: int
    checked_out: int
    overflow: int


class ReplicaFigures(BaseModel):
    """The read replica as the background check last found it: `ok` (anonymous public reads go
    to it), `lagging` (beyond `max_lag_seconds`, or not streaming), `down` (not reachable) or
    `unchecked` (not yet); while it is not `ok` its reads go to the primary."""

    model_config = EVERY_FIELD_ANSWERED

    status: Status
    lag_seconds: float | None
    max_lag_seconds: float
    checked_at: datetime | None


class DatabaseFigures(BaseModel):
    model_config = EVERY_FIELD_ANSWERED

    pool_mode: Literal["null", "queue"]
    latency_ms: float
    pool: PoolFigures | None = None
    replica: ReplicaFigures | None = None


@router.get("/db", dependencies=admin_only, responses=responses(401, 403, 503))
async def database(request: Request, session: SessionDep) -> DatabaseFigures:
    """The app's connection pool (size, checked in and out, overflow) when it pools; behind
    PgBouncer (NullPool) there is none, and the round trip says how the database answers; the
    read replica's state and lag when there is one (superuser)."""
    settings: Settings = request.app.state.settings
    started = time.perf_counter()
    await (await session.connection()).execute(text("SELECT 1"))
    figures = DatabaseFigures(pool_mode=settings.db_pool, latency_ms=_ms_since(started))
    pool = session.bind.sync_engine.pool if session.bind else None
    if isinstance(pool, QueuePool):
        figures.pool = PoolFigures(
            size=pool.size(),
            checked_in=pool.checkedin(),
            checked_out=pool.checkedout(),
            overflow=pool.overflow(),
        )
    replica: Replica | None = request.app.state.replica
    if replica is not None:
        state = replica.state
        figures.replica = ReplicaFigures(
            status=state.status,
            lag_seconds=state.lag_seconds,
            max_lag_seconds=replica.max_lag,
            checked_at=state.checked_at,
        )
    return figures
