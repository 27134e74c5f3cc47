"""Categories over HTTP: public to read, a superuser's to write."""

from typing import Annotated

from fastapi import APIRouter, Path, status

from api.auth.dependencies import admin_only
from api.categories import service
from api.categories.models import (
    Category,
    CategoryCreate,
    CategoryRead,
    CategoryReadWithChildren,
    CategoryUpdate,
)
from api.core.db import ReadSessionDep, SessionDep
from api.core.errors import responses
from api.core.models import MAX_ID
from api.core.pagination import Page, PageParamsDep
from api.products import service as product_service
from api.products.models import CategoryProducts

router = APIRouter(prefix="/categories", tags=["categories"])

CategoryId = Annotated[int, Path(gt=0, le=MAX_ID, description="The category id.")]


@router.post(
    "/",
    status_code=status.HTTP_201_CREATED,
    response_model=CategoryRead,
    dependencies=admin_only,
    responses=responses(401, 403, 409),
)
async def create_category(category_in: CategoryCreate, session: SessionDep) -> Category:
    """Create a category, optionally under a parent (superuser)."""
    return await service.create_category(session=session, category_in=category_in)


@router.get("/", response_model=Page[CategoryRead])
async def list_categories(session: ReadSessionDep, params: PageParamsDep) -> Page[Category]:
    """List categories, oldest first."""
    return await service.list_categories(session=session, params=params)


@router.get("/{category_id}", response_model=CategoryReadWithChildren, responses=responses(404))
async def get_category(category_id: CategoryId, session: ReadSessionDep) -> Category:
    """Read one category with its children."""
    return await service.get_category(session=session, category_id=category_id)


@router.get("/{category_id}/products", response_model=CategoryProducts, responses=responses(404))
async def category_products(
    category_id: CategoryId, session: ReadSessionDep, params: PageParamsDep
) -> CategoryProducts:
    """A category and a page of its products (two statements and a count, whatever the page)."""
    category = await service.get_category(session=session, category_id=category_id)
    query = product_service.filtered(category_id=category_id)
    page = await product_service.list_products(session=session, params=params, query=query)
    return CategoryProducts.model_validate(
        {"category": category, "product_count": page.total, "products": page}
    )


@router.patch(
    "/{category_id}",
    response_model=CategoryReadWithChildren,
    dependencies=admin_only,
    responses=responses(401, 403, 404, 409),
)
async def update_category(
    category_id: CategoryId, category_in: CategoryUpdate, session: SessionDep
) -> Category:
    """Change a category; a parent that is the category itself or below it is a 422 (superuser)."""
    return await service.update_category(
        session=session, category_id=category_id, category_in=category_in
    )


@router.delete(
    "/{category_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=admin_only,
    responses=responses(401, 403, 404),
)
async def delete_category(category_id: CategoryId, session: SessionDep) -> None:
    """Delete a category; its children become top-level (superuser)."""
    await service.delete_category(session=session, category_id=category_id)
