"""Users over HTTP: parse, call the service, return."""

from typing import Annotated

from fastapi import APIRouter, Path, status

from api.core.db import SessionDep
from api.core.errors import responses
from api.core.pagination import Page, PageParamsDep
from api.users import service
from api.users.models import User, UserCreate, UserRead, UserUpdate

router = APIRouter(prefix="/users", tags=["users"])

UserId = Annotated[int, Path(gt=0, le=2_147_483_647, description="The user id.")]


@router.post(
    "/", status_code=status.HTTP_201_CREATED, response_model=UserRead, responses=responses(409)
)
async def create_user(user_in: UserCreate, session: SessionDep) -> User:
    """Sign up: create a user. A taken username or email is a 409 naming the field."""
    return await service.create_user(session=session, user_in=user_in)


@router.get("/", response_model=Page[UserRead])
async def list_users(session: SessionDep, params: PageParamsDep) -> Page[User]:
    """List users, oldest first, one page at a time."""
    return await service.list_users(session=session, params=params)


@router.get("/{user_id}", response_model=UserRead, responses=responses(404))
async def get_user(user_id: UserId, session: SessionDep) -> User:
    """Read one user."""
    return await service.get_user(session=session, user_id=user_id)


@router.patch("/{user_id}", response_model=UserRead, responses=responses(404, 409))
async def update_user(user_id: UserId, user_in: UserUpdate, session: SessionDep) -> User:
    """Change some of a user's fields; the others stay as they are."""
    return await service.update_user(session=session, user_id=user_id, user_in=user_in)


@router.delete("/{user_id}", status_code=status.HTTP_204_NO_CONTENT, responses=responses(404))
async def delete_user(user_id: UserId, session: SessionDep) -> None:
    """Delete a user."""
    await service.delete_user(session=session, user_id=user_id)
