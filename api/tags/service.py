"""Tags: queries and rules. Functions flush, never commit."""

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.core import conditional
from api.core.conditional import Condition
from api.core.db import constraint_errors, get_or_404, update_or_404
from api.core.pagination import Page, PageParams, apaginate
from api.tags.models import UNIQUE_FIELDS, Tag, TagCreate, TagRead, TagUpdate


async def create_tag(*, session: AsyncSession, tag_in: TagCreate) -> Tag:
    db_tag = Tag.model_validate(tag_in)
    async with constraint_errors(session, unique=UNIQUE_FIELDS):
        session.add(db_tag)
    return db_tag


async def get_tag(*, session: AsyncSession, tag_id: int) -> Tag:
    return await get_or_404(session, Tag, tag_id)


async def list_tags(*, session: AsyncSession, params: PageParams) -> Page[Tag]:
    page: Page[Tag] = await apaginate(session, select(Tag).order_by(col(Tag.id)), params)
    return page


async def check_unchanged(
    *, session: AsyncSession, tag_id: int, if_match: Condition | None
) -> Tag | None:
    """A write's If-Match: the tag locked and its ETag compared (a 412 when stale); the locked
    row, or None without a condition."""
    return await conditional.check(session, if_match, Tag, tag_id, TagRead)


async def update_tag(
    *, session: AsyncSession, tag_id: int, tag_in: TagUpdate, if_match: Condition | None = None
) -> Tag:
    await check_unchanged(session=session, tag_id=tag_id, if_match=if_match)
    changes = tag_in.model_dump(exclude_unset=True)
    return await update_or_404(session, Tag, tag_id, changes, unique=UNIQUE_FIELDS)


async def delete_tag(
    *, session: AsyncSession, tag_id: int, if_match: Condition | None = None
) -> None:
    db_tag = await check_unchanged(
        session=session, tag_id=tag_id, if_match=if_match
    ) or await get_tag(session=session, tag_id=tag_id)
    await session.delete(db_tag)
    await session.flush()
