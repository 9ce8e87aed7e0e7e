"""kb/sqlite_driver.py: one trip to the connection's thread per statement, same results."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError

from kb import sqlite_driver
from kb.db import create_engine


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The functions sent to SQLite connections' threads, by name."""
    sent: list[str] = []
    original = sqlite_driver.Connection._execute

    async def counting(self: sqlite_driver.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(sqlite_driver.Connection, "_execute", counting)
    return sent


async def test_a_statement_is_one_trip_with_its_rows(tmp_path: Path, trips: list[str]) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/t.db")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)"))
        trips.clear()
        async with engine.begin() as conn:
            inserted = await conn.execute(
                text("INSERT INTO t (name) VALUES (:name)"), [{"name": n} for n in ("a", "b", "c")]
            )
            assert inserted.rowcount == 3
            one = await conn.execute(text("INSERT INTO t (name) VALUES ('d')"))
            assert one.lastrowid == 4
            query = text("SELECT id, name FROM t WHERE id > :n ORDER BY id")
            rows = (await conn.execute(query, {"n": 1})).all()
            assert [tuple(r) for r in rows] == [(2, "b"), (3, "c"), (4, "d")]
            returned = (await conn.execute(text("UPDATE t SET name = 'x' WHERE id < 3 RETURNING id"))).all()
            assert sorted(r.id for r in returned) == [1, 2]
        # BEGIN IMMEDIATE, four statements, COMMIT: a trip each
        assert trips == ["_run", "_run", "_run", "_run", "_run", "commit"]
    finally:
        await engine.dispose()


async def test_errors_are_sqlalchemys_and_the_connection_goes_on(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/t.db")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
            await conn.execute(text("INSERT INTO t VALUES (1)"))
        with pytest.raises(IntegrityError):
            async with engine.begin() as conn:
                await conn.execute(text("INSERT INTO t VALUES (2)"))
                await conn.execute(text("INSERT INTO t VALUES (1)"))
        with pytest.raises(OperationalError, match="no such table"):
            async with engine.connect() as conn:
                await conn.execute(text("SELECT * FROM missing"))
        async with engine.connect() as conn:  # the failed transaction left nothing behind
            assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar() == 1
    finally:
        await engine.dispose()


async def test_writers_of_one_process_queue_and_each_is_handed_the_lock(tmp_path: Path) -> None:
    """A second write transaction waits in the process's queue, not in SQLite's busy handler,
    and starts when the first commits; a rollback, a failed statement and a closed connection
    hand the lock on too."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/t.db")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)"))
        order: list[str] = []

        async def second() -> None:
            async with engine.begin() as conn:
                order.append("second began")
                await conn.execute(text("INSERT INTO t (name) VALUES ('second')"))

        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO t (name) VALUES ('first')"))
            waiting = asyncio.create_task(second())
            for _ in range(20):  # let the second get as far as it can
                await asyncio.sleep(0)
            lock = sqlite_driver._write_lock(str(tmp_path / "t.db"))
            assert lock is not None and lock.locked() and not waiting.done()
            order.append("first commits")
        await asyncio.wait_for(waiting, 5)
        assert order == ["first commits", "second began"]

        with pytest.raises(IntegrityError):  # a failed statement, rolled back
            async with engine.begin() as conn:
                await conn.execute(text("INSERT INTO t (id, name) VALUES (1, 'again')"))
        async with engine.connect() as conn:  # rolled back by hand
            await conn.execute(text("INSERT INTO t (name) VALUES ('never')"))
            await conn.rollback()
        async with asyncio.timeout(5):
            async with engine.begin() as conn:
                names = (await conn.execute(text("SELECT name FROM t ORDER BY id"))).scalars().all()
        assert names == ["first", "second"]
        assert not lock.locked()
    finally:
        await engine.dispose()


async def test_a_writer_waiting_too_long_gets_database_is_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_driver, "BUSY_TIMEOUT_S", 0.2)
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/t.db")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
        async with engine.begin() as holder:
            await holder.execute(text("INSERT INTO t VALUES (1)"))
            with pytest.raises(OperationalError, match="database is locked"):
                async with engine.begin() as late:
                    await late.execute(text("INSERT INTO t VALUES (2)"))
        async with engine.begin() as conn:  # the holder committed: the lock is free again
            await conn.execute(text("INSERT INTO t VALUES (3)"))
            ids = (await conn.execute(text("SELECT id FROM t ORDER BY id"))).scalars().all()
        assert ids == [1, 3]
    finally:
        await engine.dispose()


async def test_a_writer_asking_for_it_runs_its_statements_inline_in_slices(
    tmp_path: Path, trips: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """kb.db.inline_statements (the group commit's transactions): after BEGIN IMMEDIATE the
    statements run on the loop's thread, with the same results and errors; a long run of them
    makes a trip now and then (the loop runs meanwhile), and so do big executemany calls."""
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from kb.db import inline_statements

    # A slice long enough that a slow or busy machine never ends one here; the slices are
    # measured below with INLINE_SLICE_S = 0.
    monkeypatch.setattr(sqlite_driver, "INLINE_SLICE_S", 60.0)
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/t.db")
    sessions = async_sessionmaker(engine)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)"))
        trips.clear()
        session: AsyncSession
        async with sessions() as session, session.begin(), inline_statements(session):
            await session.execute(text("INSERT INTO t (name) VALUES (:name)"), [{"name": n} for n in "abc"])
            one = await session.execute(text("INSERT INTO t (name) VALUES ('d') RETURNING id"))
            assert one.scalar() == 4
            rows = (await session.execute(text("SELECT id, name FROM t WHERE id > 1 ORDER BY id"))).all()
            assert [tuple(r) for r in rows] == [(2, "b"), (3, "c"), (4, "d")]
        assert trips == ["_run", "commit"], "BEGIN IMMEDIATE and COMMIT only"
        async with sessions() as session:
            assert await session.scalar(text("SELECT count(*) FROM t")) == 4

        trips.clear()
        with pytest.raises(IntegrityError):
            async with sessions() as session, session.begin(), inline_statements(session):
                await session.execute(text("INSERT INTO t VALUES (5, 'e')"))
                await session.execute(text("INSERT INTO t VALUES (1, 'again')"))
        assert trips == ["_run", "rollback"]
        async with sessions() as session, session.begin():  # the lock was handed on
            assert await session.scalar(text("SELECT count(*) FROM t")) == 4

        monkeypatch.setattr(sqlite_driver, "INLINE_SLICE_S", 0.0)  # every slice ends at once
        trips.clear()
        async with sessions() as session, session.begin(), inline_statements(session):
            for n in range(4):
                await session.execute(text("INSERT INTO t (name) VALUES (:n)"), {"n": f"s{n}"})
            big = [{"name": f"b{n}"} for n in range(sqlite_driver.INLINE_ROWS + 1)]
            await session.execute(text("INSERT INTO t (name) VALUES (:name)"), big)
        assert trips == ["_run", "_run", "_run", "_run", "commit"], trips
        async with sessions() as session:
            assert await session.scalar(text("SELECT count(*) FROM t")) == 4 + 4 + len(big)
            trips.clear()
            await session.execute(text("SELECT 1"))  # not writing: a trip, whatever was asked
            assert trips == ["_run"]
    finally:
        await engine.dispose()
