"""What other packages use of users in their routes: the user id in a path, and the user a
caller may see."""

from typing import Annotated

from fastapi import Path
from sqlmodel.ext.asyncio.session import AsyncSession

from api.core.errors import NotFound
from api.core.models import MAX_ID
from api.core.routing import segment_except
from api.users.models import User
from api.users.service import get_user

UserId = Annotated[int, Path(gt=0, le=MAX_ID, description="The user id.")]

# The words of the paths under /users/, whichever package serves them. A user id is any other
# segment, so /users/top-spenders never reaches /users/{user_id}, nor /users/by-email/x
# /users/{user_id}/with-posts, whatever order the routers are included in. A test checks that
# every such word is here.
USER_PATH_WORDS = ("bulk", "by-email", "me", "search", "stats", "top-spenders")
USER_ID = f"{{user_id:{segment_except('user_id', USER_PATH_WORDS)}}}"


async def get_user_for(*, session: AsyncSession, user_id: int, caller: User) -> User:
    """A user as `caller` may see it: themself, or anyone for a superuser; otherwise a 404."""
    if not caller.is_superuser and caller.id != user_id:
        raise NotFound("User", user_id)
    return await get_user(session=session, user_id=user_id)
