"""The User family: UserBase (shared fields and their rules), User (the table), and the
request/response shapes derived from them."""

from datetime import datetime
from decimal import Decimal

from pydantic import EmailStr
from sqlalchemy import Column, Index, func, text
from sqlmodel import Field, SQLModel

from api.core.models import NO_NUL, created_at_field, updated_at_field

USERNAME_PATTERN = r"^[A-Za-z0-9_]+$"


class UserBase(SQLModel):
    username: str = Field(
        min_length=3, max_length=50, schema_extra={"pattern": USERNAME_PATTERN}, unique=True
    )
    email: EmailStr = Field(max_length=255)
    full_name: str | None = Field(default=None, max_length=100, schema_extra={"pattern": NO_NUL})
    bio: str | None = Field(default=None, max_length=1000, schema_extra={"pattern": NO_NUL})


class User(UserBase, table=True):
    __tablename__ = "users"
    # Emails are unique whatever their case: the database decides, on lower(email).
    __table_args__ = (Index("uq_users_email_lower", func.lower(Column("email")), unique=True),)

    id: int | None = Field(default=None, primary_key=True)
    hashed_password: str = Field(max_length=255)
    is_active: bool = Field(default=True, sa_column_kwargs={"server_default": text("true")})
    is_superuser: bool = Field(default=False, sa_column_kwargs={"server_default": text("false")})
    created_at: datetime = created_at_field()
    updated_at: datetime = updated_at_field()


class UserCreate(UserBase):
    password: str = Field(min_length=8, max_length=128)


class UserRead(UserBase):
    id: int
    is_active: bool
    is_superuser: bool
    created_at: datetime
    updated_at: datetime


class UserMeUpdate(SQLModel):
    """PATCH of one's own profile: every field optional, with the same rules. The non-nullable
    fields are typed as their value with a `None` default: omitting one keeps it, sending `null`
    is a 422. Nothing here grants a role or reactivates an account."""

    username: str = Field(
        default=None, min_length=3, max_length=50, schema_extra={"pattern": USERNAME_PATTERN}
    )
    email: EmailStr = Field(default=None, max_length=255)
    full_name: str | None = Field(default=None, max_length=100, schema_extra={"pattern": NO_NUL})
    bio: str | None = Field(default=None, max_length=1000, schema_extra={"pattern": NO_NUL})


class UserUpdate(UserMeUpdate):
    """PATCH by a superuser: the profile fields, and whether the account is active."""

    is_active: bool = Field(default=None)


class UserReplace(SQLModel):
    """PUT by a superuser: every editable field in full; absent optional ones are cleared."""

    username: str = Field(min_length=3, max_length=50, schema_extra={"pattern": USERNAME_PATTERN})
    email: EmailStr = Field(max_length=255)
    full_name: str | None = Field(default=None, max_length=100, schema_extra={"pattern": NO_NUL})
    bio: str | None = Field(default=None, max_length=1000, schema_extra={"pattern": NO_NUL})
    is_active: bool


class UserReadWithPosts(UserRead):
    posts: list["PostSummary"]


class PostSummary(SQLModel):
    id: int
    title: str
    slug: str
    status: str
    published_at: datetime | None


class ActiveCount(SQLModel):
    active_users: int


class Deactivated(SQLModel):
    deactivated: int


class InactiveDeleted(SQLModel):
    deleted: int
    kept_with_orders: int = Field(description="Inactive users kept because they have orders.")


class TopSpender(SQLModel):
    user_id: int
    username: str
    email: str
    order_count: int
    total_spent: Decimal = Field(description="Sum of the totals of their orders not cancelled.")


# A user with orders is history: the database refuses the delete (RESTRICT).
IN_USE = {"fk_orders_user_id_users": "The user has orders: deactivate them (soft delete) instead."}

# Unique constraint -> the field a 409 names.
UNIQUE_FIELDS = {"uq_users_username": "username", "uq_users_email_lower": "email"}
