"""The Category family: a tree of categories (a parent each, SET NULL when it goes)."""

from datetime import datetime
from typing import Annotated, Optional

from sqlmodel import Field, Relationship, SQLModel

from api.core.models import (
    EVERY_FIELD_ANSWERED,
    UNCHANGED,
    RowId,
    created_at_field,
    slug_defaults_to,
    slug_field,
    text_field,
)

NAME_MAX = 100

CategoryName = Annotated[str, text_field(NAME_MAX, min_length=1)]
CategorySlug = Annotated[str, slug_field(NAME_MAX)]
Description = Annotated[str, text_field(2000)]


class CategoryBase(SQLModel):
    name: CategoryName = Field(unique=True)
    slug: CategorySlug = Field(unique=True)
    description: Description | None = None
    parent_id: RowId | None = Field(
        default=None, foreign_key="categories.id", ondelete="SET NULL", index=True
    )


class Category(CategoryBase, table=True):
    __tablename__ = "categories"

    id: int | None = Field(default=None, primary_key=True)
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


class CategoryCreate(CategoryBase):
    """The slug is derived from the name when it is not given."""

    # Optional in a request only (made from the name); mypy sees the narrower override.
    slug: CategorySlug | None = None  # type: ignore[assignment]

    _slug = slug_defaults_to("name", NAME_MAX)


class CategoryRead(CategoryBase):
    model_config = EVERY_FIELD_ANSWERED

    id: int
    created_at: datetime


class CategoryReadWithChildren(CategoryRead):
    children: list[CategoryRead]


class CategoryUpdate(SQLModel):
    """PATCH: omitted fields stay; `parent_id: null` makes it a top-level category."""

    name: CategoryName = UNCHANGED
    slug: CategorySlug = UNCHANGED
    description: Description | None = None
    parent_id: RowId | None = None


UNIQUE_FIELDS = {"uq_categories_name": "name", "uq_categories_slug": "slug"}
REFERENCES = {"fk_categories_parent_id_categories": "parent_id"}
