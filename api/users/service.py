"""Users: queries and rules. Functions flush, never commit (the request's session does)."""

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.core.db import unique_fields
from api.core.errors import NotFound
from api.core.pagination import Page, PageParams, apaginate
from api.core.security import hash_password
from api.users.models import UNIQUE_FIELDS, User, UserCreate, UserUpdate


async def create_user(*, session: AsyncSession, user_in: UserCreate) -> User:
    hashed = await hash_password(user_in.password)
    db_user = User.model_validate(user_in, update={"hashed_password": hashed})
    async with unique_fields(session, UNIQUE_FIELDS):
        session.add(db_user)
    await session.refresh(db_user)
    return db_user


async def get_user(*, session: AsyncSession, user_id: int) -> User:
    db_user = await session.get(User, user_id)
    if db_user is None:
        raise NotFound("User", user_id)
    return db_user


async def list_users(*, session: AsyncSession, params: PageParams) -> Page[User]:
    page: Page[User] = await apaginate(session, select(User).order_by(col(User.id)), params)
    return page


async def update_user(*, session: AsyncSession, user_id: int, user_in: UserUpdate) -> User:
    db_user = await get_user(session=session, user_id=user_id)
    async with unique_fields(session, UNIQUE_FIELDS):
        db_user.sqlmodel_update(user_in.model_dump(exclude_unset=True))
    await session.refresh(db_user)
    return db_user


async def delete_user(*, session: AsyncSession, user_id: int) -> None:
    db_user = await get_user(session=session, user_id=user_id)
    await session.delete(db_user)
    await session.flush()
