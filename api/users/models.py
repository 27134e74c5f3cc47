"""The User family: UserBase (shared fields and their rules), User (the table), and the
request/response shapes derived from them."""

from datetime import datetime
from typing import Annotated

from pydantic import EmailStr
from sqlalchemy import Column, Index, func, text
from sqlmodel import Field, SQLModel

from api.core.models import (
    EVERY_FIELD_ANSWERED,
    UNCHANGED,
    created_at_field,
    text_field,
    updated_at_field,
)

USERNAME_PATTERN = r"^[A-Za-z0-9_]+$"

Username = Annotated[
    str, Field(min_length=3, max_length=50, schema_extra={"pattern": USERNAME_PATTERN})
]
Email = Annotated[EmailStr, Field(max_length=255)]
FullName = Annotated[str, text_field(100)]
Bio = Annotated[str, text_field(1000)]


class UserBase(SQLModel):
    username: Username = Field(unique=True)
    email: Email
    full_name: FullName | None = None
    bio: Bio | None = None


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
    model_config = EVERY_FIELD_ANSWERED

    id: int
    is_active: bool
    is_superuser: bool
    created_at: datetime
    updated_at: datetime


class UserMeUpdate(SQLModel):
    """PATCH of one's own profile: every field optional, with the same rules. The non-nullable
    fields are typed as their value with a `None` default: omitting one keeps it, sending `null`
    is a 422. Nothing here grants a role or reactivates an account."""

    username: Username = UNCHANGED
    email: Email = UNCHANGED
    full_name: FullName | None = None
    bio: Bio | None = None


class UserUpdate(UserMeUpdate):
    """PATCH by a superuser: the profile fields, and whether the account is active."""

    is_active: bool = UNCHANGED


class UserReplace(UserBase):
    """PUT by a superuser: every editable field in full; absent optional ones are cleared."""

    is_active: bool


class ActiveCount(SQLModel):
    active_users: int


class Deactivated(SQLModel):
    deactivated: int


# A user with orders is history: the database refuses the delete (RESTRICT).
IN_USE = "The user has orders: deactivate them (soft delete) instead."

# Unique constraint -> the field a 409 names.
UNIQUE_FIELDS = {"uq_users_username": "username", "uq_users_email_lower": "email"}
