"""Data: the four default categories of the shop.

Kind: expand (adds; the previous release runs on the new schema)
Revision ID: de4ab70c391e
Revises: 69a17d043a69
Create Date: 2026-11-22 03:17:57.106729+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "de4ab70c391e"
down_revision: str | None = "69a17d043a69"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


DEFAULTS = [
    ("Electronics", "electronics", "Electronic devices and accessories"),
    ("Clothing", "clothing", "Apparel and fashion items"),
    ("Books", "books", "Physical and digital books"),
    ("Home & Garden", "home-garden", "Home improvement and garden supplies"),
]

# The table as it is at this revision, not as the models say it is later.
categories = sa.table(
    "categories",
    sa.column("name", sa.String),
    sa.column("slug", sa.String),
    sa.column("description", sa.String),
)


def upgrade() -> None:
    # No explicit ids: the identity sequence hands them out, so later inserts do not collide.
    op.bulk_insert(
        categories,
        [{"name": name, "slug": slug, "description": text} for name, slug, text in DEFAULTS],
    )


def downgrade() -> None:
    slugs = [slug for _, slug, _ in DEFAULTS]
    op.execute(categories.delete().where(categories.c.slug.in_(slugs)))
