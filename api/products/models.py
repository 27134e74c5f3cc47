"""The Product family. Money is Decimal end to end (a decimal string in JSON); price and stock
are guarded by CHECK constraints as well as by validation."""

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Literal, Optional

from pydantic import BeforeValidator, WithJsonSchema
from sqlalchemy import CheckConstraint, Index, UniqueConstraint
from sqlmodel import Field, Relationship, SQLModel

from api.categories.models import CategoryRead
from api.core.models import (
    DECIMAL,
    EVERY_FIELD_ANSWERED,
    MAX_ID,
    UNCHANGED,
    RowId,
    created_at_field,
    money,
    slug_defaults_to,
    slug_field,
    text_field,
    updated_at_field,
)
from api.core.pagination import Page

if TYPE_CHECKING:
    from api.categories.models import Category

NAME_MAX = 200
SKU_PATTERN = r"^[A-Z0-9]+(?:-[A-Z0-9]+)*$"
ProductSort = Literal["id", "price", "-price", "name", "-name", "created_at", "-created_at"]


def _upper(value: object) -> object:
    return value.strip().upper() if isinstance(value, str) else value


# The most a product's stock may be set or raised to (create, update, a change), far below the
# integer column's limit: a stock at the limit would overflow (a 500) when a change or a
# cancelled order's items were added to it. A cancelled order puts back at most
# MAX_LINES x MAX_QUANTITY, so a stored stock may pass MAX_STOCK by that much: answers and takes
# allow it.
MAX_STOCK = 1_000_000_000

ProductName = Annotated[str, text_field(NAME_MAX, min_length=1)]
ProductSlug = Annotated[str, slug_field(NAME_MAX)]
Description = Annotated[str, text_field(5000)]
# Sent as a number or a decimal string; answered as a string with two decimals.
Price = Annotated[
    Decimal,
    Field(gt=0, max_digits=10, decimal_places=2),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0, "maximum": 99999999.99},
                {"type": "string", "pattern": r"^\d{1,8}(\.\d{1,2})?$"},
            ],
            "description": "More than 0, at most 8 digits before the point and 2 after.",
        },
        mode="validation",
    ),
    money(10),
]
# Upper-cased before it is checked, so "ab-1" is stored as "AB-1".
Sku = Annotated[
    str,
    Field(min_length=1, max_length=50, schema_extra={"pattern": SKU_PATTERN}),
    BeforeValidator(_upper),
]
# What a request may set; a stored stock may exceed it (above).
Stock = Annotated[int, Field(ge=0, le=MAX_STOCK)]


class ProductBase(SQLModel):
    name: ProductName
    slug: ProductSlug = Field(unique=True)
    description: Description | None = None
    price: Price
    sku: Sku = Field(unique=True)
    # What a row may hold; a request sets at most MAX_STOCK (Stock).
    stock_quantity: int = Field(default=0, ge=0, le=MAX_ID)
    is_active: bool = True
    # Indexed by ix_products_category_id_price, which serves lookups by category too.
    category_id: RowId | None = Field(
        default=None, foreign_key="categories.id", ondelete="SET NULL"
    )


class Product(ProductBase, table=True):
    __tablename__ = "products"
    __table_args__ = (
        # "No category" is one group: two uncategorised products cannot share a name.
        UniqueConstraint("name", "category_id", postgresql_nulls_not_distinct=True),
        CheckConstraint("price > 0", name="price_positive"),
        CheckConstraint("stock_quantity >= 0", name="stock_not_negative"),
        Index("ix_products_category_id_price", "category_id", "price"),
    )

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = created_at_field()
    updated_at: datetime = updated_at_field()

    category: Optional["Category"] = Relationship(sa_relationship_kwargs={"lazy": "raise"})


class ProductCreate(ProductBase):
    """The slug comes from the name when absent; the SKU is upper-cased before it is checked."""

    # Optional in a request only (made from the name); mypy sees the narrower override.
    slug: ProductSlug | None = None  # type: ignore[assignment]
    stock_quantity: Stock = 0

    _slug = slug_defaults_to("name", NAME_MAX)


class ProductRead(ProductBase):
    model_config = EVERY_FIELD_ANSWERED

    id: int
    created_at: datetime
    updated_at: datetime


class ProductReadWithCategory(ProductRead):
    category: CategoryRead | None


class CategoryProducts(SQLModel):
    """A category and one page of its products."""

    category: CategoryRead
    product_count: int
    products: Page[ProductRead]


class ProductUpdate(SQLModel):
    """PATCH: omitted fields stay; `category_id: null` uncategorises."""

    name: ProductName = UNCHANGED
    slug: ProductSlug = UNCHANGED
    description: Description | None = None
    price: Price = UNCHANGED
    sku: Sku = UNCHANGED
    stock_quantity: Stock = UNCHANGED
    is_active: bool = UNCHANGED
    category_id: RowId | None = None


class StockChange(SQLModel):
    change: int = Field(
        ge=-MAX_STOCK, le=MAX_STOCK, description="Added to the stock (negative takes)."
    )


class CategoryStats(SQLModel):
    category: str
    product_count: int
    avg_price: Annotated[Decimal, DECIMAL]
    min_price: Annotated[Decimal, money(10)]
    max_price: Annotated[Decimal, money(10)]


UNIQUE_FIELDS = {
    "uq_products_slug": "slug",
    "uq_products_sku": "sku",
    "uq_products_name": "name",
}
REFERENCES = {"fk_products_category_id_categories": "category_id"}
# A product on an order is history: the database refuses the delete (RESTRICT).
IN_USE = "The product is on orders: deactivate it instead."
