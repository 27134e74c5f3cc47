"""No request waits for a worker thread but for the ones that must: FastAPI runs a plain function
(a `def` handler, dependency or class) on anyio's thread pool, a hop there and back that costs a
request more than most of its own work. Only blocking work belongs there."""

from collections.abc import Callable
from typing import Any

from fastapi.dependencies.models import _is_async_gen_callable, _is_coroutine_callable
from fastapi.security import OAuth2PasswordRequestForm

from api.health.routes import prometheus_metrics, scraper
from api.main import create_app
from tests.support.app import api_routes, dependency_calls, settings_for_tests

# /metrics reads every worker's files (and its guard with it); the login form is FastAPI's class,
# on a route that hashes a password on a thread anyway.
ON_THREADS: set[Callable[..., Any]] = {prometheus_metrics, scraper, OAuth2PasswordRequestForm}


def threaded(call: Callable[..., Any] | None) -> bool:
    return call is not None and not (_is_coroutine_callable(call) or _is_async_gen_callable(call))


def test_every_handler_and_dependency_runs_on_the_event_loop() -> None:
    app = create_app(settings_for_tests())
    on_threads = {
        (route.path, getattr(call, "__qualname__", repr(call)))
        for route in api_routes(app.router.routes)
        for call in dependency_calls(route.dependant)
        if threaded(call) and call not in ON_THREADS
    }
    assert on_threads == set()


def test_a_plain_function_would_be_seen() -> None:
    def plain() -> None: ...

    async def coroutine() -> None: ...

    assert threaded(plain)
    assert threaded(OAuth2PasswordRequestForm)
    assert not threaded(coroutine)
