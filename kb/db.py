"""Engine, sessions and migrations.

SQLite gets WAL mode, foreign keys and a busy timeout on every connection, and every transaction
begins with ``BEGIN IMMEDIATE`` (SQLAlchemy's documented recipe: the driver's own implicit BEGIN
is switched off and the engine's ``begin`` event emits ours). A transaction thus holds the write
lock from its first statement: concurrent writers queue on the busy timeout, one after the other,
and what a transaction reads cannot go stale before it writes. (The driver's implicit BEGIN
came only before the first write, so two first messages of one customer could both insert them;
with a plain deferred BEGIN, a transaction that read and then writes after another one committed
fails with "database is locked" whatever the timeout.) The price: a read-only transaction takes
the lock too, so every transaction must stay short (services keep theirs short, and none stays
open across a Bot API call).

PostgreSQL needs nothing but its URL. Migrations are Alembic's, shipped inside the package.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from kb import sqlite_driver

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


SQLITE_BUSY_TIMEOUT_MS = 30_000  # how long a transaction waits for the write lock before it fails


def _sqlite_on_connect(*, foreign_keys: bool) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # no implicit BEGIN from the driver: see _sqlite_begin
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return on_connect


def _sqlite_begin(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def ensure_sqlite_dir(url: str) -> None:
    """Create the folder of a file-based SQLite database, so a fresh checkout just works."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def create_engine(url: str, *, echo: bool = False, foreign_keys: bool = True) -> AsyncEngine:
    """The async engine for ``url``. ``foreign_keys=False`` (SQLite only, for migrations): they
    are not enforced, so dropping a table that a migration rebuilds cascades no deletes."""
    ensure_sqlite_dir(url)
    options: dict[str, Any] = {}
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.get_driver_name() == "aiosqlite":
        args, kwargs = parsed.get_dialect()().create_connect_args(parsed)
        options["async_creator"] = lambda: sqlite_driver.connect(*args, **kwargs)
    engine = create_async_engine(url, echo=echo, pool_pre_ping=not url.startswith("sqlite"), **options)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect(foreign_keys=foreign_keys))
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade_sync(url: str, revision: str = "head") -> None:
    """Bring the schema to ``revision``; safe to call on every start."""
    ensure_sqlite_dir(url)
    command.upgrade(alembic_config(url), revision)


async def upgrade(url: str, revision: str = "head") -> None:
    # Alembic's async env runs its own event loop, so it gets a thread of its own.
    await asyncio.to_thread(upgrade_sync, url, revision)


def head_revision() -> str:
    """The newest migration shipped with the package."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head
