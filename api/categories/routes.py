"""Categories over HTTP: public to read, a superuser's to write."""

from fastapi import Response, status

from api.auth.dependencies import KEYED, admin_only
from api.categories import service
from api.categories.dependencies import CategoryId
from api.categories.models import (
    Category,
    CategoryCreate,
    CategoryRead,
    CategoryReadWithChildren,
    CategoryUpdate,
)
from api.core import conditional
from api.core.conditional import IfMatch, IfNoneMatch
from api.core.db import ReadSessionDep, SessionDep
from api.core.errors import responses
from api.core.idempotency import IdempotentRoute
from api.core.pagination import Page, PageParamsDep
from api.core.routing import api_router

router = api_router(prefix="/categories", tags=["categories"], route_class=IdempotentRoute)


@router.post(
    "/",
    status_code=status.HTTP_201_CREATED,
    response_model=CategoryRead,
    dependencies=[*admin_only, KEYED],
    responses=responses(401, 403, 409),
)
async def create_category(category_in: CategoryCreate, session: SessionDep) -> Category:
    """Create a category, optionally under a parent (superuser)."""
    return await service.create_category(session=session, category_in=category_in)


@router.get("/", response_model=Page[CategoryRead])
async def list_categories(session: ReadSessionDep, params: PageParamsDep) -> Page[Category]:
    """List categories, oldest first."""
    return await service.list_categories(session=session, params=params)


@router.get(
    "/{category_id}",
    response_model=CategoryReadWithChildren,
    responses=conditional.read_responses(404),
)
async def get_category(
    category_id: CategoryId, session: ReadSessionDep, if_none_match: IfNoneMatch
) -> Response:
    """Read one category with its children (ETag: it changes with them; If-None-Match)."""
    category = await service.get_category(session=session, category_id=category_id)
    return conditional.answer(CategoryReadWithChildren, category, if_none_match)


@router.patch(
    "/{category_id}",
    response_model=CategoryReadWithChildren,
    dependencies=admin_only,
    responses=conditional.write_responses(401, 403, 404, 409),
)
async def update_category(
    category_id: CategoryId, category_in: CategoryUpdate, session: SessionDep, if_match: IfMatch
) -> Response:
    """Change a category; a parent that is the category itself or below it is a 422 (superuser)."""
    category = await service.update_category(
        session=session, category_id=category_id, category_in=category_in, if_match=if_match
    )
    return conditional.answer(CategoryReadWithChildren, category)
