"""Products over HTTP: the public catalog, and a superuser's to manage."""

from decimal import Decimal
from typing import Annotated, Any, get_args

from fastapi import Path, Query, Response, status

from api.auth.dependencies import KEYED, admin_only
from api.categories import service as category_service
from api.categories.dependencies import CategoryId
from api.core import conditional
from api.core.conditional import IfMatch, IfNoneMatch
from api.core.db import ReadConnectionDep, ReadSessionDep, SessionDep
from api.core.errors import FieldError, InvalidQuery, responses
from api.core.idempotency import IdempotentRoute
from api.core.models import MAX_ID
from api.core.pagination import Page, PageParamsDep
from api.core.routing import api_router
from api.products import service
from api.products.models import (
    CategoryProducts,
    CategoryStats,
    Product,
    ProductCreate,
    ProductRead,
    ProductReadWithCategory,
    ProductSort,
    ProductUpdate,
    StockChange,
)

router = api_router(prefix="/products", tags=["products"], route_class=IdempotentRoute)
# The categories' routes that read or change their products.
categories_router = api_router(prefix="/categories", tags=["categories"])

# Names for the sort keys in generated clients, which cannot make one of "-price".
SORT_NAMES = {
    "x-enum-varnames": [
        key.removeprefix("-").upper() + ("_DESC" if key.startswith("-") else "")
        for key in get_args(ProductSort)
    ]
}
ProductId = Annotated[int, Path(gt=0, le=MAX_ID, description="The product id.")]
Price = Annotated[Decimal | None, Query(gt=0, max_digits=10, decimal_places=2)]


@router.post(
    "/",
    status_code=status.HTTP_201_CREATED,
    response_model=ProductRead,
    dependencies=[*admin_only, KEYED],
    responses=responses(401, 403, 409),
)
async def create_product(product_in: ProductCreate, session: SessionDep) -> Product:
    """Create a product; slug from the name when absent, SKU upper-cased (superuser)."""
    return await service.create_product(session=session, product_in=product_in)


@router.get("/", response_model=Page[ProductRead])
async def list_products(
    connection: ReadConnectionDep,
    params: PageParamsDep,
    category_id: Annotated[int | None, Query(gt=0, le=MAX_ID)] = None,
    min_price: Price = None,
    max_price: Price = None,
    is_active: bool | None = None,
    q: Annotated[str | None, Query(min_length=1, max_length=100, pattern=r"^[^\x00]*$")] = None,
    sort: Annotated[ProductSort, Query(json_schema_extra=SORT_NAMES)] = "id",
) -> Page[Any]:
    """List products: filter by category, price range, activity and text; sort by a known key."""
    if min_price is not None and max_price is not None and min_price > max_price:
        raise InvalidQuery(
            "min_price is above max_price.",
            errors=[FieldError(field="query.min_price", message="above max_price")],
        )
    query = service.filtered(
        category_id=category_id,
        min_price=min_price,
        max_price=max_price,
        is_active=is_active,
        q=q,
        sort=sort,
    )
    return await service.read_products(connection=connection, params=params, query=query)


@router.get("/with-categories", response_model=Page[ProductReadWithCategory])
async def list_with_categories(session: ReadSessionDep, params: PageParamsDep) -> Page[Product]:
    """Active products, each with its category."""
    return await service.list_with_categories(session=session, params=params)


@router.get(
    "/low-stock",
    response_model=Page[ProductRead],
    dependencies=admin_only,
    responses=responses(401, 403),
)
async def low_stock(
    session: SessionDep,
    params: PageParamsDep,
    threshold: Annotated[int, Query(ge=1, le=MAX_ID)] = 10,
) -> Page[Product]:
    """Active products with less than `threshold` in stock, fewest first (superuser)."""
    return await service.low_stock(session=session, params=params, threshold=threshold)


@router.get("/by-category-stats", dependencies=admin_only, responses=responses(401, 403))
async def by_category_stats(session: SessionDep) -> list[CategoryStats]:
    """Count and average, lowest and highest price of active products per category (superuser)."""
    return await service.category_stats(session=session)


@router.get("/by-sku/{sku}", response_model=ProductRead, responses=responses(404))
async def get_by_sku(
    sku: Annotated[str, Path(max_length=50, pattern=r"^[A-Za-z0-9-]+$")],
    connection: ReadConnectionDep,
) -> Any:
    """Read one product by SKU (any case)."""
    return await service.read_product_by(connection=connection, field="sku", value=sku)


@router.get("/by-slug/{slug}", response_model=ProductRead, responses=responses(404))
async def get_by_slug(
    slug: Annotated[str, Path(max_length=200, pattern=r"^[a-z0-9-]+$")],
    connection: ReadConnectionDep,
) -> Any:
    """Read one product by slug."""
    return await service.read_product_by(connection=connection, field="slug", value=slug)


@router.get("/{product_id}", response_model=ProductRead, responses=conditional.read_responses(404))
async def get_product(
    product_id: ProductId, connection: ReadConnectionDep, if_none_match: IfNoneMatch
) -> Response:
    """Read one product (ETag; If-None-Match answers 304 when it is unchanged)."""
    product = await service.read_product(connection=connection, product_id=product_id)
    return conditional.answer(ProductRead, product, if_none_match)


@router.patch(
    "/{product_id}",
    response_model=ProductRead,
    dependencies=admin_only,
    responses=conditional.write_responses(401, 403, 404, 409),
)
async def update_product(
    product_id: ProductId, product_in: ProductUpdate, session: SessionDep, if_match: IfMatch
) -> Response:
    """Change some of a product's fields; If-Match makes it conditional (superuser)."""
    product = await service.update_product(
        session=session, product_id=product_id, product_in=product_in, if_match=if_match
    )
    return conditional.answer(ProductRead, product)


@router.delete(
    "/{product_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=admin_only,
    responses=conditional.write_responses(401, 403, 404, 409, success=None),
)
async def delete_product(product_id: ProductId, session: SessionDep, if_match: IfMatch) -> None:
    """Delete a product; one on an order is a 409: deactivate it instead (superuser)."""
    await service.delete_product(session=session, product_id=product_id, if_match=if_match)


@router.post(
    "/{product_id}/stock",
    response_model=ProductRead,
    dependencies=[*admin_only, KEYED],
    responses=conditional.write_responses(401, 403, 404, 409),
)
async def change_stock(
    product_id: ProductId, stock: StockChange, session: SessionDep, if_match: IfMatch
) -> Response:
    """Add to or take from the stock; it never goes below zero (409 naming what is left)."""
    product = await service.change_stock(
        session=session, product_id=product_id, change=stock.change, if_match=if_match
    )
    return conditional.answer(ProductRead, product)


@categories_router.get(
    "/{category_id}/products", response_model=CategoryProducts, responses=responses(404)
)
async def category_products(
    category_id: CategoryId, session: ReadSessionDep, params: PageParamsDep
) -> CategoryProducts:
    """A category and a page of its products (two statements and a count, whatever the page)."""
    category = await category_service.get_category(session=session, category_id=category_id)
    query = service.filtered(category_id=category_id)
    page = await service.list_products(session=session, params=params, query=query)
    return CategoryProducts.model_validate(
        {"category": category, "product_count": page.total, "products": page}
    )


@categories_router.delete(
    "/{category_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=admin_only,
    responses=conditional.write_responses(401, 403, 404, 409, success=None),
)
async def delete_category(category_id: CategoryId, session: SessionDep, if_match: IfMatch) -> None:
    """Delete a category; its children become top-level (superuser)."""
    await service.delete_category(session=session, category_id=category_id, if_match=if_match)
