"""Idempotency-Key (IETF HTTPAPI draft; Stripe's behaviour where it is silent): a retry of a
keyed POST answers what the first request answered and does no work twice.

A route is keyed when it depends on a key taker (`anonymous_key` here, `caller_key` in
api/auth/dependencies.py for the routes that know their caller) and its router's routes are
`IdempotentRoute`s. Without the header nothing changes: no statement, no savepoint.

With it, in the request's one transaction (SessionDep's):

1. `pg_try_advisory_xact_lock` on the key (owner, route, key): taken at once or refused at once
   with a 409 `idempotency_key_in_flight`; no wait holds a PgBouncer connection, and the lock
   goes with the transaction (commit or rollback), so it is safe in transaction pooling.
2. Under the lock, the stored answer is looked up (a new snapshot: an earlier holder has
   committed by the time its lock is free): the same request (method, path with query, an
   HMAC-SHA256 keyed with SECRET_KEY of the canonical JSON body) replays it, with
   `Idempotent-Replayed: true`, without running the route (a stored problem's `request_id`
   becomes the retry's); another request is a 422
   `idempotency_key_reused`. An expired answer counts as none.
3. Otherwise a SAVEPOINT, the route's work, and the answer (status, headers, body bytes) written
   in the same transaction, before SessionDep's COMMIT: a crash after the commit leaves a retry
   that replays. A 4xx the work raises (a 409 `insufficient_stock`, a 404, a 422
   `invalid_reference`) rolls back to the savepoint and is stored as well. A validation 422
   (before the work), a 5xx, or a transaction PostgreSQL undid stores nothing: the whole
   transaction rolls back, and a retry runs again.

Statements a keyed request adds: the lock and the look-up (a replay sends only these, after the
caller's), then SAVEPOINT, RELEASE and the answer's INSERT, which also deletes up to
SWEEP_BATCH expired answers (ON CONFLICT updates an expired answer of the same key): 5 in all,
and no periodic task or unbounded DELETE.
"""

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from http import HTTPStatus
from typing import Annotated, Any, TypeVar

from fastapi import Header, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy import Column, Index, Interval, LargeBinary, SmallInteger, bindparam, func, select
from sqlalchemy import delete as sql_delete
from sqlalchemy import tuple_ as sql_tuple
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSessionTransaction
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

import api.core.models  # noqa: F401  (the naming convention first)
from api.core.db import SessionDep
from api.core.errors import (
    PROBLEM_MEDIA_TYPE,
    AppError,
    BadRequest,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    Problem,
    app_error_response,
)
from api.core.models import created_at_field
from api.core.request_id import current as current_request_id

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
KEY_PATTERN = r"^[\x20-\x7e]{1,255}$"  # 1-255 printable ASCII characters
# Expired answers deleted by each answer written: more than one, so the sweep outpaces the keys.
SWEEP_BATCH = 20
# What the scope carries: the route's name (set by IdempotentRoute), the key taken (by a taker).
ROUTE_SCOPE = "storefront.idempotent_route"
TICKET_SCOPE = "storefront.idempotency_ticket"


class IdempotencyKey(SQLModel, table=True):
    """A key taken and the answer its first request gave, kept IDEMPOTENCY_KEY_TTL_HOURS."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_created_at", "created_at"),)

    # `user:<id>`, or `anonymous` (sign-up): whose key it is.
    owner: str = Field(primary_key=True, max_length=40)
    # `POST /orders/`: the route's method and path template.
    route: str = Field(primary_key=True, max_length=200)
    key: str = Field(primary_key=True, max_length=255)
    # HMAC-SHA256 (SECRET_KEY) of the method, the path and the canonical body.
    fingerprint: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    status: int = Field(sa_column=Column(SmallInteger, nullable=False))
    # The answer's headers as [name, value] pairs, Content-Length left out.
    headers: list[list[str]] = Field(sa_column=Column(JSONB, nullable=False))
    body: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = created_at_field()


KeyHeader = Annotated[
    str | None,
    Header(
        alias=HEADER,
        description=(
            "Makes the request safe to retry: 1-255 printable ASCII characters, unique per"
            " request (a UUID). A retry with the same key and body answers the first answer"
            f" again, with `{REPLAYED}: true`, and does nothing twice; the same key with"
            " another body is a 422 `idempotency_key_reused`, and while the first request"
            " still runs a 409 `idempotency_key_in_flight` (Retry-After). Kept for"
            " IDEMPOTENCY_KEY_TTL_HOURS (24 by default), per caller and route."
        ),
        json_schema_extra={"minLength": 1, "maxLength": 255, "pattern": KEY_PATTERN},
    ),
]

KEY_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "Bad Request: a malformed body or Idempotency-Key"},
    409: {
        "model": Problem,
        "description": "Conflict; or `idempotency_key_in_flight`: the key's first request is"
        " still running (Retry-After)",
    },
    422: {
        "model": Problem,
        "description": "Validation Error; or `idempotency_key_reused`: the key was first sent"
        " with another request",
    },
}

REPLAYED_HEADER = {
    "description": "`true` on an answer replayed for a retry with the same Idempotency-Key.",
    "schema": {"type": "string", "enum": ["true"]},
}

_KEY = re.compile(KEY_PATTERN)


class Ticket:
    """A key this request holds (its lock taken, no answer stored yet) and the savepoint its
    work runs in."""

    def __init__(
        self,
        *,
        session: AsyncSession,
        ids: dict[str, str],
        fingerprint: bytes,
        ttl: timedelta,
        savepoint: AsyncSessionTransaction,
    ) -> None:
        self.session = session
        self.ids = ids
        self.fingerprint = fingerprint
        self.ttl = ttl
        self.savepoint = savepoint

    async def store(self, response: Response) -> None:
        """Write the answer, in the request's transaction, sweeping some expired ones."""
        headers = [[k, v] for k, v in response.headers.items() if k != "content-length"]
        await self.session.exec(
            _STORE,
            params={
                **self.ids,
                "fingerprint": self.fingerprint,
                "status": response.status_code,
                "headers": headers,
                "body": bytes(response.body),
                "ttl": self.ttl,
            },
        )


class Replay(Exception):
    """The stored answer, raised past the route (not an error): the route does not run."""

    def __init__(self, response: Response) -> None:
        self.response = response


def _statements() -> tuple[Any, Any, Any]:
    table = IdempotencyKey.__table__  # type: ignore[attr-defined]
    c = table.c
    same_key = (c.owner == bindparam("owner")) & (c.route == bindparam("route"))
    same_key &= c.key == bindparam("key")
    cutoff = func.now() - bindparam("ttl", type_=Interval)
    lock = select(func.pg_try_advisory_xact_lock(bindparam("lock")))
    lookup = select(c.fingerprint, c.status, c.headers, c.body).where(
        same_key, c.created_at > cutoff
    )
    expired = (
        select(c.owner, c.route, c.key)
        .where(c.created_at < cutoff, ~same_key)
        .order_by(c.created_at)
        .limit(SWEEP_BATCH)
        .with_for_update(skip_locked=True)
    )
    sweep = (
        sql_delete(table)
        .where(sql_tuple(c.owner, c.route, c.key).in_(expired.scalar_subquery()))
        .cte("swept")
    )
    upsert = insert(table).values(
        owner=bindparam("owner"),
        route=bindparam("route"),
        key=bindparam("key"),
        fingerprint=bindparam("fingerprint"),
        status=bindparam("status"),
        headers=bindparam("headers", type_=JSONB),
        body=bindparam("body"),
    )
    store = upsert.on_conflict_do_update(
        index_elements=[c.owner, c.route, c.key],
        set_={
            "fingerprint": upsert.excluded.fingerprint,
            "status": upsert.excluded.status,
            "headers": upsert.excluded.headers,
            "body": upsert.excluded.body,
            "created_at": func.now(),
        },
    ).add_cte(sweep)
    return lock, lookup, store


_LOCK, _LOOKUP, _STORE = _statements()


def request_key(request: Request, key: str | None) -> str | None:
    """The request's key, or None; a malformed or repeated header is a 400."""
    if key is None:
        return None
    if len(request.headers.getlist(HEADER)) > 1:
        raise BadRequest(f"Send one {HEADER} header, not several.")
    if not _KEY.match(key):
        raise BadRequest(f"{HEADER} must be 1-255 printable ASCII characters.")
    return key


def fingerprint(secret: bytes, method: str, target: str, body: bytes) -> bytes:
    """An HMAC of the request, not a plain hash: a sign-up body holds a password, and a fast
    hash of it stored in a table would be one brute force away from it."""
    try:
        canonical = json.dumps(
            json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    except (ValueError, RecursionError):
        canonical = body
    message = b"\n".join([method.encode(), target.encode(), canonical])
    return hmac.new(secret, message, hashlib.sha256).digest()


def lock_id(owner: str, route: str, key: str) -> int:
    """A bigint for the key's advisory lock (a collision only makes two keys wait on one
    another: a 409, never a wrong answer)."""
    digest = hashlib.blake2b(f"{owner}\0{route}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def take_key(*, request: Request, session: AsyncSession, owner: str, key: str | None) -> None:
    """What a key taker does: nothing without a key; otherwise lock it (409 while its first
    request runs), replay its answer (422 when the key was another request's), or open the
    savepoint the work runs in and leave the ticket for IdempotentRoute to store the answer."""
    route = request.scope.get(ROUTE_SCOPE)
    if route is None:
        raise RuntimeError("a keyed route must be an IdempotentRoute (its router's route_class)")
    key = request_key(request, key)
    if key is None:
        return
    settings = request.app.state.settings
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    secret = settings.secret_key.get_secret_value().encode()
    request_print = fingerprint(secret, request.method, target, await request.body())
    ids = {"owner": owner, "route": route, "key": key}
    ttl = timedelta(hours=settings.idempotency_key_ttl_hours)
    if not (await session.exec(_LOCK, params={"lock": lock_id(owner, route, key)})).one()[0]:
        raise IdempotencyKeyInFlight()
    stored = (await session.exec(_LOOKUP, params={**ids, "ttl": ttl})).first()
    if stored is not None:
        if not hmac.compare_digest(stored.fingerprint, request_print):
            raise IdempotencyKeyReused()
        headers = dict(stored.headers)
        headers[REPLAYED] = "true"
        body = stored.body
        if headers.get("content-type") == PROBLEM_MEDIA_TYPE:
            body = naming_this_request(body)
        raise Replay(Response(content=body, status_code=stored.status, headers=headers))
    savepoint = await session.begin_nested()
    request.scope[TICKET_SCOPE] = Ticket(
        session=session, ids=ids, fingerprint=request_print, ttl=ttl, savepoint=savepoint
    )


def naming_this_request(problem: bytes) -> bytes:
    """A stored problem names the request that was answered first; its replay names the retry
    (its `X-Request-ID`, and its own log lines). The rest stays byte for byte: the members keep
    their order, and the JSON its spelling (rendered again as problem_response renders it, by
    JSONResponse)."""
    body = json.loads(problem)
    if (request_id := current_request_id()) is not None:
        body["request_id"] = request_id
    else:
        body.pop("request_id", None)
    return bytes(JSONResponse(body).body)


F = TypeVar("F", bound=Callable[..., Any])


def key_taker(taker: F) -> F:
    """Mark a dependency as a key taker: the routes that depend on it are keyed."""
    taker.takes_idempotency_key = True  # type: ignore[attr-defined]
    return taker


@key_taker
async def anonymous_key(request: Request, session: SessionDep, key: KeyHeader = None) -> None:
    """The key of a route anyone may call (sign-up): every anonymous caller shares one scope,
    told apart by the key alone (a UUID)."""
    await take_key(request=request, session=session, owner="anonymous", key=key)


class IdempotentRoute(APIRoute):
    """A route whose requests may carry an Idempotency-Key, when it depends on a key taker:
    the stored answer is replayed instead of running it, and its own answer (or a 4xx its
    work raised) is stored before the session's COMMIT. Other routes are served as APIRoute's."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if not _depends_on_a_taker(self.dependant):
            return handler
        success = self.status_code or 200
        # Beside the success's own headers (a conditional route's ETag).
        documented = self.responses.get(success, {})
        replayed = {
            **documented,
            "headers": {**documented.get("headers", {}), REPLAYED: REPLAYED_HEADER},
        }
        self.responses = {**_joined(self.responses, KEY_RESPONSES), success: replayed}
        route = f"{','.join(sorted(self.methods or ()))} {self.path}"

        async def keyed(request: Request) -> Response:
            request.scope[ROUTE_SCOPE] = route
            try:
                response = await handler(request)
            except Replay as replay:
                return replay.response
            except AppError as exc:
                ticket = request.scope.get(TICKET_SCOPE)
                if ticket is None or not 400 <= exc.status_code < 500:
                    raise
                await ticket.savepoint.rollback()
                response = app_error_response(request, exc)
                await ticket.store(response)
                return response
            ticket = request.scope.get(TICKET_SCOPE)
            if ticket is not None:
                await ticket.savepoint.commit()
                await ticket.store(response)
            return response

        return keyed


def _joined(
    responses: dict[int | str, dict[str, Any]], added: dict[int | str, dict[str, Any]]
) -> dict[int | str, dict[str, Any]]:
    """The route's answers with the key's: where the route already says why it answers a
    status (a malformed If-Match's 400), both reasons are kept."""
    joined = dict(responses)
    for status, answer in added.items():
        own = responses.get(status, {}).get("description", "")
        reason = answer["description"]
        if own and own != HTTPStatus(int(status)).phrase:
            added_reason = reason.split(": ", 1)[-1]
            reason = own if added_reason in own else f"{own}; {added_reason}"
        joined[status] = {**answer, "description": reason}
    return joined


def _depends_on_a_taker(dependant: Any) -> bool:
    return any(
        getattr(d.call, "takes_idempotency_key", False) or _depends_on_a_taker(d)
        for d in dependant.dependencies
    )
