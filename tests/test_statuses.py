"""Every status a route's code can raise is declared in its OpenAPI operation.

The code is read, not run: from each route's function and its dependencies, every function of
`api` it calls is followed, and every `raise` of an AppError subclass gives a status (its
`status_code`). The walk over-approximates (it follows every branch), so a status it finds that
the route cannot answer is listed in NOT_REACHED with the reason; statuses any route can answer
(413, 422, 503) are declared on every operation by api/core/errors.py's `problem_openapi`.
"""

import ast
import inspect
import textwrap
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.dependencies.models import Dependant

from api.core.errors import AppError
from api.main import create_app
from tests.support.app import api_routes, settings_for_tests

# (operation, status): why the walk finds it and the route never answers it.
NOT_REACHED = {
    # `_one` reads back the post the request has just inserted, in its own transaction.
    ("POST /posts/", 404): "the new post is read back in the transaction that inserted it",
}


def resolve(node: ast.expr, names: dict[str, Any]) -> Any:
    """What a name or dotted name in a function's source refers to, in its module."""
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.Attribute):
        base = resolve(node.value, names)
        return getattr(base, node.attr, None) if base is not None else None
    return None


def raised(function: Callable[..., Any], seen: set[types.FunctionType]) -> set[int]:
    """The statuses of the AppErrors `function`, and the functions of `api` it calls, raise."""
    function = inspect.unwrap(function)
    if not isinstance(function, types.FunctionType) or function in seen:
        return set()
    if not function.__module__.startswith("api."):
        return set()
    seen.add(function)
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    names = function.__globals__
    statuses: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            error = resolve(target, names)
            if isinstance(error, type) and issubclass(error, AppError):
                statuses.add(error.status_code)
        if isinstance(node, ast.Call):
            statuses |= raised(resolve(node.func, names), seen)
    return statuses


def calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    if dependant.call is not None:
        yield dependant.call
    for dependency in dependant.dependencies:
        yield from calls(dependency)


def statuses_of(route: Any) -> set[int]:
    """What the route's function and its dependencies can raise, followed into api."""
    seen: set[types.FunctionType] = set()
    return set().union(*(raised(call, seen) for call in calls(route.dependant)))


APP = create_app(settings_for_tests())
DOCUMENT = APP.openapi()
OPERATIONS = [
    (f"{method} {route.path_format}", route)
    for route in api_routes(APP.routes)
    if route.include_in_schema
    for method in sorted(route.methods or ())
]


@pytest.mark.parametrize(("operation", "route"), OPERATIONS, ids=[o for o, _ in OPERATIONS])
def test_every_status_the_code_can_raise_is_declared(operation: str, route: Any) -> None:
    method, path = operation.split(" ", 1)
    declared = {int(status) for status in DOCUMENT["paths"][path][method.lower()]["responses"]}
    undeclared = {s for s in statuses_of(route) - declared if (operation, s) not in NOT_REACHED}
    assert not undeclared, f"{operation} can answer {sorted(undeclared)}, undeclared"


def test_the_walk_finds_what_a_route_raises_and_the_exceptions_still_hold() -> None:
    """It would catch an omission: the order route's own refusals are found; and each entry
    of NOT_REACHED is still found by the walk (else it is stale)."""
    routes = dict(OPERATIONS)
    assert {401, 403, 404, 409} <= statuses_of(routes["POST /orders/"])
    for operation, status in NOT_REACHED:
        assert status in statuses_of(routes[operation]), (
            f"{operation} {status} no longer found: drop it"
        )
