"""Users over HTTP: parse, check who is calling, call the service, return."""

from typing import Annotated

from fastapi import APIRouter, Path, status

from api.auth import service as auth_service
from api.auth.dependencies import CurrentUser, admin_only
from api.auth.models import PasswordChange
from api.core.db import SessionDep
from api.core.errors import responses
from api.core.pagination import Page, PageParamsDep
from api.users import service
from api.users.models import User, UserCreate, UserMeUpdate, UserRead, UserUpdate

router = APIRouter(prefix="/users", tags=["users"])

UserId = Annotated[int, Path(gt=0, le=2_147_483_647, description="The user id.")]


@router.post(
    "/", status_code=status.HTTP_201_CREATED, response_model=UserRead, responses=responses(409)
)
async def create_user(user_in: UserCreate, session: SessionDep) -> User:
    """Sign up: create a user. A taken username or email is a 409 naming the field."""
    return await service.create_user(session=session, user_in=user_in)


@router.get("/me", response_model=UserRead, responses=responses(401))
async def read_me(me: CurrentUser) -> User:
    """The caller's own profile."""
    return me


@router.patch("/me", response_model=UserRead, responses=responses(401, 409))
async def update_me(user_in: UserMeUpdate, me: CurrentUser, session: SessionDep) -> User:
    """Change the caller's own profile (not their role or activation)."""
    return await service.update_user(session=session, user_id=me.id, user_in=user_in)  # type: ignore[arg-type]


@router.post("/me/password", status_code=status.HTTP_204_NO_CONTENT, responses=responses(400, 401))
async def change_my_password(change: PasswordChange, me: CurrentUser, session: SessionDep) -> None:
    """Change the caller's password; the current one is required."""
    await auth_service.change_password(session=session, user=me, change=change)


@router.get(
    "/", response_model=Page[UserRead], dependencies=admin_only, responses=responses(401, 403)
)
async def list_users(session: SessionDep, params: PageParamsDep) -> Page[User]:
    """List users, oldest first, one page at a time (superuser)."""
    return await service.list_users(session=session, params=params)


@router.get("/{user_id}", response_model=UserRead, responses=responses(401, 404))
async def get_user(user_id: UserId, caller: CurrentUser, session: SessionDep) -> User:
    """Read one user: oneself, or anyone for a superuser; another user's id is a 404."""
    return await service.get_user_for(session=session, user_id=user_id, caller=caller)


@router.patch(
    "/{user_id}",
    response_model=UserRead,
    dependencies=admin_only,
    responses=responses(401, 403, 404, 409),
)
async def update_user(user_id: UserId, user_in: UserUpdate, session: SessionDep) -> User:
    """Change some of a user's fields, activation included (superuser)."""
    return await service.update_user(session=session, user_id=user_id, user_in=user_in)


@router.delete(
    "/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=admin_only,
    responses=responses(401, 403, 404),
)
async def delete_user(user_id: UserId, session: SessionDep) -> None:
    """Delete a user (superuser)."""
    await service.delete_user(session=session, user_id=user_id)
