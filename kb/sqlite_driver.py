"""aiosqlite connections that run each statement in one trip to the connection's thread.

aiosqlite runs a ``sqlite3`` connection in a thread of its own; each call is a trip there and
back (a queue, a wake-up, a ``call_soon_threadsafe``: ~80 µs on an idle loop, and each return
waits for the event loop to be free). SQLAlchemy's aiosqlite adapter makes four trips per
statement that returns rows (create a cursor, execute, fetch, close) and three for the others.
:class:`Connection` is aiosqlite's connection with a cursor that executes, fetches every row and
closes in one trip (a customer's answer makes ~25 statements: ~60 fewer trips), and a rollback
with no transaction open (the pool's, after each commit) makes none.

The rows are read at once, as SQLAlchemy's adapter does (it buffers them too; this project
streams no results). The ``sqlite3`` cursor never leaves the connection's thread. Used through
:func:`connect`, the ``async_creator`` of :func:`kb.db.create_engine` for SQLite URLs.

**One writer at a time, woken in turn.** Every transaction begins ``BEGIN IMMEDIATE``
(:mod:`kb.db`): it takes SQLite's write lock, and a second one waits in SQLite's busy handler,
which sleeps and retries (1, 2, 5, 10 ... 100 ms): under load, writers slept while the lock lay
free. Connections of one process to one database file now queue on an ``asyncio.Lock`` before
their ``BEGIN IMMEDIATE`` and hand it on at commit, rollback or close: the next writer starts
the moment the last one ends, first come first served. Other processes (a CLI ingest beside
the bot) still meet the busy handler. A writer that waits longer than :data:`BUSY_TIMEOUT_S`
gets SQLite's own error, "database is locked".

**A writer that holds the lock runs its statements inline** when its caller asks for it
(:func:`kb.db.inline_statements`, the group commit's transactions): after ``BEGIN IMMEDIATE``
nothing it runs waits for a lock (WAL: readers never block it, and it holds the write lock), and
its statements are small, so it runs them on the event loop's thread instead of one trip each to
the connection's thread. Each trip waits for a turn of the event loop, which under load is a
millisecond or more: a group commit of twenty customers' turns (~140 statements) held the write
lock, and every writer behind it, for over a hundred milliseconds. Inline, the same transaction
takes a few. So as not to hold the loop, after :data:`INLINE_SLICE_S` inline the next statement
makes the trip again (and lets the loop run); ``executemany`` with more than :data:`INLINE_ROWS`
rows, the commit (which may checkpoint the WAL) and ``BEGIN`` itself always make the trip.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import weakref
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any

import aiosqlite

ITER_CHUNK_SIZE = 64  # aiosqlite's default; unused here (rows are fetched at once)
BEGIN_WRITE = "BEGIN IMMEDIATE"  # how every transaction begins (kb.db)
BUSY_TIMEOUT_S = 30.0  # how long a transaction waits for the write lock before it fails
INLINE_SLICE_S = 0.002  # inline statements in a row before one makes the trip (lets the loop run)
INLINE_ROWS = 64  # executemany with more rows than this makes the trip

# Per event loop (a lock belongs to one), per database file: the writers' queue.
_write_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


def _write_lock(database: str) -> asyncio.Lock | None:
    """The in-process queue of writers to ``database``; None for a private in-memory one."""
    if database in ("", ":memory:") or "mode=memory" in database:
        return None
    locks = _write_locks.setdefault(asyncio.get_running_loop(), {})
    lock = locks.get(database)
    if lock is None:
        lock = locks[database] = asyncio.Lock()
    return lock


class Cursor:
    """Enough of ``aiosqlite.Cursor`` for SQLAlchemy: ``execute`` brings the rows along."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.arraysize = 1
        self._rows: list[Any] = []

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] | None = None) -> Cursor:
        connection = self._connection
        if sql == BEGIN_WRITE:
            await connection._wait_for_write()
        try:
            outcome = await connection._statement(sql, parameters, many=False)
        except BaseException:
            if sql == BEGIN_WRITE:
                connection._done_writing()
            raise
        self._take(outcome)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> Cursor:
        rows = parameters if isinstance(parameters, Sequence) else list(parameters)
        self._take(await self._connection._statement(sql, rows, many=True))
        return self

    def _take(self, outcome: tuple[Any, int, int | None, list[Any]]) -> None:
        self.description, self.rowcount, self.lastrowid, self._rows = outcome

    async def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        count = self.arraysize if size is None else size
        taken, self._rows = self._rows[:count], self._rows[count:]
        return taken

    async def fetchall(self) -> list[Any]:
        taken, self._rows = self._rows, []
        return taken

    async def nextset(self) -> None:  # sqlite3 has no result sets to move between
        return None

    async def close(self) -> None:
        self._rows = []


def _run(
    conn: sqlite3.Connection, sql: str, parameters: Any, *, many: bool
) -> tuple[Any, int, int | None, list[Any]]:
    """In the connection's thread: execute, read every row, close the cursor."""
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(sql, parameters)
        elif parameters is None:
            cursor.execute(sql)
        else:
            cursor.execute(sql, parameters)
        rows = cursor.fetchall() if cursor.description else []
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


class Connection(aiosqlite.Connection):
    """``aiosqlite.Connection`` whose cursors make one trip per statement and whose write
    transactions queue in the process (see the module)."""

    database = ""
    _writing: asyncio.Lock | None = None  # the queue's lock, while this connection holds it
    inline = False  # run statements inline while writing (kb.db.inline_statements)
    _inline_since = 0.0  # when the current run of inline statements began (0: none)

    async def _statement(
        self, sql: str, parameters: Any, *, many: bool
    ) -> tuple[Any, int, int | None, list[Any]]:
        """Run one statement: inline when :meth:`_may_run_inline`, else one trip to the thread."""
        if (not many or len(parameters) <= INLINE_ROWS) and self._may_run_inline(sql):
            return _run(self._conn, sql, parameters, many=many)
        return await self._execute(_run, self._conn, sql, parameters, many=many)

    def _may_run_inline(self, sql: str) -> bool:
        """Inline, this statement? Only for a caller that asked, while it holds the write lock,
        and not past :data:`INLINE_SLICE_S` of inline statements in a row (then this one makes
        the trip, and the event loop runs meanwhile)."""
        if not self.inline or self._writing is None or sql == BEGIN_WRITE or self._connection is None:
            self._inline_since = 0.0
            return False
        now = time.perf_counter()
        if not self._inline_since:
            self._inline_since = now
        elif now - self._inline_since > INLINE_SLICE_S:
            self._inline_since = 0.0
            return False
        return True

    def cursor(self) -> Cursor:  # type: ignore[override]
        return Cursor(self)

    async def _wait_for_write(self) -> None:
        lock = _write_lock(self.database)
        if lock is None or self._writing is lock:
            return
        try:
            await asyncio.wait_for(lock.acquire(), BUSY_TIMEOUT_S)
        except TimeoutError:
            raise sqlite3.OperationalError("database is locked") from None
        self._writing = lock

    def _done_writing(self) -> None:
        lock, self._writing = self._writing, None
        if lock is not None:
            lock.release()

    async def _ending(self, end: Awaitable[None]) -> None:
        """``end`` (a commit, rollback or close), then the write lock goes to the next writer."""
        try:
            await end
        finally:
            self._done_writing()

    async def commit(self) -> None:
        await self._ending(super().commit())

    async def rollback(self) -> None:
        """Roll back, without a trip when no transaction is open (the pool rolls back each
        connection it gets back, after every commit too)."""
        if self._connection is not None and not self._connection.in_transaction:
            self._done_writing()
            return
        await self._ending(super().rollback())

    async def close(self) -> None:
        await self._ending(super().close())


def connect(database: str, **kwargs: Any) -> Connection:
    """Like ``aiosqlite.connect``; await the result. The thread does not keep a process alive
    (as SQLAlchemy's adapter arranges for aiosqlite's own connections)."""

    def connector() -> sqlite3.Connection:
        # Used from the loop's thread too, never at the same time (inline statements, above).
        return sqlite3.connect(database, **{**kwargs, "check_same_thread": False})

    connection = Connection(connector, ITER_CHUNK_SIZE)
    connection._thread.daemon = True
    connection.database = str(database)
    return connection
