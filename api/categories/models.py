"""The Category family: a tree of categories (a parent each, SET NULL when it goes)."""

from datetime import datetime
from typing import TYPE_CHECKING, Optional

from sqlmodel import Field, Relationship, SQLModel

from api.core.models import MAX_ID, NO_NUL, SLUG_PATTERN, created_at_field, slug_defaults_to

if TYPE_CHECKING:
    from api.products.models import Product

NAME_MAX = 100


class CategoryBase(SQLModel):
    name: str = Field(
        min_length=1, max_length=NAME_MAX, unique=True, schema_extra={"pattern": NO_NUL}
    )
    slug: str = Field(
        min_length=1, max_length=NAME_MAX, unique=True, schema_extra={"pattern": SLUG_PATTERN}
    )
    description: str | None = Field(default=None, max_length=2000, schema_extra={"pattern": NO_NUL})
    parent_id: int | None = Field(default=None, gt=0, le=MAX_ID)


class Category(CategoryBase, table=True):
    __tablename__ = "categories"

    id: int | None = Field(default=None, primary_key=True)
    parent_id: int | None = Field(
        default=None, foreign_key="categories.id", ondelete="SET NULL", index=True
    )
    created_at: datetime = created_at_field()

    # Never loaded implicitly: every query says what it loads.
    parent: Optional["Category"] = Relationship(
        back_populates="children",
        sa_relationship_kwargs={"remote_side": "Category.id", "lazy": "raise"},
    )
    # The database makes them top-level when their parent goes (ON DELETE SET NULL).
    children: list["Category"] = Relationship(
        back_populates="parent",
        sa_relationship_kwargs={"lazy": "raise", "order_by": "Category.id"},
        passive_deletes=True,
    )
    # The database uncategorises products when their category goes (ON DELETE SET NULL).
    products: list["Product"] = Relationship(
        back_populates="category", sa_relationship_kwargs={"lazy": "raise"}, passive_deletes=True
    )


class CategoryCreate(SQLModel):
    """The slug is derived from the name when it is not given."""

    name: str = Field(min_length=1, max_length=NAME_MAX, schema_extra={"pattern": NO_NUL})
    slug: str | None = Field(
        default=None, min_length=1, max_length=NAME_MAX, schema_extra={"pattern": SLUG_PATTERN}
    )
    description: str | None = Field(default=None, max_length=2000, schema_extra={"pattern": NO_NUL})
    parent_id: int | None = Field(default=None, gt=0, le=MAX_ID)

    _slug = slug_defaults_to("name", NAME_MAX)


class CategoryRead(CategoryBase):
    id: int
    created_at: datetime


class CategoryReadWithChildren(CategoryRead):
    children: list[CategoryRead]


class CategoryUpdate(SQLModel):
    """PATCH: omitted fields stay; `parent_id: null` makes it a top-level category."""

    name: str = Field(
        default=None, min_length=1, max_length=NAME_MAX, schema_extra={"pattern": NO_NUL}
    )
    slug: str = Field(
        default=None, min_length=1, max_length=NAME_MAX, schema_extra={"pattern": SLUG_PATTERN}
    )
    description: str | None = Field(default=None, max_length=2000, schema_extra={"pattern": NO_NUL})
    parent_id: int | None = Field(default=None, gt=0, le=MAX_ID)


UNIQUE_FIELDS = {"uq_categories_name": "name", "uq_categories_slug": "slug"}
REFERENCES = {"fk_categories_parent_id_categories": "parent_id"}
