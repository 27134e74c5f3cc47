"""The list envelope `{items, total, page, size, pages}`, through fastapi-pagination.

`page` is bounded so that OFFSET stays a sane bigint; `size` is 1..100 (default 20).
"""

from typing import TypeVar

from fastapi import Query
from fastapi_pagination import Page as BasePage
from fastapi_pagination.customization import CustomizedPage, UseParamsFields
from fastapi_pagination.ext.sqlmodel import apaginate

T = TypeVar("T")

MAX_PAGE = 1_000_000

Page = CustomizedPage[
    BasePage[T],
    UseParamsFields(
        page=Query(1, ge=1, le=MAX_PAGE, description="Page number, from 1."),
        size=Query(20, ge=1, le=100, description="Items per page, 1 to 100."),
    ),
]

__all__ = ["Page", "apaginate"]
