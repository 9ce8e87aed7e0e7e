"""Engine, sessions and migrations.

SQLite gets WAL mode, foreign keys and a busy timeout on every connection, and every transaction
begins with ``BEGIN IMMEDIATE`` (SQLAlchemy's documented recipe: the driver's own implicit BEGIN
is switched off and the engine's ``begin`` event emits ours). A transaction thus holds the write
lock from its first statement: concurrent writers queue, one after the other (those of one
process on an in-process lock, :mod:`kb.sqlite_driver`; other processes on the busy timeout),
and what a transaction reads cannot go stale before it writes. (The driver's implicit BEGIN
came only before the first write, so two first messages of one customer could both insert them;
with a plain deferred BEGIN, a transaction that read and then writes after another one committed
fails with "database is locked" whatever the timeout.) The price: a read-only transaction takes
the lock too, so every transaction must stay short (services keep theirs short, and none stays
open across a Bot API call).

PostgreSQL needs nothing but its URL. Migrations are Alembic's, shipped inside the package.

:class:`GroupCommit` is the writer of small, frequent writes (the delivery journal, inbox marks,
the Telegram ids of sent messages): what is queued while its transaction commits goes together
into the next one, so under load many writes share one transaction (one write lock, one commit)
and at rest a write starts at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from kb import sqlite_driver

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


SQLITE_POOL_SIZE = 32  # connections kept open
SQLITE_POOL_OVERFLOW = 32  # more, opened under load and closed when given back
SQLITE_BUSY_TIMEOUT_MS = int(sqlite_driver.BUSY_TIMEOUT_S * 1000)  # a writer's wait for the write lock


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
    connection.exec_driver_sql(sqlite_driver.BEGIN_WRITE)


@contextlib.asynccontextmanager
async def inline_statements(session: AsyncSession) -> AsyncIterator[None]:
    """Within it, the session's SQLite transaction runs its statements on the event loop's
    thread, not one trip each to the connection's (see :mod:`kb.sqlite_driver`): for a writer
    of many small statements, the group commit's. Nothing changes on other databases."""
    connection = await session.connection()  # begins the transaction: BEGIN IMMEDIATE
    driver = (await connection.get_raw_connection()).driver_connection
    if not isinstance(driver, sqlite_driver.Connection):
        yield
        return
    driver.inline = True
    try:
        yield
    finally:
        driver.inline = False


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
        # Writers queue holding a connection (kb.sqlite_driver): with the default pool (5 kept,
        # 10 more opened and closed again) a busy bot opened a connection, its thread and its
        # PRAGMAs for most transactions. Idle connections cost a parked thread each.
        if parsed.database not in (None, "", ":memory:") and "mode=memory" not in str(parsed):
            options["pool_size"] = SQLITE_POOL_SIZE
            options["max_overflow"] = SQLITE_POOL_OVERFLOW
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


def parameters(rows: list[dict[str, Any]]) -> dict[str, Any] | list[dict[str, Any]]:
    """A prepared statement's parameters: one row as is (one execute), several as a list
    (executemany)."""
    return rows[0] if len(rows) == 1 else rows


# -- group commit ----------------------------------------------------------------------------------

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(frozen=True, slots=True)
class Batched(Generic[Item, Result]):
    """A kind of write: ``apply`` writes the items queued together (in one session, inside the
    writer's transaction, without committing) and returns one result per item, in order."""

    name: str
    apply: Callable[[AsyncSession, list[Item]], Awaitable[Sequence[Result]]]


@dataclass(slots=True)
class GroupCommitStats:
    transactions: int = 0
    writes: int = 0
    largest: int = 0


@dataclass(slots=True)
class _Queued:
    kind: Batched[Any, Any]
    item: Any
    done: asyncio.Future[Any]


class GroupCommit:
    """One writer that gathers concurrent small writes into one transaction.

    ``await write(kind, item)`` returns once the transaction holding the item committed (or
    raises what failed it). Nothing waits to fill a batch: with the writer idle a write starts
    at once; while it commits, new writes queue and form the next transaction. Writes of one kind
    in a transaction go to one ``apply`` call (one statement for many rows); kinds follow in the
    order they were first queued. A transaction that fails for another reason than the database
    being unreachable is tried again item by item, so one bad write fails alone.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, max_writes: int = 400) -> None:
        self.sessions = sessions
        self.max_writes = max_writes
        self.stats = GroupCommitStats()
        self._queue: list[_Queued] = []
        self._writer: asyncio.Task[None] | None = None

    async def write(self, kind: Batched[Item, Result], item: Item) -> Result:
        queued = _Queued(kind, item, asyncio.get_running_loop().create_future())
        queued.done.add_done_callback(_retrieved)  # a caller may have given up on it
        self._queue.append(queued)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._run(), name="group-commit")
        return await asyncio.shield(queued.done)  # a caller that gives up does not undo the write

    async def idle(self) -> None:
        """Wait until everything queued so far is written."""
        while self._writer is not None and not self._writer.done():
            await asyncio.wait({self._writer})

    async def _run(self) -> None:
        batch: list[_Queued] = []
        try:
            while self._queue:
                batch, self._queue = self._queue[: self.max_writes], self._queue[self.max_writes :]
                try:
                    results = await self._commit(batch)
                except (OperationalError, OSError) as exc:  # unreachable or locked: all fail alike
                    for queued in batch:
                        _settle(queued, exc=exc)
                    continue
                except Exception as exc:  # a bad write among good ones: each on its own
                    if len(batch) == 1:
                        _settle(batch[0], exc=exc)
                    else:
                        for queued in batch:
                            await self._alone(queued)
                    continue
                for queued, result in zip(batch, results, strict=True):
                    _settle(queued, result=result)
        except asyncio.CancelledError:
            for queued in (*batch, *self._queue):
                queued.done.cancel()
            self._queue = []
            raise

    async def _alone(self, queued: _Queued) -> None:
        try:
            (result,) = await self._commit([queued])
        except Exception as exc:  # handed to the writer's caller
            _settle(queued, exc=exc)
        else:
            _settle(queued, result=result)

    async def _commit(self, batch: list[_Queued]) -> list[Any]:
        kinds: dict[Batched[Any, Any], list[int]] = {}
        for position, queued in enumerate(batch):
            kinds.setdefault(queued.kind, []).append(position)
        results: list[Any] = [None] * len(batch)
        async with self.sessions() as session, session.begin(), inline_statements(session):
            for kind, positions in kinds.items():
                out = await kind.apply(session, [batch[p].item for p in positions])
                for position, result in zip(positions, out, strict=True):
                    results[position] = result
        self.stats.transactions += 1
        self.stats.writes += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))
        return results


def _retrieved(done: asyncio.Future[Any]) -> None:
    if not done.cancelled():
        done.exception()


def _settle(queued: _Queued, *, result: Any = None, exc: BaseException | None = None) -> None:
    if queued.done.done():
        return
    if exc is not None:
        queued.done.set_exception(exc)
    else:
        queued.done.set_result(result)
