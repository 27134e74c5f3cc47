"""The Tag family: blog tags, unique by name and by slug."""

from typing import Annotated

from sqlmodel import Field, SQLModel

from api.core.models import UNCHANGED, slug_defaults_to, slug_field, text_field

NAME_MAX = 50

TagName = Annotated[str, text_field(NAME_MAX, min_length=1)]
TagSlug = Annotated[str, slug_field(NAME_MAX)]


class TagBase(SQLModel):
    name: TagName = Field(unique=True)
    slug: TagSlug = Field(unique=True)


class Tag(TagBase, table=True):
    __tablename__ = "tags"

    id: int | None = Field(default=None, primary_key=True)


class TagCreate(TagBase):
    """The slug is derived from the name when it is not given."""

    # Optional in a request only (made from the name); mypy sees the narrower override.
    slug: TagSlug | None = None  # type: ignore[assignment]

    _slug = slug_defaults_to("name", NAME_MAX)


class TagRead(TagBase):
    id: int


class TagUpdate(SQLModel):
    name: TagName = UNCHANGED
    slug: TagSlug = UNCHANGED


UNIQUE_FIELDS = {"uq_tags_name": "name", "uq_tags_slug": "slug"}
