"""The list envelope `{items, total, total_capped, page, size, pages, next_cursor}`: pages by
OFFSET, pages by keyset through sqlakeyset.

Routes take `params: PageParamsDep` and services pass it on to `apaginate`, so the paging
parameters are visible in every signature. Two ways through a list, same envelope:

- by page: `?page=N&size=M` answers `total` and `pages` too, counted exactly up to COUNT_CAP
  rows: counting a long list costs PostgreSQL many times the page itself. A longer list answers
  `total` and `pages` null and `total_capped` true. `page` is bounded so that OFFSET stays a
  sane bigint, but a deep offset still makes PostgreSQL walk every row before it.
- by cursor: `?cursor=<next_cursor>&size=M` continues after the last row of an earlier answer
  (`WHERE (sort key, id) > (...)`, built by sqlakeyset), so a page deep in the list costs what
  the first one does, and rows inserted meanwhile never shift it. It answers no `total`, `page`
  or `pages` (a count would cost what the cursor saves). `next_cursor` is null on the last page.

A cursor is opaque (base64url of a checksum of the list's ORDER BY, then sqlakeyset's bookmark)
and only valid for a list in the order that made it: a malformed or foreign one is a 422, never a
500, even where its values would fit the list (one integer id, say, for users as for tags). Every
list query ends its ORDER BY with a unique column (the id), which keyset paging needs.

The page is built without validating its rows: the route's response model validates them once,
on the way out.
"""

import base64
import binascii
import zlib
from datetime import UTC, datetime
from decimal import Decimal
from functools import cached_property
from math import ceil
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlakeyset import (
    BadBookmark,
    select_page,
    serialize_bookmark,
    unserialize_bookmark,
)
from sqlakeyset.columns import OC, parse_ob_clause
from sqlalchemy import (
    BigInteger,
    DateTime,
    Integer,
    Numeric,
    Select,
    SmallInteger,
    String,
    literal_column,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.ext.asyncio import AsyncSession as SQLAlchemyAsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeDecorator, TypeEngine
from sqlmodel import func, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from api.core.errors import FieldError, InvalidQuery

MAX_PAGE = 1_000_000
COUNT_CAP = 10_000  # rows counted for `total`; a longer list is not counted further
MAX_CURSOR = 512
SCOPE = 8  # hex digits of the ORDER BY's checksum that open a cursor
T = TypeVar("T")


class PageParams(BaseModel):
    page: int = Field(1, ge=1, le=MAX_PAGE, description="Page number, from 1.")
    size: int = Field(20, ge=1, le=100, description="Items per page, 1 to 100.")
    cursor: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_CURSOR,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="A `next_cursor` from an earlier answer: the page after it (replaces `page`).",
    )

    @cached_property
    def marker(self) -> tuple[str, str] | None:
        """The cursor's order checksum and sqlakeyset bookmark, decoded and checked once per
        request."""
        return None if self.cursor is None else _decode(self.cursor)


class Page(BaseModel, Generic[T]):
    # from_attributes: the rows are ORM objects until the response model validates them. Every
    # field is in every answer, so the document marks them all required.
    model_config = ConfigDict(
        from_attributes=True, json_schema_serialization_defaults_required=True
    )

    items: list[T]
    total: int | None = Field(
        description=(
            f"Rows in the whole list, counted exactly up to {COUNT_CAP:,}; null when there are "
            "more (total_capped) or when paging by cursor."
        ),
    )
    total_capped: bool = Field(
        default=False,
        description=f"True when the list holds more than {COUNT_CAP:,} rows, which go uncounted.",
    )
    page: int | None = Field(description="This page's number; null when paging by cursor.")
    size: int
    pages: int | None = Field(
        description="Pages in the whole list; null when paging by cursor or when total is."
    )
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the page after this one; null at the end."
    )


async def page_params(params: Annotated[PageParams, Query()]) -> PageParams:
    """The paging parameters as one query model, validated in one go. As a class dependency
    (`Depends()`) FastAPI would validate each parameter, then the model again, and leave their
    descriptions out of the OpenAPI document."""
    return params


PageParamsDep = Annotated[PageParams, Depends(page_params)]


def _scope(columns: list[OC]) -> str:
    """The checksum of a list's order ("products.price asc, products.id asc") that opens its
    cursors."""
    order = ", ".join(f"{c.full_name} {'asc' if c.is_ascending else 'desc'}" for c in columns)
    return f"{zlib.crc32(order.encode()):0{SCOPE}x}"


def encode_cursor(columns: list[OC], bookmark: str) -> str:
    """The opaque cursor of a sqlakeyset `bookmark` in a list ordered by `columns` (also used
    by bench/bare.py, whose yardstick hands out the same cursors)."""
    cursor = _scope(columns) + bookmark
    return base64.urlsafe_b64encode(cursor.encode()).decode().rstrip("=")


def _decode(cursor: str) -> tuple[str, str]:
    try:
        decoded = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        scope, bookmark = decoded[:SCOPE], decoded[SCOPE:]
        backwards = unserialize_bookmark(bookmark).backwards
    except (binascii.Error, UnicodeDecodeError, BadBookmark, ValueError) as exc:
        raise _bad_cursor() from exc
    if backwards:  # every next_cursor points forwards; a backwards one was made by hand
        raise _bad_cursor()
    return scope, bookmark


def _bad_cursor() -> InvalidQuery:
    return InvalidQuery(
        "cursor is not a next_cursor of this list.",
        errors=[FieldError(field="query.cursor", message="not a cursor of this list")],
    )


def cursor_bookmark(columns: list[OC], cursor: str) -> str:
    """The sqlakeyset bookmark of a `next_cursor` of a list ordered by `columns`, or the 400
    that a cursor of another list, or made by hand, gets (also used by bench/bare.py, whose
    yardstick takes the API's cursors)."""
    scope, bookmark = _decode(cursor)
    _check_cursor_fits(columns, scope, bookmark)
    return bookmark


def _check_cursor_fits(columns: list[OC], scope: str, bookmark: str) -> None:
    """A cursor must come from a list in this order, and its values must match the sort columns
    in number and type, or PostgreSQL would be asked to compare, say, a price with a name."""
    place, _ = unserialize_bookmark(bookmark)
    if scope != _scope(columns) or place is None or len(place) != len(columns):
        raise _bad_cursor()
    for column, value in zip(columns, place, strict=True):
        if not _fits(column.comparable_value.type, value):
            raise _bad_cursor()


def _fits(sql_type: TypeEngine[Any], value: Any) -> bool:
    """Whether PostgreSQL takes `value` as a parameter of the column's type: a value of the
    right Python type can still be refused (a DataError, a 500): an integer past the column's
    range, a number that is not finite or has more digits than the column, a string holding NUL,
    a datetime without a time zone for one with."""
    # SQLModel's AutoString (a TypeDecorator over String) says `object`; strings hold str.
    if isinstance(sql_type, TypeDecorator):
        sql_type = sql_type.impl_instance
    if isinstance(sql_type, String):
        return isinstance(value, str) and "\x00" not in value
    if isinstance(value, bool) or not isinstance(value, sql_type.python_type):
        return False
    if isinstance(sql_type, Integer):
        bits = (
            64
            if isinstance(sql_type, BigInteger)
            else 16
            if isinstance(sql_type, SmallInteger)
            else 32
        )
        return bool(-(2 ** (bits - 1)) <= value < 2 ** (bits - 1))
    if isinstance(sql_type, Numeric) and isinstance(value, Decimal):
        scale = sql_type.scale or 0
        limit = Decimal(10) ** ((sql_type.precision or 1000) - scale)
        if not value.is_finite() or abs(value) >= limit:
            return False
        # PostgreSQL rounds to the scale first: 99999999.995 is 100000000.00, past NUMERIC(10, 2).
        return abs(value.quantize(Decimal(1).scaleb(-scale))) < limit
    if isinstance(sql_type, DateTime) and isinstance(value, datetime):
        if (value.tzinfo is not None) != bool(sql_type.timezone):
            return False
        if value.tzinfo is not None:
            try:  # asyncpg sends it in UTC, which 0001-01-01 00:00+01:00 has no datetime for
                value.astimezone(UTC)
            except OverflowError:
                return False
    return True


def capped_count(query: Select[Any]) -> SelectOfScalar[int]:
    """count(*) of the query's first COUNT_CAP + 1 rows, in whatever order is cheapest. The rows
    are counted without their columns (`SELECT 1`, same FROM and WHERE; loader options go with
    the columns): PostgreSQL otherwise forms every column of the 10,001 rows it counts. A
    DISTINCT or GROUP BY depends on its columns, so such a query keeps them. (bench/bare.py's
    yardstick counts with the same statement.)"""
    rows: Select[Any] = query
    if not (query._distinct or query._group_by_clauses):
        rows = query.with_only_columns(literal_column("1"), maintain_column_froms=True)
    return select(func.count()).select_from(rows.order_by(None).limit(COUNT_CAP + 1).subquery())


def _next_cursor(columns: list[OC], last: Any) -> str:
    """The cursor of the page after `last` (an ORM object of the query's entity, or a Core
    row)."""
    values = tuple(getattr(last, column.comparable_value.key) for column in columns)
    return encode_cursor(columns, serialize_bookmark((values, False)))


async def apaginate(
    db: AsyncSession | AsyncConnection, query: SelectOfScalar[T], params: PageParams
) -> Page[Any]:
    """One page of `query`, a select of one entity, by page or by cursor (see the module's
    docstring). On a session the items are the entity's objects. On a connection (a Core read,
    docs/design.md) a page by number is read as the rows of the entity's columns; a page by
    cursor still loads the entity's objects, on a session bound to that connection, which
    costs less than sqlakeyset's Core path."""
    if params.marker is not None:
        return await _by_cursor(db, query, params.size, *params.marker)
    items, total = await _page_and_total(db, query, params)
    capped = total > COUNT_CAP
    pages = None if capped else ceil(total / params.size)
    # Past the count, a full page is taken to have one after it.
    more = len(items) == params.size if pages is None else params.page < pages
    return Page.model_construct(
        items=items,
        total=None if capped else total,
        total_capped=capped,
        page=params.page,
        size=params.size,
        pages=pages,
        next_cursor=_next_cursor(parse_ob_clause(query), items[-1]) if more and items else None,
    )


async def _page_and_total(
    db: AsyncSession | AsyncConnection, query: SelectOfScalar[T], params: PageParams
) -> tuple[list[Any], int]:
    """The page's rows and the list's capped count, in one statement: the count rides on every
    row as an uncorrelated subquery, which PostgreSQL runs once. One statement instead of two
    (two fewer round trips through PgBouncer), and the count and the rows share one snapshot.
    Only a page with no rows (past the end, or an empty list) counts on its own. A Core row
    keeps the count as its last column, which the response model, reading fields by name,
    leaves out."""
    count = capped_count(query)
    if isinstance(db, AsyncConnection):
        (entity,) = query.column_descriptions
        columns = query.with_only_columns(*sa_inspect(entity["entity"]).local_table.c)
        rows = (await db.execute(_page(columns, count, params))).all()
        if rows:
            return list(rows), rows[0][-1]
        return [], (await db.execute(count)).scalar_one()
    # SQLAlchemy's execute, not sqlmodel's exec: exec would answer a select whose first column
    # is an entity with that column alone, dropping the count.
    entities = (await SQLAlchemyAsyncSession.execute(db, _page(query, count, params))).unique()
    pairs = entities.all()
    if pairs:
        return [item for item, _ in pairs], pairs[0][1]
    return [], (await db.exec(count)).one()


def _page(query: Select[Any], count: Select[Any], params: PageParams) -> Select[Any]:
    return (
        query.add_columns(count.scalar_subquery())
        .limit(params.size)
        .offset(params.size * (params.page - 1))
    )


async def _by_cursor(
    db: AsyncSession | AsyncConnection,
    query: SelectOfScalar[T],
    size: int,
    scope: str,
    bookmark: str,
) -> Page[Any]:
    columns = parse_ob_clause(query)
    _check_cursor_fits(columns, scope, bookmark)  # sqlakeyset would raise InvalidPage, or worse
    selectable: Any = query  # sqlakeyset types it as a Select of tuples; ours is of entities

    def keyset_page(session: Session) -> tuple[list[T], str | None]:
        # unique: an entity's query may join rows that repeat it.
        rows = select_page(session, selectable, per_page=size, page=bookmark, unique=True)
        after = rows.paging.bookmark_next if rows.paging.has_next else None
        return [row[0] for row in rows], after

    def on_connection(connection: Connection) -> tuple[list[T], str | None]:
        # A session that joins the connection's transaction as it is (no SAVEPOINT in a test's
        # transaction) and leaves it to the connection's owner.
        with Session(bind=connection, join_transaction_mode="rollback_only") as session:
            return keyset_page(session)

    if isinstance(db, AsyncConnection):
        items, after = await db.run_sync(on_connection)
    else:
        items, after = await db.run_sync(keyset_page)
    return Page.model_construct(
        items=items,
        total=None,
        page=None,
        size=size,
        pages=None,
        next_cursor=encode_cursor(columns, after) if after else None,
    )


__all__ = ["COUNT_CAP", "Page", "PageParams", "PageParamsDep", "apaginate"]
