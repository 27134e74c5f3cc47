"""Posts: queries and rules. Who sees what is part of every query: a published post is
everyone's to read; a draft or an archived post only its author's (and a superuser's); only the
author (or a superuser) writes. Anything else is a 404."""

from datetime import UTC, datetime

from sqlalchemy import ColumnElement, literal, or_, true, update
from sqlalchemy import select as sql_select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload
from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from api.core import conditional
from api.core.conditional import Condition
from api.core.db import constraint_errors, update_or_404
from api.core.errors import InvalidStatusTransition, NotFound, violated_constraint
from api.core.pagination import Page, PageParams, apaginate
from api.posts.models import (
    COUNTERS,
    POST_REFERENCE,
    TAG_REFERENCE,
    TRANSITIONS,
    UNIQUE_FIELDS,
    Post,
    PostCreate,
    PostRead,
    PostStatus,
    PostSummary,
    PostTagLink,
    PostUpdate,
    UserReadWithPosts,
)
from api.users.models import User, UserRead


def readable_by(caller: User | None) -> ColumnElement[bool]:
    published = col(Post.status) == PostStatus.published
    if caller is None:
        return published
    if caller.is_superuser:
        return true()
    return or_(published, col(Post.author_id) == caller.id)


def writable_by(caller: User) -> ColumnElement[bool]:
    return true() if caller.is_superuser else col(Post.author_id) == caller.id


def with_tags(query: SelectOfScalar[Post]) -> SelectOfScalar[Post]:
    # Tags in one more statement for the whole page or post, never one per post.
    return query.options(selectinload(Post.tags))  # type: ignore[arg-type]


async def _one(session: AsyncSession, post_id: int, scope: ColumnElement[bool]) -> Post:
    query = with_tags(select(Post).where(Post.id == post_id, scope))
    post = (await session.exec(query.execution_options(populate_existing=True))).first()
    if post is None:
        raise NotFound("Post", post_id)
    return post


async def create_post(*, session: AsyncSession, author: User, post_in: PostCreate) -> Post:
    db_post = Post.model_validate(post_in, update={"author_id": author.id})
    async with constraint_errors(session, unique=UNIQUE_FIELDS):
        session.add(db_post)
    return await _one(session, db_post.id, true())  # type: ignore[arg-type]


async def list_posts(
    *,
    session: AsyncSession,
    params: PageParams,
    caller: User | None,
    status: PostStatus | None = None,
    author_id: int | None = None,
    tag_id: int | None = None,
) -> Page[Post]:
    query = select(Post).where(readable_by(caller))
    if status is not None:
        query = query.where(Post.status == status)
    if author_id is not None:
        query = query.where(Post.author_id == author_id)
    if tag_id is not None:
        tagged = select(PostTagLink.post_id).where(PostTagLink.tag_id == tag_id)
        query = query.where(col(Post.id).in_(tagged))
    page: Page[Post] = await apaginate(session, with_tags(query.order_by(col(Post.id))), params)
    return page


async def read_post(*, session: AsyncSession, post_id: int, caller: User | None) -> Post:
    """Read a post the caller may see, counting the view in SQL (no read-modify-write)."""
    counted = await session.exec(
        update(Post)
        .where(col(Post.id) == post_id, readable_by(caller))
        # A view is not an edit: updated_at keeps its value (it would take now() otherwise).
        .values(view_count=col(Post.view_count) + 1, updated_at=col(Post.updated_at))
        .returning(col(Post.id))
    )
    if counted.first() is None:
        raise NotFound("Post", post_id)
    return await _one(session, post_id, true())


async def check_unchanged(
    *, session: AsyncSession, post_id: int, caller: User, if_match: Condition | None
) -> Post | None:
    """A write's If-Match: the post the caller may write locked and read with its tags, as its
    GET shows it, and its weak tag (no view count) compared; a 412 when stale, a 404 for
    another author's post. The locked row, or None without a condition."""
    return await conditional.check(
        session,
        if_match,
        Post,
        post_id,
        PostRead,
        options=[selectinload(Post.tags)],  # type: ignore[arg-type]
        where=writable_by(caller),
        counters=COUNTERS,
    )


async def update_post(
    *,
    session: AsyncSession,
    post_id: int,
    caller: User,
    post_in: PostUpdate,
    if_match: Condition | None = None,
) -> Post:
    """Another author's post is a 404, as if it did not exist."""
    await check_unchanged(session=session, post_id=post_id, caller=caller, if_match=if_match)
    changes = post_in.model_dump(exclude_unset=True)
    await update_or_404(
        session, Post, post_id, changes, where=writable_by(caller), unique=UNIQUE_FIELDS
    )
    return await _one(session, post_id, true())


async def delete_post(
    *, session: AsyncSession, post_id: int, caller: User, if_match: Condition | None = None
) -> None:
    """One DELETE: the post's tag links go with it by the foreign key's ON DELETE CASCADE, not
    loaded and deleted one by one. Another author's post is a 404, as if it did not exist."""
    await check_unchanged(session=session, post_id=post_id, caller=caller, if_match=if_match)
    deleted = await session.exec(
        delete(Post).where(col(Post.id) == post_id, writable_by(caller)).returning(col(Post.id))
    )
    if deleted.first() is None:
        raise NotFound("Post", post_id)


async def change_status(
    *,
    session: AsyncSession,
    post_id: int,
    caller: User,
    new_status: PostStatus,
    if_match: Condition | None = None,
) -> Post:
    """draft -> published (which stamps published_at) -> archived; anything else is a 409."""
    await check_unchanged(session=session, post_id=post_id, caller=caller, if_match=if_match)
    locked = select(Post).where(Post.id == post_id, writable_by(caller)).with_for_update()
    db_post = (await session.exec(locked)).first()
    if db_post is None:
        raise NotFound("Post", post_id)
    current = PostStatus(db_post.status)
    if new_status not in TRANSITIONS.get(current, set()):
        raise InvalidStatusTransition(f"A {current} post cannot become {new_status}.")
    db_post.status = new_status
    if new_status == PostStatus.published:
        db_post.published_at = datetime.now(UTC)
    session.add(db_post)
    await session.flush()
    return await _one(session, post_id, true())


async def tag_post(
    *,
    session: AsyncSession,
    post_id: int,
    tag_id: int,
    caller: User,
    if_match: Condition | None = None,
) -> Post:
    """Idempotent: tagging twice leaves one link. One INSERT ... SELECT makes the link only for
    a post the caller may write (another author's post is then a 404, as if it did not exist);
    a missing tag is the foreign key's to find, and a 404 naming it."""
    await check_unchanged(session=session, post_id=post_id, caller=caller, if_match=if_match)
    yours = sql_select(col(Post.id), literal(tag_id)).where(
        col(Post.id) == post_id, writable_by(caller)
    )
    link = insert(PostTagLink).from_select(["post_id", "tag_id"], yours).on_conflict_do_nothing()
    try:
        await session.exec(link)
    except IntegrityError as exc:
        # POST_REFERENCE: another request deleted the post after this one found it.
        missing = {TAG_REFERENCE: ("Tag", tag_id), POST_REFERENCE: ("Post", post_id)}
        constraint = violated_constraint(exc)[1]
        if constraint not in missing:
            raise
        raise NotFound(*missing[constraint]) from exc
    return await _one(session, post_id, writable_by(caller))


async def untag_post(
    *,
    session: AsyncSession,
    post_id: int,
    tag_id: int,
    caller: User,
    if_match: Condition | None = None,
) -> Post:
    """Idempotent: untagging a post that lacks the tag changes nothing. The link goes only
    from a post the caller may write; another author's post is a 404."""
    await check_unchanged(session=session, post_id=post_id, caller=caller, if_match=if_match)
    yours = select(Post.id).where(Post.id == post_id, writable_by(caller))
    await session.exec(
        delete(PostTagLink).where(
            col(PostTagLink.post_id) == post_id,
            col(PostTagLink.tag_id) == tag_id,
            col(PostTagLink.post_id).in_(yours),
        )
    )
    return await _one(session, post_id, writable_by(caller))


async def user_with_posts(*, session: AsyncSession, user: User, caller: User) -> UserReadWithPosts:
    """`user` and the posts of theirs that `caller` may read, oldest first."""
    query = (
        select(Post).where(Post.author_id == user.id, readable_by(caller)).order_by(col(Post.id))
    )
    posts = (await session.exec(query)).all()
    summaries = [PostSummary.model_validate(post, from_attributes=True) for post in posts]
    return UserReadWithPosts(**UserRead.model_validate(user).model_dump(), posts=summaries)
