"""The list envelope `{items, total, page, size, pages}`, through fastapi-pagination.

Routes take `params: PageParamsDep` and services pass it on to `apaginate`, so the paging
parameters are visible in every signature. `page` is bounded so that OFFSET stays a sane bigint;
`size` is 1..100 (default 20).
"""

from typing import Annotated, ClassVar

from fastapi import Depends, Query
from fastapi_pagination import Page, Params
from fastapi_pagination.ext.sqlmodel import apaginate

MAX_PAGE = 1_000_000


class PageParams(Params):
    __page_type__: ClassVar[type[Page]] = Page

    page: int = Query(1, ge=1, le=MAX_PAGE, description="Page number, from 1.")
    size: int = Query(20, ge=1, le=100, description="Items per page, 1 to 100.")


PageParamsDep = Annotated[PageParams, Depends()]

__all__ = ["Page", "PageParams", "PageParamsDep", "apaginate"]
