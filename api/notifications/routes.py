"""Notifications over HTTP: each user reads their own."""

from typing import Annotated

from fastapi import Path

from api.auth.dependencies import CurrentUser
from api.core.db import SessionDep
from api.core.errors import responses
from api.core.models import MAX_ID
from api.core.pagination import Page, PageParamsDep
from api.core.routing import api_router
from api.notifications import service
from api.notifications.models import Notification, NotificationRead
from api.users.dependencies import USER_ID, UserId, get_user_for

router = api_router(tags=["notifications"])

NotificationId = Annotated[int, Path(gt=0, le=MAX_ID, description="The notification id.")]


@router.get(
    f"/users/{USER_ID}/notifications",
    response_model=Page[NotificationRead],
    responses=responses(401, 404),
)
async def list_notifications(
    user_id: UserId, caller: CurrentUser, session: SessionDep, params: PageParamsDep
) -> Page[Notification]:
    """A user's notifications, newest first: one's own, or anyone's for a superuser."""
    await get_user_for(session=session, user_id=user_id, caller=caller)
    return await service.list_for_user(session=session, params=params, user_id=user_id)


@router.post(
    "/notifications/{notification_id}/read",
    response_model=NotificationRead,
    responses=responses(401, 404),
)
async def mark_read(
    notification_id: NotificationId, caller: CurrentUser, session: SessionDep
) -> Notification:
    """Mark one's notification read; reading it again keeps the first time."""
    return await service.mark_read(session=session, notification_id=notification_id, caller=caller)
