"""The root, liveness, readiness, the database's figures and Prometheus' metrics."""

import hmac
import ipaddress
import time
from datetime import datetime
from typing import Annotated, Literal

from fastapi import Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.pool import QueuePool

from api.auth.dependencies import admin_only
from api.core import metrics
from api.core.config import Settings
from api.core.db import SessionDep
from api.core.errors import DATABASE_ERRORS, DatabaseUnavailable, Forbidden, Unauthorized, responses
from api.core.models import EVERY_FIELD_ANSWERED
from api.core.replica import Replica, Status
from api.core.routing import api_router

router = api_router(prefix="/health", tags=["health"])
root = api_router(tags=["health"])
# Included when METRICS_ENABLED; not in the OpenAPI document (it is no API for clients).
metrics_router = api_router()


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


def direct_loopback(request: Request) -> bool:
    """A client on this host that came straight here: a request relayed by a proxy (one that
    says so in X-Forwarded-For or Forwarded) is not local, whatever address it names."""
    headers = request.headers
    if request.client is None or "x-forwarded-for" in headers or "forwarded" in headers:
        return False
    try:
        return ipaddress.ip_address(request.client.host).is_loopback
    except ValueError:
        return False


def scraper(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False))],
) -> None:
    """With METRICS_TOKEN: a bearer of it. Without: a loopback client (a sidecar, a
    `kubectl port-forward`, `docker compose exec`)."""
    token = request.app.state.settings.metrics_token
    if token is not None:
        sent = bearer.credentials.encode() if bearer else b""
        if not hmac.compare_digest(sent, token.get_secret_value().encode()):
            raise Unauthorized("Send METRICS_TOKEN as a bearer token.")
    elif not direct_loopback(request):
        raise Forbidden("Without METRICS_TOKEN, metrics are served to loopback clients only.")


@metrics_router.get("/metrics", include_in_schema=False, dependencies=[Depends(scraper)])
async def prometheus_metrics() -> Response:
    """Every worker's metrics in Prometheus' text format."""
    return Response(await metrics.scrape(), media_type=metrics.CONTENT_TYPE)
