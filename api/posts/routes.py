"""Posts over HTTP: published posts are public; authors write their own."""

from typing import Annotated

from fastapi import Path, Query, Response, status

from api.auth.dependencies import ANONYMOUS_ALLOWED, KEYED, CurrentUser, OptionalUser
from api.core import conditional
from api.core.conditional import IfMatch, IfNoneMatch
from api.core.db import SessionDep
from api.core.errors import responses
from api.core.idempotency import IdempotentRoute
from api.core.models import MAX_ID
from api.core.pagination import Page, PageParamsDep
from api.core.routing import api_router
from api.posts import service
from api.posts.models import (
    COUNTERS,
    Post,
    PostCreate,
    PostRead,
    PostStatus,
    PostUpdate,
    UserReadWithPosts,
)
from api.tags.dependencies import TagId
from api.users.dependencies import USER_ID, UserId, get_user_for

router = api_router(prefix="/posts", tags=["posts"], route_class=IdempotentRoute)
# The users' route that answers with their posts.
users_router = api_router(prefix="/users", tags=["users"])

PostId = Annotated[int, Path(gt=0, le=MAX_ID, description="The post id.")]
AnId = Annotated[int | None, Query(gt=0, le=MAX_ID)]


@router.post(
    "/",
    status_code=status.HTTP_201_CREATED,
    response_model=PostRead,
    dependencies=[KEYED],
    responses=responses(401, 409),
)
async def create_post(post_in: PostCreate, author: CurrentUser, session: SessionDep) -> Post:
    """Write a post (a draft) as the caller."""
    return await service.create_post(session=session, author=author, post_in=post_in)


@router.get(
    "/", response_model=Page[PostRead], responses=responses(401), openapi_extra=ANONYMOUS_ALLOWED
)
async def list_posts(
    session: SessionDep,
    params: PageParamsDep,
    caller: OptionalUser,
    status: PostStatus | None = None,
    author_id: AnId = None,
    tag_id: AnId = None,
) -> Page[Post]:
    """Posts the caller may read (published ones, and their own), filtered."""
    return await service.list_posts(
        session=session,
        params=params,
        caller=caller,
        status=status,
        author_id=author_id,
        tag_id=tag_id,
    )


@router.get(
    "/{post_id}",
    response_model=PostRead,
    responses=conditional.read_responses(401, 404),
    openapi_extra=ANONYMOUS_ALLOWED,
)
async def read_post(
    post_id: PostId, caller: OptionalUser, session: SessionDep, if_none_match: IfNoneMatch
) -> Response:
    """Read a post (and count the view, 304 too); another user's unpublished post is a 404. Its
    ETag is weak: it leaves out the view count, which every read changes."""
    post = await service.read_post(session=session, post_id=post_id, caller=caller)
    return conditional.answer(PostRead, post, if_none_match, counters=COUNTERS)


@router.patch(
    "/{post_id}", response_model=PostRead, responses=conditional.write_responses(401, 404, 409)
)
async def update_post(
    post_id: PostId,
    post_in: PostUpdate,
    caller: CurrentUser,
    session: SessionDep,
    if_match: IfMatch,
) -> Response:
    """Change one's own post; If-Match (the post's weak tag) makes it conditional."""
    post = await service.update_post(
        session=session, post_id=post_id, caller=caller, post_in=post_in, if_match=if_match
    )
    return conditional.answer(PostRead, post, counters=COUNTERS)


@router.delete(
    "/{post_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=conditional.write_responses(401, 404, success=None),
)
async def delete_post(
    post_id: PostId, caller: CurrentUser, session: SessionDep, if_match: IfMatch
) -> None:
    """Delete one's own post."""
    await service.delete_post(session=session, post_id=post_id, caller=caller, if_match=if_match)


@router.patch(
    "/{post_id}/status",
    response_model=PostRead,
    responses=conditional.write_responses(401, 404, 409),
)
async def change_status(
    post_id: PostId,
    new_status: PostStatus,
    caller: CurrentUser,
    session: SessionDep,
    if_match: IfMatch,
) -> Response:
    """draft -> published -> archived; any other move is a 409 naming both states."""
    post = await service.change_status(
        session=session, post_id=post_id, caller=caller, new_status=new_status, if_match=if_match
    )
    return conditional.answer(PostRead, post, counters=COUNTERS)


@router.put(
    "/{post_id}/tags/{tag_id}",
    response_model=PostRead,
    responses=conditional.write_responses(401, 404),
)
async def tag_post(
    post_id: PostId, tag_id: TagId, caller: CurrentUser, session: SessionDep, if_match: IfMatch
) -> Response:
    """Tag one's own post (again: no change)."""
    post = await service.tag_post(
        session=session, post_id=post_id, tag_id=tag_id, caller=caller, if_match=if_match
    )
    return conditional.answer(PostRead, post, counters=COUNTERS)


@router.delete(
    "/{post_id}/tags/{tag_id}",
    response_model=PostRead,
    responses=conditional.write_responses(401, 404),
)
async def untag_post(
    post_id: PostId, tag_id: TagId, caller: CurrentUser, session: SessionDep, if_match: IfMatch
) -> Response:
    """Untag one's own post (a tag it lacks: no change)."""
    post = await service.untag_post(
        session=session, post_id=post_id, tag_id=tag_id, caller=caller, if_match=if_match
    )
    return conditional.answer(PostRead, post, counters=COUNTERS)


@users_router.get(
    f"/{USER_ID}/with-posts", response_model=UserReadWithPosts, responses=responses(401, 404)
)
async def user_with_posts(
    user_id: UserId, caller: CurrentUser, session: SessionDep
) -> UserReadWithPosts:
    """A user with their posts: oneself, or anyone for a superuser; another's id is a 404."""
    user = await get_user_for(session=session, user_id=user_id, caller=caller)
    return await service.user_with_posts(session=session, user=user, caller=caller)
