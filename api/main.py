"""The application factory; servers launch the app through api/launch.py."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from api.auth.routes import router as auth_router
from api.categories.routes import router as categories_router
from api.core.config import Settings, get_settings
from api.core.db import build_engine, build_replica, use_engine
from api.core.errors import install_error_handlers, problem_openapi
from api.core.logging import configure_logging
from api.core.middleware import BodySizeLimit, SlashOptional
from api.core.routing import operation_id
from api.core.version import VERSION
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

logger = logging.getLogger(__name__)

# Most requested first: FastAPI tries the routes in order, each included router's one by one,
# so a router's place costs or saves its requests time (docs/design.md). Correctness does not
# depend on it: overlapping paths are told apart by their types (api.core.routing), and a test
# includes the routers in reverse order.
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
    configure_logging(app.state.settings)
    engine = build_engine(app.state.settings)
    replica = build_replica(app.state.settings)
    use_engine(app, engine, replica)
    try:
        await create_first_superuser(app.state.settings, app.state.sessionmaker)
        if replica is None:
            yield
        else:
            async with replica.watching():
                yield
    finally:
        await engine.dispose()


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


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="Storefront API",
        version=VERSION,
        description="A shop and its blog: users, catalog, orders, posts.",
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
    )
    app.state.settings = settings
    app.state.replica = None  # lifespan sets it up when DATABASE_READ_URL is set
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.openapi = lambda: problem_openapi(app)  # type: ignore[method-assign]
    collections = frozenset(
        route.path.rstrip("/")
        for router in ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute) and route.path.endswith("/") and route.path != "/"
    )
    app.add_middleware(SlashOptional, paths=collections)
    # The last middleware added is the outermost: CORS wraps the body limit, so a 413 carries
    # CORS headers a browser can read.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    return app
