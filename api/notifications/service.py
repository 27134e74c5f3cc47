"""Notifications: queries and rules. Writing one never costs the caller's transaction: it runs in
a savepoint, and a failure is logged and rolled back to it (the seeds' pattern)."""

import logging
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, func, true, update
from sqlalchemy.exc import DBAPIError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.core.errors import NotFound, database_cause, is_connection_error
from api.core.pagination import Page, PageParams, apaginate
from api.notifications.models import MESSAGE_MAX, Notification
from api.users.models import User

logger = logging.getLogger(__name__)


async def notify(
    *, session: AsyncSession, user_id: int, message: str, order_id: int | None = None
) -> bool:
    """Write a notification in a savepoint; on a database error, log it and go on without it.
    A lost connection is not swallowed: nothing could commit after it anyway."""
    try:
        async with session.begin_nested():
            notification = Notification(
                user_id=user_id, message=message[:MESSAGE_MAX], order_id=order_id
            )
            session.add(notification)
    except DBAPIError as exc:
        if is_connection_error(exc):
            raise
        cause, sqlstate = database_cause(exc)
        # Like every database error here: by SQLSTATE and name, never PostgreSQL's message.
        logger.warning(
            "notification for user %s (order %s) not written: %s sqlstate=%s",
            user_id,
            order_id,
            type(cause).__name__,
            sqlstate,
        )
        return False
    return True


def owned_by(caller: User) -> ColumnElement[bool]:
    return true() if caller.is_superuser else col(Notification.user_id) == caller.id


async def list_for_user(
    *, session: AsyncSession, params: PageParams, user_id: int
) -> Page[Notification]:
    query = (
        select(Notification)
        .where(Notification.user_id == user_id)
        .order_by(col(Notification.id).desc())
    )
    page: Page[Notification] = await apaginate(session, query, params)
    return page


async def mark_read(*, session: AsyncSession, notification_id: int, caller: User) -> Notification:
    """Idempotent: the first reading's time stays."""
    result = await session.exec(
        update(Notification)
        .where(col(Notification.id) == notification_id, owned_by(caller))
        .values(read_at=func.coalesce(col(Notification.read_at), datetime.now(UTC)))
        .returning(col(Notification.id))
    )
    if result.first() is None:
        raise NotFound("Notification", notification_id)
    query = select(Notification).where(Notification.id == notification_id)
    return (await session.exec(query.execution_options(populate_existing=True))).one()
