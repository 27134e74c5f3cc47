"""Conditional requests (RFC 9110 section 13): `ETag`, `If-None-Match` and `If-Match` on the
single-resource routes.

The version is the representation itself: a resource's tag is a hash of the exact JSON body its
GET answers (`_rendered`), so it changes whenever anything that GET shows changes, whichever route
(or another resource's route) changed it, and nothing else needs to remember to bump a version.
The GET answers the bytes `_rendered` made, so the tag it sends is the tag of its body.

- A GET (`answer`) sends the tag; with an `If-None-Match` that matches it (weak comparison,
  or `*`) the answer is a 304 with the tag and no body. No statement is added.
- A write with `If-Match` (`check`) locks the row (`SELECT ... FOR NO KEY UPDATE`, loading
  what the GET shows), renders it as the GET would, and compares (strong comparison: a weak
  tag never matches): a stale tag is a 412 `precondition_failed` and nothing is written. The
  write then runs in the same transaction, under the lock: a second request with the same tag
  waits for the lock, then reads the winner's row (at READ COMMITTED a locking read sees the
  latest committed version) and gets its 412. One statement added, the locking read (and the
  statements that load what the GET embeds); none without the header, nor with `If-Match: *`
  (today's behaviour: a missing row is the route's 404).
- A successful write answers its row's new tag (`answer`).

Malformed headers are a 400 `bad_request`, never read as "no condition": a write the client
meant to be conditional is not made unconditionally.
"""

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Header, Request, Response
from sqlalchemy import ColumnElement
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm.interfaces import ORMOption
from sqlmodel import SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.core.errors import BadRequest, NotFound, PreconditionFailed, Problem, responses

JSON_MEDIA_TYPE = "application/json"
# entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE; etagc = %x21 / %x23-7E / obs-text (RFC 9110 8.8.3)
_TAG = re.compile(r'[ \t]*(W/)?"([\x21\x23-\x7e\x80-\xff]*)"[ \t]*')


@dataclass(frozen=True)
class Condition:
    """A parsed If-Match or If-None-Match: `*`, or a list of entity tags."""

    any: bool
    # (weak, opaque tag with its quotes)
    tags: tuple[tuple[bool, str], ...] = ()

    def matches_strongly(self, etag: str) -> bool:
        """If-Match's comparison: both tags strong and equal."""
        return self.any or (False, etag) in self.tags

    def matches_weakly(self, etag: str) -> bool:
        """If-None-Match's comparison: the opaque tags equal, weak or not."""
        opaque = etag.removeprefix("W/")
        return self.any or any(tag == opaque for _, tag in self.tags)


def parse(name: str, values: Sequence[str]) -> Condition | None:
    """The condition of a header's values (several lines make one list), or None without one;
    anything but `*` or a comma-separated list of entity tags is a 400."""
    if not values:
        return None
    value = ",".join(values)
    if value.strip() == "*":
        return Condition(any=True)
    tags = []
    for item in value.split(","):
        if not item.strip():  # empty list elements are allowed (RFC 9110 5.6.1)
            continue
        match = _TAG.fullmatch(item)
        if match is None:
            raise BadRequest(f'{name} must be "*" or a list of entity tags ("..." or W/"...").')
        tags.append((match[1] is not None, f'"{match[2]}"'))
    if not tags:
        raise BadRequest(f'{name} must be "*" or a list of entity tags ("..." or W/"...").')
    return Condition(any=False, tags=tuple(tags))


# Coroutines that await nothing: FastAPI runs a plain function dependency on a worker thread,
# a hop there and back on every request.
async def _if_none_match(
    request: Request,
    header: Annotated[
        str | None,
        Header(
            alias="If-None-Match",
            description=(
                "The `ETag` of a copy the client holds (or several, comma-separated, or `*`):"
                " when the resource still has one of them the answer is a 304 with no body."
            ),
        ),
    ] = None,
) -> Condition | None:
    return parse("If-None-Match", request.headers.getlist("if-none-match"))


async def _if_match(
    request: Request,
    header: Annotated[
        str | None,
        Header(
            alias="If-Match",
            description=(
                "The `ETag` the client read (or several, comma-separated): the change is made"
                " only if the resource still has one of them, otherwise a 412"
                " `precondition_failed` and nothing changes. Compared strongly: a weak tag"
                " (`W/...`) never matches, but on a resource whose only tag is weak (a post's,"
                " which leaves out its view count). `*` (or no header): no condition."
            ),
        ),
    ] = None,
) -> Condition | None:
    return parse("If-Match", request.headers.getlist("if-match"))


IfNoneMatch = Annotated[Condition | None, Depends(_if_none_match)]
IfMatch = Annotated[Condition | None, Depends(_if_match)]


def etag(body: bytes) -> str:
    """A strong entity tag of a body: 128 bits of BLAKE2b, quoted."""
    return f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"'


def _rendered(read_model: type[SQLModel], row: Any, counters: frozenset[str]) -> tuple[bytes, str]:
    """The JSON body of `row` in the shape of `read_model` (what the GET answers) and its
    ETag: strong, the tag of that body; with `counters` (fields that reads change, a post's
    view_count), weak, the tag of the body without them (RFC 9110's own example of a weak
    validator is a hit counter). The row is validated once for both."""
    shown = read_model.model_validate(row)
    body = shown.model_dump_json().encode()
    if not counters:
        return body, etag(body)
    return body, f"W/{etag(shown.model_dump_json(exclude=set(counters)).encode())}"


def tag_of(read_model: type[SQLModel], row: Any, counters: frozenset[str] = frozenset()) -> str:
    """The ETag of `row` as `read_model` shows it."""
    return _rendered(read_model, row, counters)[1]


def answer(
    read_model: type[SQLModel],
    row: Any,
    if_none_match: Condition | None = None,
    *,
    status_code: int = 200,
    counters: frozenset[str] = frozenset(),
) -> Response:
    """The answer for `row` with its `ETag`; a 304 with the tag and no body when the client's
    If-None-Match names it."""
    body, tag = _rendered(read_model, row, counters)
    if if_none_match is not None and if_none_match.matches_weakly(tag):
        return Response(status_code=304, headers={"ETag": tag})
    return Response(
        body, status_code=status_code, media_type=JSON_MEDIA_TYPE, headers={"ETag": tag}
    )


M = TypeVar("M", bound=SQLModel)


async def check(
    session: AsyncSession,
    if_match: Condition | None,
    model: type[M],
    key: int,
    read_model: type[SQLModel],
    *,
    options: Sequence[ORMOption] = (),
    where: ColumnElement[bool] | None = None,
    counters: frozenset[str] = frozenset(),
) -> M | None:
    """If-Match on a write to the row of `model` with primary key `key`, before the write and
    in its transaction: the row locked FOR NO KEY UPDATE (with `options` loading what
    `read_model` shows), rendered, and its tag compared strongly. A stale tag is a 412, a
    missing row a 404 (and so is one `where` excludes: another author's post); the locked row
    is answered, and stays locked until the request's COMMIT. Without a condition, or with
    `*`: nothing, no statement (None). `counters`: see `require`."""
    if if_match is None or if_match.any:
        return None
    (primary_key,) = sa_inspect(model).primary_key
    statement = (
        select(model)
        .where(primary_key == key, *([] if where is None else [where]))
        .options(*options)
        # FOR NO KEY UPDATE: what an UPDATE of the row takes, so two checks (and a check and
        # any write) wait for each other, while rows that refer to it (FOR KEY SHARE) are not
        # held up.
        .with_for_update(of=model, key_share=True)
        # A row the session already holds (the current user) takes the locked row's values.
        .execution_options(populate_existing=True)
    )
    row = (await session.exec(statement)).one_or_none()
    if row is None:
        raise NotFound(model.__name__, key)
    require(if_match, read_model, row, resource=model.__name__, key=key, counters=counters)
    return row


def require(
    if_match: Condition | None,
    read_model: type[SQLModel],
    row: Any,
    *,
    resource: str,
    key: int,
    counters: frozenset[str] = frozenset(),
) -> None:
    """If-Match against a row its caller has locked and loaded as the GET shows it (a status
    change that locks its order anyway): a 412 when its tag is not named. No statement.

    Compared strongly, as RFC 9110 requires, except for a resource with `counters` (a post):
    its only tag is weak, and strong comparison would refuse it always, leaving the resource
    no conditional write at all. Its weak tag covers every field a write changes (the
    counters are changed by reads only), so comparing it weakly still refuses the second of
    two writers that read the same version: a documented deviation (docs/design.md)."""
    if if_match is None or if_match.any:
        return
    tag = tag_of(read_model, row, counters)
    matches = if_match.matches_weakly if counters else if_match.matches_strongly
    if not matches(tag):
        raise PreconditionFailed(
            f"{resource} {key} has changed since the If-Match tag was read: read it again, and"
            " send its new ETag."
        )


ETAG_HEADER = {
    "description": "The representation's entity tag, for If-None-Match and If-Match.",
    "schema": {"type": "string"},
}


def read_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` of a conditional GET: the tag, the 304, a malformed header's 400."""
    return {
        200: {"headers": {"ETag": ETAG_HEADER}},
        304: {
            "description": "Not Modified: If-None-Match names the current ETag; no body.",
            "headers": {"ETag": ETAG_HEADER},
        },
        400: {"model": Problem, "description": "Bad Request: a malformed If-None-Match"},
        **responses(*statuses),
    }


def write_responses(*statuses: int, success: int | None = 200) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` of a write that takes If-Match: the new tag on `success` (None: no
    body, no tag), the 412, a malformed header's 400."""
    answers: dict[int | str, dict[str, Any]] = {
        400: {"model": Problem, "description": "Bad Request: a malformed body or If-Match"},
        412: {
            "model": Problem,
            "description": "Precondition Failed (`precondition_failed`): If-Match does not name"
            " the current ETag; nothing was changed.",
        },
        **responses(*statuses),
    }
    if success is not None:
        answers[success] = {"headers": {"ETag": ETAG_HEADER}}
    return answers
