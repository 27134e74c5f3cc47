"""The checkout's root and the app as the tests build it: Settings with the tests' SECRET_KEY
(never from the developer's environment), its routes (and the functions their dependencies
call), and the app on a database not there."""

import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic.fields import FieldInfo
from starlette.routing import BaseRoute

from api.core.config import DEPRECATED_SETTINGS, Settings
from api.core.db import build_engine, use_engine
from api.main import create_app

ROOT = Path(__file__).resolve().parents[2]
SECRET_KEY = secrets.token_urlsafe(48)


def setting_fields() -> dict[str, FieldInfo]:
    """Settings' fields by the variable that sets each, without DEPRECATED_SETTINGS: those are
    read, but are no settings of their own."""
    return {
        name.upper(): field
        for name, field in Settings.model_fields.items()
        if field.validation_alias not in DEPRECATED_SETTINGS
    }


def settings_for_tests(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"environment": "test", "secret_key": SECRET_KEY, "log_json": False}
    return Settings(_env_file=None, **(values | overrides))


def app_without_database(database_url: str, **settings: Any) -> FastAPI:
    """The app with its real engine on a database that is not there, short timeouts and
    `settings`."""
    app = create_app(
        settings_for_tests(
            database_url=database_url, db_connect_timeout=0.5, db_pool_timeout=1, **settings
        )
    )
    use_engine(app, build_engine(app.state.settings))
    return app


def openapi_routes() -> set[tuple[str, str]]:
    paths = create_app(settings_for_tests()).openapi()["paths"]
    return {(method.upper(), path) for path, ops in paths.items() for method in ops}


def dependency_calls(dependant: Dependant) -> set[Any]:
    """Every function a route's dependency tree calls."""
    calls = {dependant.call}
    for sub in dependant.dependencies:
        calls |= dependency_calls(sub)
    return calls


def api_routes(routes: Sequence[BaseRoute]) -> Iterator[APIRoute]:
    """The app's routes, inside included routers too (FastAPI keeps those as their own
    objects, with the router they include)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):
            yield from api_routes(route.original_router.routes)
