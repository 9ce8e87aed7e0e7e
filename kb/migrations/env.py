"""Alembic environment: async engines, the URL from the caller's config."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from kb.db import create_engine
from kb.errors import MigrationError
from kb.models import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
        if connection.dialect.name == "sqlite":
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise MigrationError(broken)


async def _run_async() -> None:
    # SQLite rebuilds a table to alter it (batch mode): with foreign keys enforced, dropping the
    # old table would delete the rows that reference it (ON DELETE CASCADE). They are off while
    # migrating, and checked before the commit.
    engine = create_engine(context.config.get_main_option("sqlalchemy.url"), foreign_keys=False)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=context.config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
