"""Alembic owns the schema: the round trip works on an empty database, and the models and the
migrations agree (autogenerate finds nothing to do)."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from api.models import metadata
from tests.support.database import Database, alembic

MakeDatabase = Callable[[str], Awaitable[Database]]


async def inspect_database(url: str, check: Callable[[Connection], Any]) -> Any:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(check)
    finally:
        await engine.dispose()


def tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def drift(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    differences: list[Any] = compare_metadata(context, metadata)
    return differences


async def test_upgrade_downgrade_upgrade_on_an_empty_database(make_database: MakeDatabase) -> None:
    db = await make_database("migrations")

    await asyncio.to_thread(alembic, db.url, "upgrade", "head")
    assert await inspect_database(db.url, tables) == {"alembic_version", *metadata.tables}

    await asyncio.to_thread(alembic, db.url, "downgrade", "base")
    assert await inspect_database(db.url, tables) == {"alembic_version"}

    await asyncio.to_thread(alembic, db.url, "upgrade", "head")
    assert await inspect_database(db.url, tables) == {"alembic_version", *metadata.tables}
    assert await inspect_database(db.url, drift) == []


async def test_models_and_migrations_do_not_drift(database: Database) -> None:
    assert await inspect_database(database.url, drift) == []


async def test_alembic_check_agrees(database: Database) -> None:
    result = await asyncio.to_thread(alembic, database.url, "check")
    assert "No new upgrade operations detected" in result.stdout + result.stderr


def test_revision_files_are_named_by_date_and_slug() -> None:
    from tests.support.app import ROOT

    names = [p.name for p in (ROOT / "alembic" / "versions").glob("*.py")]
    assert names
    for name in names:
        date, _, rest = name.partition("-")
        assert len(date) == len("2026_11_22_0155"), name
        assert date.replace("_", "").isdigit(), name
        assert "_" in rest, name
