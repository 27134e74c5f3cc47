"""How routes are named and matched: operation ids, the routers and how the app takes their
routes, and path types for a segment that several routers' paths share."""

import re
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute, APIRouter
from starlette.convertors import StringConvertor, register_url_convertor


def operation_id(route: APIRoute) -> str:
    """`products-create-product`: the route's tag and its function's name, unique in the API
    (a test checks), which a generated client turns into `products_create_product` instead of
    FastAPI's default `create_product_products__post`."""
    return "-".join([*map(str, route.tags[:1]), route.name]).replace("_", "-")


def api_router(**options: Any) -> APIRouter:
    """A resource's router, whose routes are named by `operation_id` from the start: the app
    takes its routes as they are (`add_routes`), so no inclusion names them later."""
    return APIRouter(generate_unique_id_function=operation_id, **options)


def add_routes(app: FastAPI, routers: Iterable[APIRouter]) -> None:
    """The routers' routes on the app's own router, in order. `include_router` would keep
    each router as a node that a request walks through: FastAPI then matches the router's
    routes once to choose it and again to choose the route, with scope bookkeeping around each
    route it tries, the largest part of what routing costs a request (docs/benchmarks.md).
    The routers set their prefixes, tags and dependencies themselves; nothing is left for an
    inclusion to add."""
    for router in routers:
        app.router.routes.extend(router.routes)


def segment_except(name: str, words: Iterable[str]) -> str:
    """Register the path type `name`, one segment other than `words`, and answer its name: in
    `/users/{user_id:name}` a literal path beside it (`/users/me`) never reaches the id route,
    whichever router is tried first, while any other segment does and is validated as the
    parameter's type (`/users/abc` is a 422)."""
    alternatives = "|".join(re.escape(word) for word in sorted(words))

    class SegmentExcept(StringConvertor):
        regex = rf"(?!(?:{alternatives})(?:/|$))[^/]+"

    register_url_convertor(name, SegmentExcept())
    return name
