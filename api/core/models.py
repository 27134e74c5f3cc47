"""Shared model plumbing: the naming convention (set before any table is defined) and columns.

Every resource's models module imports this module first, so constraint names are stable and
predictable (`uq_users_username`), which the unique-violation → 409 mapping relies on.
"""

from typing import Annotated, Any

from pydantic import ConfigDict, WithJsonSchema, model_validator
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

SLUG_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
MAX_ID = 2_147_483_647  # ids are PostgreSQL integers

# An id a request body names (a product, a category, a user).
RowId = Annotated[int, Field(gt=0, le=MAX_ID)]


def text_field(max_length: int, *, min_length: int | None = None) -> Any:
    """The constraints of a stored free-text field, for an `Annotated` type of a family."""
    return Field(min_length=min_length, max_length=max_length, schema_extra={"pattern": NO_NUL})


def slug_field(max_length: int) -> Any:
    """The constraints of a URL slug, for an `Annotated` type of a family."""
    return Field(min_length=1, max_length=max_length, schema_extra={"pattern": SLUG_PATTERN})


# The default of a PATCH field that may be left out but not sent as null: the field keeps its
# type (a null is a 422) and an absent one is not set (`exclude_unset`), so it stays as it is.
# Typed Any because None is not a value of the field's type.
UNCHANGED: Any = None

# For a read model that shares fields with its table: a column's default (the table's concern)
# does not make the field optional in the document, since every answer carries every field.
# (Any: SQLModel types `model_config` as its own TypedDict, which holds pydantic's keys.)
EVERY_FIELD_ANSWERED: Any = ConfigDict(json_schema_serialization_defaults_required=True)


def slug_defaults_to(source: str, max_length: int) -> Any:
    """A model validator for create bodies: an absent `slug` is made from the `source` field."""

    def derive(model: Any) -> Any:
        if model.slug is None:
            model.slug = slug_from(getattr(model, source), max_length)
        return model

    return model_validator(mode="after")(derive)


def slug_from(text: str, max_length: int) -> str:
    """A URL slug for `text` (python-slugify), bounded; "item" when nothing sluggable is left."""
    from slugify import slugify

    return slugify(text, max_length=max_length, word_boundary=True) or "item"


# Money is Decimal end to end and a decimal string in JSON, never a number a float would round.
# The answers' schemas say so, so that generated clients and validators know the form.


def money(digits: int) -> WithJsonSchema:
    """An answer's amount of a column NUMERIC(digits, 2): always two decimals."""
    return WithJsonSchema(
        {
            "type": "string",
            "format": "decimal",
            "pattern": rf"^-?\d{{1,{digits - 2}}}\.\d{{2}}$",
            "examples": ["12.50"],
        },
        mode="serialization",
    )


# An answer's decimal computed by PostgreSQL at its own scale (an average).
DECIMAL = WithJsonSchema(
    {"type": "string", "format": "decimal", "pattern": r"^-?\d+(\.\d+)?$"},
    mode="serialization",
)
