"""Tags: queries and rules. Functions flush, never commit."""

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.core.db import constraint_errors, get_or_404, update_or_404
from api.core.pagination import Page, PageParams, apaginate
from api.tags.models import UNIQUE_FIELDS, Tag, TagCreate, TagUpdate


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


async def update_tag(*, session: AsyncSession, tag_id: int, tag_in: TagUpdate) -> Tag:
    changes = tag_in.model_dump(exclude_unset=True)
    return await update_or_404(session, Tag, tag_id, changes, unique=UNIQUE_FIELDS)


async def delete_tag(*, session: AsyncSession, tag_id: int) -> None:
    db_tag = await get_tag(session=session, tag_id=tag_id)
    await session.delete(db_tag)
    await session.flush()
