"""One error shape for every non-2xx answer: RFC 9457 problem details.

Services raise the `AppError` subclasses below (never `HTTPException`); the handlers registered
by `install_error_handlers` render them, FastAPI's validation errors, Starlette's HTTP errors,
database outages and unexpected exceptions as `application/problem+json`.
"""

import errno
import logging
import socket
import traceback
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from types import MappingProxyType
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from api.core.request_id import HEADER as REQUEST_ID_HEADER
from api.core.request_id import current as current_request_id

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
MAX_ERRORS = 20
MAX_MESSAGE = 200


# Every code an answer of the API carries, and when (docs/api.md lists them too).
PROBLEM_CODES = {
    "bad_request": "400, a malformed request (bad JSON, a bad header)",
    "unauthorized": "401, no valid bearer token, or a wrong password at login",
    "forbidden": "403, authenticated but not allowed",
    "not_found": "404, no such row, or one the caller may not see",
    "method_not_allowed": "405",
    "already_exists": "409, a unique value (username, email, sku, slug, name) is taken",
    "in_use": "409, the row is still referenced and cannot be deleted",
    "insufficient_stock": "409, an order or stock change takes more than is in stock",
    "not_for_sale": "409, an order names a product that is not active",
    "stock_limit": "409, a stock change would pass the most a product may hold",
    "invalid_status_transition": "409, an order or post cannot move to that status",
    "own_account": "409, a superuser deletes or deactivates their own account",
    "last_superuser": "409, the change would leave no active superuser",
    "conflict": "409, another request changed the data first (try again)",
    "idempotency_key_in_flight": "409, the Idempotency-Key's first request is still running"
    " (Retry-After)",
    "precondition_failed": "412, If-Match does not name the resource's current ETag (nothing"
    " changed: read it again)",
    "request_entity_too_large": "413, a body over MAX_BODY_BYTES",
    "validation_error": "422, a field, parameter or cursor is invalid (see `errors`)",
    "invalid_reference": "422, a field names a row that does not exist",
    "idempotency_key_reused": "422, the Idempotency-Key was sent with another request",
    "too_many_requests": "429, login throttled (see Retry-After)",
    "internal_error": "500, a bug: the log line has the details",
    "database_unavailable": "503, the database cannot be reached in time (Retry-After)",
    "transaction_conflict": "503, the database undid the transaction; send it again",
    "outcome_unknown": "503, the database stopped answering during the commit of a change,"
    " which may or may not stand: send it again with the same Idempotency-Key",
}


class FieldError(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details, with a stable machine-readable `code`."""

    type: str
    title: str
    status: int
    detail: str
    code: str = Field(
        description=(
            "What went wrong, stable for clients to branch on (the HTTP status says how bad): "
            + "; ".join(f"`{code}`: {meaning}" for code, meaning in PROBLEM_CODES.items())
            + "."
        ),
        examples=["already_exists", "insufficient_stock"],
    )
    instance: str | None = None
    errors: list[FieldError] | None = None
    request_id: str | None = Field(
        default=None,
        description=(
            "The request's id, as in its `X-Request-ID` header: the server's log lines for the "
            "request carry it, so quote it when reporting a problem."
        ),
    )


class AppError(Exception):
    status_code = 500
    code = "internal_error"
    headers: Mapping[str, str] | None = None

    def __init__(self, detail: str, *, errors: Sequence[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = list(errors) if errors is not None else None


class BadRequest(AppError):
    status_code = 400
    code = "bad_request"


class Unauthorized(AppError):
    status_code = 401
    code = "unauthorized"
    headers = MappingProxyType({"WWW-Authenticate": "Bearer"})


class Forbidden(AppError):
    status_code = 403
    code = "forbidden"


class NotFound(AppError):
    status_code = 404
    code = "not_found"

    def __init__(self, resource: str, key: object, *, by: str = "id") -> None:
        super().__init__(f"{resource} with {by} {key} not found")


class Conflict(AppError):
    """The request clashes with the state of the data; each kind below has its own code."""

    status_code = 409
    code = "conflict"


class AlreadyExists(Conflict):
    """A value that must be unique (a username, an email, a sku, a slug, a name) is taken."""

    code = "already_exists"


class InUse(Conflict):
    """The row is still referenced (a product ordered, a user with orders) and stays."""

    code = "in_use"


class InsufficientStock(Conflict):
    """An order or a stock change takes more than is in stock."""

    code = "insufficient_stock"


class OwnAccount(Conflict):
    """A superuser deletes or deactivates their own account: another superuser may."""

    code = "own_account"


class LastSuperuser(Conflict):
    """Deleting or deactivating the user would leave no active superuser."""

    code = "last_superuser"


class StockLimit(Conflict):
    """A stock change would put more in stock than a product may hold (MAX_STOCK)."""

    code = "stock_limit"


class NotForSale(Conflict):
    """An order names a product that is not active."""

    code = "not_for_sale"


class InvalidStatusTransition(Conflict):
    """An order or a post cannot move from its status to the one asked for."""

    code = "invalid_status_transition"


class IdempotencyKeyInFlight(Conflict):
    """The Idempotency-Key's first request is still running: retry once it has answered."""

    code = "idempotency_key_in_flight"
    headers = MappingProxyType({"Retry-After": "1"})

    def __init__(self) -> None:
        super().__init__(
            "A request with this Idempotency-Key is still being processed; retry shortly."
        )


class IdempotencyKeyReused(AppError):
    """The Idempotency-Key was first sent with another request (method, path or body)."""

    status_code = 422
    code = "idempotency_key_reused"

    def __init__(self) -> None:
        super().__init__(
            "This Idempotency-Key was used for a different request; use a new key for a new"
            " request."
        )


class PreconditionFailed(AppError):
    """If-Match names a tag the resource no longer has: another write came first."""

    status_code = 412
    code = "precondition_failed"


class InvalidReference(AppError):
    status_code = 422
    code = "invalid_reference"


class InvalidQuery(AppError):
    """Parameters that are each valid but do not go together."""

    status_code = 422
    code = "validation_error"


class TooManyRequests(AppError):
    status_code = 429
    code = "too_many_requests"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(retry_after)}


class DatabaseUnavailable(AppError):
    status_code = 503
    code = "database_unavailable"
    headers = MappingProxyType({"Retry-After": "1"})

    def __init__(self) -> None:
        super().__init__("The database is unavailable; retry shortly.")


class OutcomeUnknown(AppError):
    """The connection was lost, or the command timed out, while a change was being committed:
    PostgreSQL may have made it or not, and the API cannot tell. Unlike `database_unavailable`,
    sending the request again may do the change twice."""

    status_code = 503
    code = "outcome_unknown"
    headers = MappingProxyType({"Retry-After": "1"})

    def __init__(self) -> None:
        super().__init__(
            "The database stopped answering while the change was being committed: it may or"
            " may not have been made. Send the request again with the same Idempotency-Key"
            " (it answers what was done, and does it at most once); without one, look the"
            " resource up before sending it again."
        )


class TransactionConflict(AppError):
    """The request's transaction, rolled back by PostgreSQL to break a deadlock or to keep
    serializability: none of its writes stand, and the same request sent again may succeed."""

    status_code = 503
    code = "transaction_conflict"
    headers = MappingProxyType({"Retry-After": "1"})

    def __init__(self) -> None:
        super().__init__("The request collided with a concurrent one and was undone; retry it.")


def _status(status: int) -> HTTPStatus:
    try:
        return HTTPStatus(status)
    except ValueError:
        return HTTPStatus.INTERNAL_SERVER_ERROR


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    instance: str | None = None,
    errors: Sequence[FieldError] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    phrase = _status(status).phrase
    body = Problem(
        type=f"urn:storefront:problem:{code}",
        title=phrase,
        status=status,
        detail=detail,
        code=code,
        instance=instance,
        errors=list(errors) if errors is not None else None,
        request_id=current_request_id(),
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=dict(headers) if headers else None,
    )


def _field_name(loc: Sequence[int | str]) -> str:
    return ".".join(str(part) for part in loc) or "body"


def validation_errors(raw: Sequence[Any]) -> list[FieldError]:
    """Field and message only: never the submitted input (it may be a password or megabytes)."""
    return [
        FieldError(field=_field_name(err.get("loc", ())), message=str(err.get("msg"))[:MAX_MESSAGE])
        for err in raw[:MAX_ERRORS]
    ]


def database_cause(exc: DBAPIError) -> tuple[BaseException | None, str | None]:
    """The driver's own error behind a DBAPIError (asyncpg's, which names the constraint, table
    and column) and its SQLSTATE: what identifies a database error without PostgreSQL's message."""
    cause = getattr(exc.orig, "__cause__", None) or exc.orig
    return cause, getattr(cause, "sqlstate", None)


UNIQUE_VIOLATION = "23505"
FOREIGN_KEY_VIOLATION = "23503"
RESTRICT_VIOLATION = "23001"  # a delete refused by an ON DELETE RESTRICT foreign key
# Class 40, transaction rollback: the whole transaction was undone, so the request may be retried.
SERIALIZATION_FAILURE = "40001"
DEADLOCK_DETECTED = "40P01"


def violated_constraint(exc: IntegrityError) -> tuple[str | None, str | None]:
    """The SQLSTATE and the constraint name of an IntegrityError (from asyncpg's error)."""
    cause, sqlstate = database_cause(exc)
    return sqlstate, getattr(cause, "constraint_name", None)


# What a database outage can raise: handled by class (never as a bare 500), and what readiness
# turns into a 503.
DATABASE_ERRORS = (DBAPIError, PoolTimeout, OSError, TimeoutError)

NETWORK_ERRNOS = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ETIMEDOUT}


def is_connection_error(exc: BaseException) -> bool:
    """True when the database (or PgBouncer) could not be reached or stopped answering: refused
    or reset connections, unknown or unreachable hosts, connect and command timeouts, an
    exhausted pool, and the server's own connection-class errors."""
    if isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror, PoolTimeout)):
        return True
    if isinstance(exc, OSError):
        return exc.errno in NETWORK_ERRNOS
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        cause, sqlstate = database_cause(exc)
        if cause is not exc and isinstance(cause, (OSError, TimeoutError)):
            return is_connection_error(cause)
        # SQLSTATE classes: 08 connection exception, 53 insufficient resources (too many
        # connections), 57 operator intervention (shutdown, statement cancelled).
        return str(sqlstate or "").startswith(("08", "53", "57"))
    return False


async def _app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return app_error_response(request, exc)


def app_error_response(request: Request, exc: AppError) -> JSONResponse:
    """The problem answer of an AppError, as its handler renders it."""
    return problem_response(
        exc.status_code,
        exc.code,
        exc.detail,
        instance=request.url.path,
        errors=exc.errors,
        headers=exc.headers,
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = validation_errors(exc.errors())
    detail = "The request is invalid: " + "; ".join(f"{e.field}: {e.message}" for e in errors[:3])
    return problem_response(
        422, "validation_error", detail[:500], instance=request.url.path, errors=errors
    )


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (Starlette names only the first route's)."""
    routes = request.app.router.routes
    allowed = [
        method
        for method in ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")
        if any(r.matches({**request.scope, "method": method})[0] is Match.FULL for r in routes)
    ]
    return ", ".join(allowed)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _status(exc.status_code).name.lower()
    detail = exc.detail if isinstance(exc.detail, str) else _status(exc.status_code).phrase
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    return problem_response(
        exc.status_code, code, detail, instance=request.url.path, headers=headers
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    if is_connection_error(exc):
        logger.warning("database unavailable: %s", type(exc).__name__)
        return await _app_error(request, DatabaseUnavailable())
    if isinstance(exc, DBAPIError):
        cause, sqlstate = database_cause(exc)
        if sqlstate in (SERIALIZATION_FAILURE, DEADLOCK_DETECTED):
            logger.warning(
                "transaction undone on %s %s: sqlstate=%s",
                request.method,
                request.url.path,
                sqlstate,
            )
            return await _app_error(request, TransactionConflict())
        # PostgreSQL's message may quote the row ("Failing row contains (..., <hash>, ...)"):
        # log what identifies the error and where it happened, never the message itself.
        logger.error(
            "database error on %s %s: %s sqlstate=%s constraint=%s table=%s\nstatement: %s\n%s",
            request.method,
            request.url.path,
            type(cause).__name__,
            sqlstate,
            getattr(cause, "constraint_name", None),
            getattr(cause, "table_name", None),
            exc.statement,
            "".join(traceback.format_tb(exc.__traceback__)),
        )
    else:
        logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(
        500, "internal_error", "An unexpected error occurred.", instance=request.url.path
    )


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    """An exception no other handler takes. Starlette answers it from its outermost middleware,
    outside the one that adds `X-Request-ID` to answers, so the header is set here."""
    response = await _unexpected_error(request, exc)
    if (request_id := current_request_id()) is not None:
        response.headers[REQUEST_ID_HEADER] = request_id
    return response


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # Database and network errors are handled by class, so that an outage is a 503 answered
    # like any other error; everything else reaches the catch-all (a 500 with no internals).
    for error_class in DATABASE_ERRORS:
        app.add_exception_handler(error_class, _unexpected_error)
    app.add_exception_handler(Exception, _server_error)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for a route: each status documented as a problem body."""
    return {
        status: {"model": Problem, "description": HTTPStatus(status).phrase} for status in statuses
    }


# The routes that touch no database, so never answer 503.
NO_DATABASE = {"/", "/health"}


def problem_openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, with every 4xx/5xx answer described as `application/problem+json`.

    FastAPI documents its own 422 as `HTTPValidationError`; ours is a Problem. Every operation also
    documents what any route can answer: 400 and 413 (when it takes a body), 422 and 503.
    """
    if app.openapi_schema:
        return app.openapi_schema
    schema = FastAPI.openapi(app)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    components["FieldError"] = components["Problem"].pop("$defs")["FieldError"]
    ref = {"$ref": "#/components/schemas/Problem"}
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            answers = operation.setdefault("responses", {})
            if path not in NO_DATABASE:
                answers.setdefault("503", {"description": "Service Unavailable"})
            if "requestBody" in operation:
                answers.setdefault("400", {"description": "Bad Request: the body is not UTF-8"})
                answers.setdefault("413", {"description": "Content Too Large"})
            if operation.get("parameters") or "requestBody" in operation:
                answers.setdefault("422", {"description": "Unprocessable Content"})
            for status, answer in answers.items():
                if status[0] in "45":
                    answer["content"] = {PROBLEM_MEDIA_TYPE: {"schema": ref}}
    app.openapi_schema = schema
    return schema
