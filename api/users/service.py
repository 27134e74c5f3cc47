"""Users: queries and rules. Functions flush, never commit (the request's session does)."""

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.core.db import constraint_errors
from api.core.errors import Conflict, NotFound
from api.core.pagination import Page, PageParams, apaginate
from api.core.security import hash_password
from api.users.models import UNIQUE_FIELDS, User, UserCreate, UserMeUpdate, UserUpdate


async def create_user(*, session: AsyncSession, user_in: UserCreate) -> User:
    hashed = await hash_password(user_in.password)
    db_user = User.model_validate(user_in, update={"hashed_password": hashed})
    async with constraint_errors(session, unique=UNIQUE_FIELDS):
        session.add(db_user)
    await session.refresh(db_user)
    return db_user


async def get_user(*, session: AsyncSession, user_id: int) -> User:
    db_user = await session.get(User, user_id)
    if db_user is None:
        raise NotFound("User", user_id)
    return db_user


async def get_user_for(*, session: AsyncSession, user_id: int, caller: User) -> User:
    """A user as `caller` may see it: themself, or anyone for a superuser; otherwise a 404."""
    if not caller.is_superuser and caller.id != user_id:
        raise NotFound("User", user_id)
    return await get_user(session=session, user_id=user_id)


async def list_users(*, session: AsyncSession, params: PageParams) -> Page[User]:
    page: Page[User] = await apaginate(session, select(User).order_by(col(User.id)), params)
    return page


async def update_user(
    *, session: AsyncSession, user_id: int, user_in: UserUpdate | UserMeUpdate
) -> User:
    db_user = await get_user(session=session, user_id=user_id)
    async with constraint_errors(session, unique=UNIQUE_FIELDS):
        db_user.sqlmodel_update(user_in.model_dump(exclude_unset=True))
    await session.refresh(db_user)
    return db_user


async def delete_user(*, session: AsyncSession, user_id: int) -> None:
    db_user = await get_user(session=session, user_id=user_id)
    await session.delete(db_user)
    await session.flush()


async def ensure_superuser(
    *, session: AsyncSession, email: str, username: str, password: str, promote: bool
) -> tuple[User, bool]:
    """The superuser with this email, created when no user has it. Safe to run from several
    processes at once (the insert does nothing on a conflict). An existing user is promoted only
    when `promote` is set (the command), never at start-up. Returns the user and whether it was
    created."""
    hashed = await hash_password(password)
    values = {"email": email, "username": username, "hashed_password": hashed, "is_superuser": True}
    created = (
        await session.exec(
            insert(User).values(**values).on_conflict_do_nothing().returning(col(User.id))
        )
    ).first()
    db_user = (
        await session.exec(select(User).where(func.lower(User.email) == email.lower()))
    ).first()
    if db_user is None:
        raise Conflict(f"username {username} is taken by a user with another email")
    if promote and not db_user.is_superuser:
        db_user.is_superuser = True
        session.add(db_user)
        await session.flush()
    return db_user, created is not None
