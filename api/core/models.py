"""Shared model plumbing: the naming convention (set before any table is defined) and columns.

Every resource's models module imports this module first, so constraint names are stable and
predictable (`uq_users_username`), which the unique-violation → 409 mapping relies on.
"""

from typing import Any

from sqlalchemy import Column, DateTime, func
from sqlmodel import Field, SQLModel

SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def created_at_field() -> Any:
    return Field(
        default=None,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


def updated_at_field() -> Any:
    return Field(
        default=None,
        sa_column=Column(
            DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
        ),
    )


# PostgreSQL text cannot hold NUL: stored free-text fields carry this pattern, so a NUL is a 422
# declared in the schema rather than a database error.
NO_NUL = r"^[^\x00]*$"
