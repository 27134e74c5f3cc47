"""Tags over HTTP: public to read, a superuser's to write."""

from fastapi import APIRouter, status

from api.auth.dependencies import KEYED, admin_only
from api.core.db import ReadSessionDep, SessionDep
from api.core.errors import responses
from api.core.idempotency import IdempotentRoute
from api.core.pagination import Page, PageParamsDep
from api.tags import service
from api.tags.dependencies import TagId
from api.tags.models import Tag, TagCreate, TagRead, TagUpdate

router = APIRouter(prefix="/tags", tags=["tags"], route_class=IdempotentRoute)


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


@router.get("/{tag_id}", response_model=TagRead, responses=responses(404))
async def get_tag(tag_id: TagId, session: ReadSessionDep) -> Tag:
    """Read one tag."""
    return await service.get_tag(session=session, tag_id=tag_id)


@router.patch(
    "/{tag_id}",
    response_model=TagRead,
    dependencies=admin_only,
    responses=responses(401, 403, 404, 409),
)
async def update_tag(tag_id: TagId, tag_in: TagUpdate, session: SessionDep) -> Tag:
    """Rename a tag or change its slug (superuser)."""
    return await service.update_tag(session=session, tag_id=tag_id, tag_in=tag_in)


@router.delete(
    "/{tag_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=admin_only,
    responses=responses(401, 403, 404),
)
async def delete_tag(tag_id: TagId, session: SessionDep) -> None:
    """Delete a tag (superuser)."""
    await service.delete_tag(session=session, tag_id=tag_id)
