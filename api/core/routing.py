"""How routes are named and matched: operation ids, and path types for a segment that several
routers' paths share."""

import re
from collections.abc import Iterable

from fastapi.routing import APIRoute
from starlette.convertors import StringConvertor, register_url_convertor


def operation_id(route: APIRoute) -> str:
    """`products-create-product`: the route's tag and its function's name, unique in the API
    (a test checks), which a generated client turns into `products_create_product` instead of
    FastAPI's default `create_product_products__post`."""
    return "-".join([*map(str, route.tags[:1]), route.name]).replace("_", "-")


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
