"""The application factory; servers launch the app through api/launch.py."""

import logging
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from api.auth.routes import router as auth_router
from api.categories.routes import router as categories_router
from api.core import metrics, tracing
from api.core.config import Settings, get_settings
from api.core.db import build_engine, build_replica, use_engine
from api.core.errors import install_error_handlers, problem_openapi
from api.core.idempotency import REPLAYED as REPLAYED_HEADER
from api.core.logging import configure_logging, flush_access_lines
from api.core.middleware import BodySizeLimit, SlashOptional
from api.core.observability import ObserveRequests
from api.core.request_id import HEADER as REQUEST_ID_HEADER
from api.core.request_id import new as new_request_id
from api.core.request_id import well_formed
from api.core.routing import add_routes, operation_id
from api.core.version import VERSION
from api.health.routes import metrics_router
from api.health.routes import root as root_router
from api.health.routes import router as health_router
from api.notifications.routes import router as notifications_router
from api.orders.routes import router as orders_router
from api.orders.routes import users_router as orders_users_router
from api.posts.routes import router as posts_router
from api.posts.routes import users_router as posts_users_router
from api.products.routes import categories_router as products_categories_router
from api.products.routes import router as products_router
from api.tags.routes import router as tags_router
from api.users import service as user_service
from api.users.routes import router as users_router

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

logger = logging.getLogger(__name__)

# Most requested first: FastAPI tries the routes in order (add_routes keeps each router's
# routes together), so a router's place costs or saves its requests time (docs/design.md).
# Correctness does not depend on it: overlapping paths are told apart by their types
# (api.core.routing), and a test takes the routers in reverse order.
ROUTERS = (
    root_router,
    health_router,
    products_router,
    categories_router,
    products_categories_router,
    tags_router,
    posts_router,
    orders_router,
    auth_router,
    users_router,
    posts_users_router,
    orders_users_router,
    notifications_router,
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Logging is configured by the running server, not by the factory: building an app (as the
    # tests do, many times) leaves the process's handlers alone.
    settings: Settings = app.state.settings
    configure_logging(settings)
    if settings.metrics_enabled:
        start_metrics(settings)
    provider: TracerProvider | None = app.state.tracer_provider
    # Whatever fails on the way up or down, what was set up is taken down, in reverse order.
    async with AsyncExitStack() as stack:
        stack.callback(flush_access_lines)
        if provider is not None:
            stack.callback(provider.force_flush)
        stack.callback(metrics.forget_process)
        if settings.metrics_enabled and metrics.MULTIPROCESS_DIR:
            # The other workers' scrapes read this one's requests in flight from its file.
            await stack.enter_async_context(metrics.REQUESTS_IN_FLIGHT.published_every(1.0))
        engine = build_engine(settings)
        stack.push_async_callback(engine.dispose)
        replica = build_replica(settings)
        if replica is not None:
            stack.push_async_callback(replica.engine.dispose)
        use_engine(app, engine, replica)
        if provider is not None:
            tracing.trace_sql([engine] if replica is None else [engine, replica.engine], provider)
            stack.callback(tracing.stop_tracing_sql)
        await create_first_superuser(settings, app.state.sessionmaker)
        if replica is not None:
            await stack.enter_async_context(replica.watching())
        yield


def start_metrics(settings: Settings) -> None:
    metrics.record_build(VERSION, settings.git_sha)
    workers = os.environ.get("WEB_CONCURRENCY", "1")
    if not metrics.MULTIPROCESS_DIR and workers.isdigit() and int(workers) > 1:
        logger.warning(
            "%s workers without PROMETHEUS_MULTIPROC_DIR: each scrape sees one worker's "
            "metrics; start the server with `python -m api serve` and that variable set",
            workers,
        )


async def create_first_superuser(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """The superuser from FIRST_SUPERUSER_EMAIL/PASSWORD, created if no user has that email."""
    if settings.first_superuser_email is None or settings.first_superuser_password is None:
        return
    async with sessionmaker() as session, session.begin():
        _, created = await user_service.ensure_superuser(
            session=session,
            email=settings.first_superuser_email,
            username=settings.first_superuser_username,
            password=settings.first_superuser_password.get_secret_value(),
            promote=False,
        )
    if created:
        logger.info("created the first superuser %s", settings.first_superuser_username)


def create_app(
    settings: Settings | None = None, *, tracer_provider: "TracerProvider | None" = None
) -> FastAPI:
    """The app; traced into `tracer_provider` when given, else as the OTEL_* variables say
    (api.core.tracing)."""
    settings = settings or get_settings()
    provider = tracer_provider or tracing.provider_from_environment()
    app = FastAPI(
        title="Storefront API",
        version=VERSION,
        description="A shop and its blog: users, catalog, orders, posts.",
        lifespan=lifespan,
        telemetry=tracing.telemetry(provider),
        generate_unique_id_function=operation_id,
    )
    app.state.settings = settings
    app.state.tracer_provider = provider
    app.state.replica = None  # lifespan sets it up when DATABASE_READ_URL is set
    install_error_handlers(app)
    add_routes(app, ROUTERS)
    if settings.metrics_enabled:
        add_routes(app, [metrics_router])
    app.openapi = lambda: problem_openapi(app)  # type: ignore[method-assign]
    collections = frozenset(
        route.path.rstrip("/")
        for router in ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute) and route.path.endswith("/") and route.path != "/"
    )
    app.add_middleware(SlashOptional, paths=collections)
    # The last middleware added is the outermost: CORS wraps the body limit, so a 413 carries
    # CORS headers a browser can read; the access log and the metrics see every answer, a CORS
    # preflight's and a 413 too; the request id wraps them all, so every answer and access line
    # carries it. FastAPI's server span, when traced, wraps the whole stack.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            # What a browser's script may read beyond the safelisted headers.
            expose_headers=[REQUEST_ID_HEADER, "ETag", REPLAYED_HEADER, "Retry-After"],
        )
    if settings.access_log or settings.metrics_enabled:
        app.add_middleware(
            ObserveRequests,
            access_log=settings.access_log,
            log_probes=settings.access_log_probes,
            metrics=settings.metrics_enabled,
        )
    if provider is not None:
        app.add_middleware(tracing.RequestIdOnSpan)
    if settings.request_ids:
        # The id reaches the code through its context variable (api.core.request_id), so the
        # request's own headers are left as they came, and kept ids as they are.
        app.add_middleware(
            CorrelationIdMiddleware,
            header_name=REQUEST_ID_HEADER,
            validator=well_formed,
            generator=new_request_id,
            update_request_header=False,
            transformer=None,
        )
    return app
