"""The Tag family: blog tags, unique by name and by slug."""

from sqlmodel import Field, SQLModel

from api.core.models import NO_NUL, SLUG_PATTERN, slug_defaults_to

NAME_MAX = 50


class TagBase(SQLModel):
    name: str = Field(
        min_length=1, max_length=NAME_MAX, unique=True, schema_extra={"pattern": NO_NUL}
    )
    slug: str = Field(
        min_length=1, max_length=NAME_MAX, unique=True, schema_extra={"pattern": SLUG_PATTERN}
    )


class Tag(TagBase, table=True):
    __tablename__ = "tags"

    id: int | None = Field(default=None, primary_key=True)


class TagCreate(SQLModel):
    """The slug is derived from the name when it is not given."""

    name: str = Field(min_length=1, max_length=NAME_MAX, schema_extra={"pattern": NO_NUL})
    slug: str | None = Field(
        default=None, min_length=1, max_length=NAME_MAX, schema_extra={"pattern": SLUG_PATTERN}
    )

    _slug = slug_defaults_to("name", NAME_MAX)


class TagRead(TagBase):
    id: int


class TagUpdate(SQLModel):
    name: str = Field(
        default=None, min_length=1, max_length=NAME_MAX, schema_extra={"pattern": NO_NUL}
    )
    slug: str = Field(
        default=None, min_length=1, max_length=NAME_MAX, schema_extra={"pattern": SLUG_PATTERN}
    )


UNIQUE_FIELDS = {"uq_tags_name": "name", "uq_tags_slug": "slug"}
