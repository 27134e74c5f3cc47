"""Login throttles by account and client address: longer keys (`address:<address> <account>`
beside `account:<account>`), and the time until which an address the account logged in from
stays known.

Kind: expand (widens and adds; the previous release runs on the new schema, counting under its
own keys until it is replaced)
Revision ID: 1e03f8be1b10
Revises: 7b1e4d2c9a10
Create Date: 2026-12-03 23:30:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "1e03f8be1b10"
down_revision: str | None = "7b1e4d2c9a10"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column(
        "login_throttles",
        "key",
        existing_type=sqlmodel.sql.sqltypes.AutoString(length=255),
        type_=sqlmodel.sql.sqltypes.AutoString(length=320),
        existing_nullable=False,
    )
    op.add_column(
        "login_throttles", sa.Column("known_until", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("login_throttles", "known_until")
    op.execute("DELETE FROM login_throttles WHERE length(key) > 255")
    op.alter_column(
        "login_throttles",
        "key",
        existing_type=sqlmodel.sql.sqltypes.AutoString(length=320),
        type_=sqlmodel.sql.sqltypes.AutoString(length=255),
        existing_nullable=False,
    )
