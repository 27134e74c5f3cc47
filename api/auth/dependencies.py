"""Who is calling: `CurrentUser` (any active user with a valid bearer token) and `AdminUser`
(a superuser). Missing or bad tokens are a 401 with `WWW-Authenticate: Bearer`."""

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from api.auth import service
from api.core.db import SessionDep
from api.core.errors import Forbidden, Unauthorized
from api.core.idempotency import KeyHeader, anonymous_key, key_taker, take_key
from api.core.observability import record_user
from api.users.models import User

bearer = OAuth2PasswordBearer(tokenUrl="/auth/token", auto_error=False)


async def get_current_user(
    request: Request, session: SessionDep, token: Annotated[str | None, Depends(bearer)]
) -> User:
    if not token:
        raise Unauthorized("Not authenticated: send a bearer token.")
    settings = request.app.state.settings
    claims = service.claims_of(token=token, settings=settings)
    user = await service.get_active_user(session=session, claims=claims, settings=settings)
    record_user(request, claims.user_id)
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_optional_user(
    request: Request, session: SessionDep, token: Annotated[str | None, Depends(bearer)]
) -> User | None:
    """The caller on public routes: anonymous without a token; a bad token is still a 401."""
    if not token:
        return None
    return await get_current_user(request, session, token)


OptionalUser = Annotated[User | None, Depends(get_optional_user)]

# For the routes that take OptionalUser: the document offers no token as the alternative to the
# bearer scheme (FastAPI lists the scheme alone), so a generated client may call them anonymously.
ANONYMOUS_ALLOWED: dict[str, Any] = {"security": [{}]}


async def get_current_superuser(user: CurrentUser) -> User:
    if not user.is_superuser:
        raise Forbidden("This needs a superuser.")
    return user


AdminUser = Annotated[User, Depends(get_current_superuser)]

# For `dependencies=` on routes that only a superuser may call.
admin_only = [Depends(get_current_superuser)]


@key_taker
async def caller_key(
    request: Request, session: SessionDep, caller: CurrentUser, key: KeyHeader = None
) -> None:
    """The Idempotency-Key of a route for signed-in callers: keys are the caller's own."""
    await take_key(request=request, session=session, owner=f"user:{caller.id}", key=key)


# For `dependencies=` on the POSTs that create or change a count: a retry with the same
# Idempotency-Key replays the first answer (api/core/idempotency.py). The router's route_class
# must be IdempotentRoute. Listed last, after the gates, so that a 401 or 403 is never stored.
KEYED = Depends(caller_key)
KEYED_ANONYMOUS = Depends(anonymous_key)
