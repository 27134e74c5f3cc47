"""Users: queries and rules. Functions flush, never commit (the request's session does), but
for `release_connection` before hashing passwords."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import Integer, delete, exists, func, or_, type_coerce, update
from sqlalchemy import select as sql_select
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from api.core.db import constraint_errors, get_or_404, release_connection, update_or_404
from api.core.errors import AlreadyExists, Conflict, NotFound
from api.core.pagination import Page, PageParams, apaginate
from api.core.security import hash_password
from api.orders.models import Order, OrderStatus
from api.users.models import (
    IN_USE,
    UNIQUE_FIELDS,
    InactiveDeleted,
    PostSummary,
    TopSpender,
    User,
    UserCreate,
    UserMeUpdate,
    UserRead,
    UserReadWithPosts,
    UserReplace,
    UserUpdate,
)


async def create_user(*, session: AsyncSession, user_in: UserCreate) -> User:
    hashed = await hash_password(user_in.password)
    db_user = User.model_validate(user_in, update={"hashed_password": hashed})
    async with constraint_errors(session, unique=UNIQUE_FIELDS):
        session.add(db_user)
    await session.refresh(db_user)
    return db_user


async def get_user(*, session: AsyncSession, user_id: int) -> User:
    return await get_or_404(session, User, user_id)


async def get_user_for(*, session: AsyncSession, user_id: int, caller: User) -> User:
    """A user as `caller` may see it: themself, or anyone for a superuser; otherwise a 404."""
    if not caller.is_superuser and caller.id != user_id:
        raise NotFound("User", user_id)
    return await get_user(session=session, user_id=user_id)


async def list_users(
    *, session: AsyncSession, params: PageParams, query: SelectOfScalar[User] | None = None
) -> Page[User]:
    page: Page[User] = await apaginate(session, query if query is not None else filtered(), params)
    return page


async def update_user(
    *, session: AsyncSession, user_id: int, user_in: UserUpdate | UserMeUpdate
) -> User:
    changes = user_in.model_dump(exclude_unset=True)
    return await update_or_404(session, User, user_id, changes, unique=UNIQUE_FIELDS)


async def delete_user(*, session: AsyncSession, user_id: int) -> None:
    """Delete a user and their posts; a user with orders is a 409 (the database decides)."""
    db_user = await get_user(session=session, user_id=user_id)
    async with constraint_errors(session, in_use=IN_USE):
        await session.delete(db_user)


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


async def replace_user(*, session: AsyncSession, user_id: int, user_in: UserReplace) -> User:
    """Every editable column written, whether or not it differs from the row as last read: a
    field resent unchanged still overwrites what another request changed in between."""
    changes = user_in.model_dump()
    return await update_or_404(session, User, user_id, changes, unique=UNIQUE_FIELDS)


async def soft_delete_user(*, session: AsyncSession, user_id: int) -> User:
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


async def user_with_posts(
    *, session: AsyncSession, user_id: int, caller: User
) -> UserReadWithPosts:
    """A user and their posts, in two statements. Others' drafts are not shown to a user."""
    from api.posts.models import Post, PostStatus

    db_user = await get_user_for(session=session, user_id=user_id, caller=caller)
    query = select(Post).where(Post.author_id == user_id).order_by(col(Post.id))
    if not caller.is_superuser and caller.id != user_id:
        query = query.where(Post.status == PostStatus.published)
    posts = (await session.exec(query)).all()
    summaries = [PostSummary.model_validate(post, from_attributes=True) for post in posts]
    return UserReadWithPosts(**UserRead.model_validate(db_user).model_dump(), posts=summaries)


async def delete_inactive(*, session: AsyncSession) -> InactiveDeleted:
    """Delete the inactive users without orders, in one statement; count those kept."""
    has_orders = exists().where(col(Order.user_id) == col(User.id))
    async with constraint_errors(session, in_use=IN_USE):  # an order placed meanwhile
        deleted = await session.exec(
            delete(User).where(col(User.is_active).is_(False), ~has_orders).returning(col(User.id))
        )
        count = len(deleted.all())
    kept = select(func.count()).select_from(User).where(col(User.is_active).is_(False))
    return InactiveDeleted(deleted=count, kept_with_orders=(await session.exec(kept)).one())


async def top_spenders(*, session: AsyncSession, limit: int) -> list[TopSpender]:
    """Users by what their orders not cancelled add up to, highest first."""
    total = func.sum(col(Order.total_amount))
    query = (
        sql_select(
            type_coerce(col(User.id), Integer).label("user_id"),
            col(User.username),
            col(User.email),
            func.count(col(Order.id)).label("order_count"),
            total.label("total_spent"),
        )
        .join(Order, col(Order.user_id) == col(User.id))
        .where(col(Order.status) != OrderStatus.cancelled)
        .group_by(col(User.id))
        .order_by(total.desc(), col(User.id))
        .limit(limit)
    )
    rows = (await (await session.connection()).execute(query)).all()
    return [TopSpender.model_validate(row, from_attributes=True) for row in rows]
