"""Users: queries and rules. Functions flush, never commit (the request's session does), but
for `release_connection` before hashing passwords."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, or_, update
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from api.core import conditional, metrics
from api.core.conditional import Condition
from api.core.db import constraint_errors, get_or_404, release_connection, update_or_404
from api.core.errors import AlreadyExists, Conflict, LastSuperuser, NotFound, OwnAccount
from api.core.pagination import Page, PageParams, apaginate
from api.core.security import hash_password
from api.users.models import (
    IN_USE,
    UNIQUE_FIELDS,
    User,
    UserCreate,
    UserMeUpdate,
    UserRead,
    UserReplace,
    UserUpdate,
)


async def create_user(*, session: AsyncSession, user_in: UserCreate) -> User:
    hashed = await hash_password(user_in.password)
    db_user = User.model_validate(user_in, update={"hashed_password": hashed})
    async with constraint_errors(session, unique=UNIQUE_FIELDS):
        session.add(db_user)
    await session.refresh(db_user)
    metrics.count_on_commit(session, metrics.SIGN_UPS)
    return db_user


async def get_user(*, session: AsyncSession, user_id: int) -> User:
    return await get_or_404(session, User, user_id)


async def list_users(
    *, session: AsyncSession, params: PageParams, query: SelectOfScalar[User] | None = None
) -> Page[User]:
    page: Page[User] = await apaginate(session, query if query is not None else filtered(), params)
    return page


async def check_unchanged(
    *, session: AsyncSession, user_id: int, if_match: Condition | None
) -> User | None:
    """A write's If-Match: the user locked and its tag compared (a 412 when stale); the locked
    row, or None without a condition. Called after `keep_an_active_superuser`, which locks the
    active superusers in id order first: taken the other way round, a superuser's row locked
    here could wait for, and be waited on by, a deactivation of another superuser."""
    return await conditional.check(session, if_match, User, user_id, UserRead)


async def update_user(
    *,
    session: AsyncSession,
    user_id: int,
    user_in: UserUpdate | UserMeUpdate,
    caller: User,
    if_match: Condition | None = None,
) -> User:
    changes = user_in.model_dump(exclude_unset=True)
    if changes.get("is_active") is False:
        await keep_an_active_superuser(session=session, user_id=user_id, caller=caller)
    await check_unchanged(session=session, user_id=user_id, if_match=if_match)
    return await update_or_404(session, User, user_id, changes, unique=UNIQUE_FIELDS)


async def delete_user(
    *, session: AsyncSession, user_id: int, caller: User, if_match: Condition | None = None
) -> None:
    """Delete a user and their posts; a user with orders is a 409 (the database decides)."""
    db_user = await get_user(session=session, user_id=user_id)
    if (db_user.is_superuser and db_user.is_active) or user_id == caller.id:
        await keep_an_active_superuser(session=session, user_id=user_id, caller=caller)
    await check_unchanged(session=session, user_id=user_id, if_match=if_match)
    async with constraint_errors(session, in_use=IN_USE):
        await session.delete(db_user)


async def keep_an_active_superuser(*, session: AsyncSession, user_id: int, caller: User) -> None:
    """Refuse to take `user_id` out of the active superusers (a delete, a deactivation) when it
    is the caller's own account, or when no other active superuser would be left. The active
    superusers are locked first, in id order: of two requests that each remove one of the last
    two, the second waits for the first and then sees its change."""
    if user_id == caller.id:
        raise OwnAccount(
            "A superuser cannot delete or deactivate their own account: another superuser can."
        )
    active = (
        select(col(User.id))
        .where(col(User.is_superuser).is_(True), col(User.is_active).is_(True))
        .order_by(col(User.id))
        .with_for_update()
    )
    superusers = set((await session.exec(active)).all())
    if superusers == {user_id}:
        raise LastSuperuser("The user is the last active superuser: no superuser would be left.")


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
        raise AlreadyExists(f"username {username} is taken by a user with another email")
    if promote and not db_user.is_superuser:
        db_user.is_superuser = True
        session.add(db_user)
        await session.flush()
    return db_user, created is not None


def filtered(*, is_active: bool | None = None, search: str | None = None) -> SelectOfScalar[User]:
    """Users, oldest first; `search` matches username, email or full name, any case."""
    query = select(User)
    if is_active is not None:
        query = query.where(User.is_active == is_active)
    if search:
        query = query.where(
            or_(
                col(User.username).icontains(search, autoescape=True),
                col(User.email).icontains(search, autoescape=True),
                col(User.full_name).icontains(search, autoescape=True),
            )
        )
    return query.order_by(col(User.id))


async def get_user_by_email(*, session: AsyncSession, email: str) -> User:
    query = select(User).where(func.lower(User.email) == email.lower())
    db_user = (await session.exec(query)).first()
    if db_user is None:
        raise NotFound("User", email, by="email")
    return db_user


async def count_active(*, session: AsyncSession) -> int:
    query = select(func.count()).select_from(User).where(User.is_active == True)  # noqa: E712
    return (await session.exec(query)).one()


async def create_users(*, session: AsyncSession, users_in: list[UserCreate]) -> list[User]:
    """All or nothing: one flush for the lot; a taken value is a 409 naming it. Up to 100
    passwords are hashed (seconds of argon2) with no connection held: the caller was read."""
    await release_connection(session)
    hashes = [await hash_password(user_in.password) for user_in in users_in]
    db_users = [
        User.model_validate(user_in, update={"hashed_password": hashed})
        for user_in, hashed in zip(users_in, hashes, strict=True)
    ]
    try:
        async with constraint_errors(session, unique=UNIQUE_FIELDS):
            session.add_all(db_users)
    except Conflict as exc:
        field = exc.errors[0].field if exc.errors else "value"
        values = [getattr(u, field, None) for u in users_in]
        raise AlreadyExists(
            f"{field} is already taken (one of: {', '.join(map(str, values))[:200]}).",
            errors=exc.errors,
        ) from exc
    # Their server-set columns (timestamps) in one statement, not one refresh per user.
    ids = [db_user.id for db_user in db_users]
    query = select(User).where(col(User.id).in_(ids)).order_by(col(User.id))
    return list(await session.exec(query.execution_options(populate_existing=True)))


async def replace_user(
    *,
    session: AsyncSession,
    user_id: int,
    user_in: UserReplace,
    caller: User,
    if_match: Condition | None = None,
) -> User:
    """Every editable column written, whether or not it differs from the row as last read: a
    field resent unchanged still overwrites what another request changed in between."""
    changes = user_in.model_dump()
    if not user_in.is_active:
        await keep_an_active_superuser(session=session, user_id=user_id, caller=caller)
    await check_unchanged(session=session, user_id=user_id, if_match=if_match)
    return await update_or_404(session, User, user_id, changes, unique=UNIQUE_FIELDS)


async def soft_delete_user(
    *, session: AsyncSession, user_id: int, caller: User, if_match: Condition | None = None
) -> User:
    await keep_an_active_superuser(session=session, user_id=user_id, caller=caller)
    await check_unchanged(session=session, user_id=user_id, if_match=if_match)
    return await update_or_404(session, User, user_id, {"is_active": False})


async def deactivate_idle(*, session: AsyncSession, days: int) -> int:
    """Deactivate active users not updated for `days` days (never a superuser); one UPDATE."""
    cutoff = datetime.now(UTC) - timedelta(days=days)
    result = await session.exec(
        update(User)
        .where(
            col(User.is_active).is_(True),
            col(User.is_superuser).is_(False),
            col(User.updated_at) < cutoff,
        )
        .values(is_active=False)
        .returning(col(User.id))
    )
    return len(result.all())
