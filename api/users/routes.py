"""Users over HTTP: parse, check who is calling, call the service, return."""

from typing import Annotated

from fastapi import Body, Path, Query, Response, status

from api.auth import service as auth_service
from api.auth.dependencies import KEYED, KEYED_ANONYMOUS, AdminUser, CurrentUser, admin_only
from api.auth.models import PasswordChange
from api.core import conditional
from api.core.conditional import IfMatch, IfNoneMatch
from api.core.db import SessionDep
from api.core.errors import responses
from api.core.idempotency import IdempotentRoute
from api.core.pagination import Page, PageParamsDep
from api.core.routing import api_router
from api.users import service
from api.users.dependencies import USER_ID, UserId, get_user_for
from api.users.models import (
    ActiveCount,
    Deactivated,
    User,
    UserCreate,
    UserMeUpdate,
    UserRead,
    UserReplace,
    UserUpdate,
)

router = api_router(prefix="/users", tags=["users"], route_class=IdempotentRoute)


@router.post(
    "/",
    status_code=status.HTTP_201_CREATED,
    response_model=UserRead,
    dependencies=[KEYED_ANONYMOUS],
    responses=responses(409),
)
async def create_user(user_in: UserCreate, session: SessionDep) -> User:
    """Sign up: create a user. A taken username or email is a 409 naming the field."""
    return await service.create_user(session=session, user_in=user_in)


@router.get("/me", response_model=UserRead, responses=conditional.read_responses(401))
async def read_me(me: CurrentUser, if_none_match: IfNoneMatch) -> Response:
    """The caller's own profile (ETag; If-None-Match answers 304 when it is unchanged)."""
    return conditional.answer(UserRead, me, if_none_match)


@router.patch("/me", response_model=UserRead, responses=conditional.write_responses(401, 404, 409))
async def update_me(
    user_in: UserMeUpdate, me: CurrentUser, session: SessionDep, if_match: IfMatch
) -> Response:
    """Change the caller's own profile (not their role or activation); If-Match applies."""
    user = await service.update_user(
        session=session,
        user_id=me.id,  # type: ignore[arg-type]
        user_in=user_in,
        caller=me,
        if_match=if_match,
    )
    return conditional.answer(UserRead, user)


@router.post(
    "/me/password", status_code=status.HTTP_204_NO_CONTENT, responses=responses(400, 401, 409)
)
async def change_my_password(change: PasswordChange, me: CurrentUser, session: SessionDep) -> None:
    """Change the caller's password; the current one is required."""
    await auth_service.change_password(session=session, user=me, change=change)


SearchText = Annotated[str, Query(min_length=1, max_length=100, pattern=r"^[^\x00]*$")]


@router.get(
    "/", response_model=Page[UserRead], dependencies=admin_only, responses=responses(401, 403)
)
async def list_users(
    session: SessionDep,
    params: PageParamsDep,
    is_active: bool | None = None,
    search: SearchText | None = None,
) -> Page[User]:
    """List users, oldest first; filter by activity and by text in username, email, full name
    (superuser)."""
    query = service.filtered(is_active=is_active, search=search)
    return await service.list_users(session=session, params=params, query=query)


@router.post(
    "/bulk",
    status_code=status.HTTP_201_CREATED,
    response_model=list[UserRead],
    dependencies=[*admin_only, KEYED],
    responses=responses(401, 403, 409),
)
async def create_users(
    users_in: Annotated[list[UserCreate], Body(min_length=1, max_length=100)],
    session: SessionDep,
) -> list[User]:
    """Create up to 100 users, all or none; a taken value is a 409 naming it (superuser)."""
    return await service.create_users(session=session, users_in=users_in)


@router.get(
    "/search", response_model=Page[UserRead], dependencies=admin_only, responses=responses(401, 403)
)
async def search_users(session: SessionDep, params: PageParamsDep, q: SearchText) -> Page[User]:
    """Users whose username, email or full name holds `q`, any case (superuser)."""
    query = service.filtered(search=q)
    return await service.list_users(session=session, params=params, query=query)


@router.get(
    "/by-email/{email}",
    response_model=UserRead,
    dependencies=admin_only,
    responses=responses(401, 403, 404),
)
async def get_user_by_email(
    email: Annotated[str, Path(max_length=255)], session: SessionDep
) -> User:
    """Read a user by email, any case (superuser)."""
    return await service.get_user_by_email(session=session, email=email)


@router.get("/stats/active-count", dependencies=admin_only, responses=responses(401, 403))
async def active_count(session: SessionDep) -> ActiveCount:
    """How many users are active (superuser)."""
    return ActiveCount(active_users=await service.count_active(session=session))


@router.patch("/bulk/deactivate", dependencies=admin_only, responses=responses(401, 403))
async def deactivate_idle(
    session: SessionDep, days: Annotated[int, Query(ge=1, le=36_500)]
) -> Deactivated:
    """Deactivate users not updated for `days` days; superusers are kept (superuser)."""
    return Deactivated(deactivated=await service.deactivate_idle(session=session, days=days))


@router.put(
    f"/{USER_ID}",
    response_model=UserRead,
    responses=conditional.write_responses(401, 403, 404, 409),
)
async def replace_user(
    user_id: UserId, user_in: UserReplace, caller: AdminUser, session: SessionDep, if_match: IfMatch
) -> Response:
    """Replace every editable field of a user; If-Match makes it conditional (superuser)."""
    user = await service.replace_user(
        session=session, user_id=user_id, user_in=user_in, caller=caller, if_match=if_match
    )
    return conditional.answer(UserRead, user)


@router.delete(
    f"/{USER_ID}/soft",
    response_model=UserRead,
    responses=conditional.write_responses(401, 403, 404, 409),
)
async def soft_delete_user(
    user_id: UserId, caller: AdminUser, session: SessionDep, if_match: IfMatch
) -> Response:
    """Deactivate a user instead of deleting them; answers the user (superuser)."""
    user = await service.soft_delete_user(
        session=session, user_id=user_id, caller=caller, if_match=if_match
    )
    return conditional.answer(UserRead, user)


@router.get(f"/{USER_ID}", response_model=UserRead, responses=conditional.read_responses(401, 404))
async def get_user(
    user_id: UserId, caller: CurrentUser, session: SessionDep, if_none_match: IfNoneMatch
) -> Response:
    """Read one user: oneself, or anyone for a superuser; another user's id is a 404 (ETag)."""
    user = await get_user_for(session=session, user_id=user_id, caller=caller)
    return conditional.answer(UserRead, user, if_none_match)


@router.patch(
    f"/{USER_ID}",
    response_model=UserRead,
    responses=conditional.write_responses(401, 403, 404, 409),
)
async def update_user(
    user_id: UserId, user_in: UserUpdate, caller: AdminUser, session: SessionDep, if_match: IfMatch
) -> Response:
    """Change some of a user's fields, activation included; If-Match applies (superuser)."""
    user = await service.update_user(
        session=session, user_id=user_id, user_in=user_in, caller=caller, if_match=if_match
    )
    return conditional.answer(UserRead, user)


@router.delete(
    f"/{USER_ID}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=conditional.write_responses(401, 403, 404, 409, success=None),
)
async def delete_user(
    user_id: UserId, caller: AdminUser, session: SessionDep, if_match: IfMatch
) -> None:
    """Delete a user and their posts; a user with orders is a 409: soft-delete them (superuser)."""
    await service.delete_user(session=session, user_id=user_id, caller=caller, if_match=if_match)
