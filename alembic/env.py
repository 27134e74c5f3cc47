"""Alembic environment: async, on SQLModel.metadata, straight to PostgreSQL (never PgBouncer), as
the schema's owner. With DB_APP_ROLE set, every upgrade ends by granting that role the rows of
every table (api/dbroles.py), in the same transaction."""

import asyncio
from logging.config import fileConfig

from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from alembic import context
from api.core.config import get_settings
from api.dbroles import grant_app_role
from api.models import metadata

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    return config.attributes.get("database_url") or get_settings().direct_database_url


def app_role() -> str | None:
    if "database_url" in config.attributes:  # run from code: the caller says
        role: str | None = config.attributes.get("app_role")
        return role
    return get_settings().db_app_role


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()
        role = app_role()
        if role and context.get_context().get_current_revision() is not None:
            grant_app_role(connection, role)


async def run_async_migrations() -> None:
    engine = create_async_engine(database_url(), poolclass=pool.NullPool, hide_parameters=True)
    async with engine.connect() as connection:
        await connection.run_sync(do_run_migrations)
    await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_async_migrations())
