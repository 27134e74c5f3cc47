"""Tags over HTTP: public to read, a superuser's to write."""

from fastapi import Response, status

from api.auth.dependencies import KEYED, admin_only
from api.core import conditional
from api.core.conditional import IfMatch, IfNoneMatch
from api.core.db import ReadSessionDep, SessionDep
from api.core.errors import responses
from api.core.idempotency import IdempotentRoute
from api.core.pagination import Page, PageParamsDep
from api.core.routing import api_router
from api.tags import service
from api.tags.dependencies import TagId
from api.tags.models import Tag, TagCreate, TagRead, TagUpdate

router = api_router(prefix="/tags", tags=["tags"], route_class=IdempotentRoute)


@router.post(
    "/",
    status_code=status.HTTP_201_CREATED,
    response_model=TagRead,
    dependencies=[*admin_only, KEYED],
    responses=responses(401, 403, 409),
)
async def create_tag(tag_in: TagCreate, session: SessionDep) -> Tag:
    """Create a tag; the slug comes from the name when not given (superuser)."""
    return await service.create_tag(session=session, tag_in=tag_in)


@router.get("/", response_model=Page[TagRead])
async def list_tags(session: ReadSessionDep, params: PageParamsDep) -> Page[Tag]:
    """List tags, oldest first."""
    return await service.list_tags(session=session, params=params)


@router.get("/{tag_id}", response_model=TagRead, responses=conditional.read_responses(404))
async def get_tag(tag_id: TagId, session: ReadSessionDep, if_none_match: IfNoneMatch) -> Response:
    """Read one tag (ETag; If-None-Match answers 304 when it is unchanged)."""
    tag = await service.get_tag(session=session, tag_id=tag_id)
    return conditional.answer(TagRead, tag, if_none_match)


@router.patch(
    "/{tag_id}",
    response_model=TagRead,
    dependencies=admin_only,
    responses=conditional.write_responses(401, 403, 404, 409),
)
async def update_tag(
    tag_id: TagId, tag_in: TagUpdate, session: SessionDep, if_match: IfMatch
) -> Response:
    """Rename a tag or change its slug; If-Match makes it conditional (superuser)."""
    tag = await service.update_tag(session=session, tag_id=tag_id, tag_in=tag_in, if_match=if_match)
    return conditional.answer(TagRead, tag)


@router.delete(
    "/{tag_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=admin_only,
    responses=conditional.write_responses(401, 403, 404, success=None),
)
async def delete_tag(tag_id: TagId, session: SessionDep, if_match: IfMatch) -> None:
    """Delete a tag (superuser)."""
    await service.delete_tag(session=session, tag_id=tag_id, if_match=if_match)
