"""The Post family (the blog): posts by a user, tagged through PostTagLink."""

from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

from sqlalchemy import CheckConstraint, Column, DateTime, String
from sqlmodel import Field, Relationship, SQLModel

from api.core.models import (
    UNCHANGED,
    created_at_field,
    slug_defaults_to,
    slug_field,
    text_field,
    updated_at_field,
)
from api.tags.models import TagRead
from api.users.models import UserRead

if TYPE_CHECKING:
    from api.tags.models import Tag

TITLE_MAX = 200
CONTENT_MAX = 100_000

Title = Annotated[str, text_field(TITLE_MAX, min_length=1)]
PostSlug = Annotated[str, slug_field(TITLE_MAX)]
Content = Annotated[str, text_field(CONTENT_MAX, min_length=1)]


class PostStatus(StrEnum):
    draft = "draft"
    published = "published"
    archived = "archived"


# The only moves a post's status can make.
TRANSITIONS = {
    PostStatus.draft: {PostStatus.published},
    PostStatus.published: {PostStatus.archived},
}


class PostTagLink(SQLModel, table=True):
    __tablename__ = "post_tags"

    post_id: int = Field(foreign_key="posts.id", ondelete="CASCADE", primary_key=True)
    tag_id: int = Field(foreign_key="tags.id", ondelete="CASCADE", primary_key=True, index=True)


class PostBase(SQLModel):
    title: Title
    slug: PostSlug = Field(unique=True)
    # text, not varchar: the length is the request's limit, not the column's.
    content: Content = Field(sa_type=String)


class Post(PostBase, table=True):
    __tablename__ = "posts"
    __table_args__ = (
        CheckConstraint("status IN ('draft', 'published', 'archived')", name="status_known"),
    )

    id: int | None = Field(default=None, primary_key=True)
    status: PostStatus = Field(default=PostStatus.draft, sa_type=String(20), index=True)
    view_count: int = Field(default=0)
    author_id: int = Field(foreign_key="users.id", ondelete="CASCADE", index=True)
    published_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    created_at: datetime = created_at_field()
    updated_at: datetime = updated_at_field()

    # Never loaded implicitly: every query says what it loads.
    tags: list["Tag"] = Relationship(
        link_model=PostTagLink, sa_relationship_kwargs={"lazy": "raise", "order_by": "Tag.id"}
    )


class PostCreate(PostBase):
    """The slug comes from the title when absent. Posts start as drafts of the caller."""

    # Optional in a request only (made from the title); mypy sees the narrower override.
    slug: PostSlug | None = None  # type: ignore[assignment]

    _slug = slug_defaults_to("title", TITLE_MAX)


class PostRead(PostBase):
    id: int
    status: PostStatus
    view_count: int
    author_id: int
    published_at: datetime | None
    created_at: datetime
    updated_at: datetime
    tags: list[TagRead]


# Fields that reads change: left out of a post's ETag, which is therefore weak.
COUNTERS = frozenset({"view_count"})


class PostUpdate(SQLModel):
    title: Title = UNCHANGED
    slug: PostSlug = UNCHANGED
    content: Content = UNCHANGED


class PostSummary(SQLModel):
    id: int
    title: str
    slug: str
    status: str
    published_at: datetime | None


class UserReadWithPosts(UserRead):
    posts: list[PostSummary]


UNIQUE_FIELDS = {"uq_posts_slug": "slug"}
# A link to a tag or a post that does not exist breaks these foreign keys: a 404 naming it.
TAG_REFERENCE = "fk_post_tags_tag_id_tags"
POST_REFERENCE = "fk_post_tags_post_id_posts"
