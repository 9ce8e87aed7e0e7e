"""kb.db.GroupCommit: concurrent small writes share transactions, each durable when awaited,
one bad write fails alone, a caller that gives up does not undo its write."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kb import db
from kb.models import Customer
from tests.conftest import database_url


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    url = database_url(tmp_path)
    await db.upgrade(url)
    engine = db.create_engine(url)
    try:
        yield db.session_factory(engine)
    finally:
        await engine.dispose()


async def _add_customers(session: AsyncSession, items: list[int]) -> list[int]:
    """One customer row per item (its Telegram id); a negative id is refused (a bad write)."""
    for telegram_id in items:
        if telegram_id < 0:
            raise IntegrityError("INSERT", {"telegram_id": telegram_id}, Exception("refused"))
    await session.execute(
        Customer.__table__.insert(), [{"telegram_id": t, "first_name": f"C{t}"} for t in items]
    )
    return [telegram_id * 10 for telegram_id in items]


ADD_CUSTOMERS: db.Batched[int, int] = db.Batched("customers", _add_customers)


async def stored(sessions: async_sessionmaker[AsyncSession]) -> list[int]:
    async with sessions() as session:
        return sorted(await session.scalars(select(Customer.telegram_id)))


async def test_concurrent_writes_share_transactions_and_each_is_committed_when_awaited(sessions) -> None:
    writes = db.GroupCommit(sessions)
    seen_committed: list[bool] = []

    async def one(telegram_id: int) -> int:
        result = await writes.write(ADD_CUSTOMERS, telegram_id)
        async with sessions() as session:  # another connection sees it: committed, not just flushed
            seen_committed.append(
                await session.scalar(select(Customer.id).where(Customer.telegram_id == telegram_id))
                is not None
            )
        return result

    results = await asyncio.gather(*(one(n) for n in range(1, 101)))
    assert results == [n * 10 for n in range(1, 101)]  # each caller gets its own result
    assert all(seen_committed) and await stored(sessions) == list(range(1, 101))
    # queued before the writer ran: they share its transactions (here all of them the first)
    assert writes.stats.writes == 100 and writes.stats.transactions <= 3, writes.stats


async def test_an_idle_writer_starts_at_once_alone(sessions) -> None:
    writes = db.GroupCommit(sessions)
    for n in range(1, 4):
        assert await writes.write(ADD_CUSTOMERS, n) == n * 10
    assert (writes.stats.transactions, writes.stats.largest) == (3, 1)


async def test_a_bad_write_among_good_ones_fails_alone(sessions) -> None:
    writes = db.GroupCommit(sessions)
    first = asyncio.ensure_future(writes.write(ADD_CUSTOMERS, 1))  # takes the writer
    await asyncio.sleep(0)
    queued = [asyncio.ensure_future(writes.write(ADD_CUSTOMERS, n)) for n in (2, -3, 4)]
    outcomes = await asyncio.gather(first, *queued, return_exceptions=True)
    assert outcomes[:2] == [10, 20] and outcomes[3] == 40
    assert isinstance(outcomes[2], IntegrityError)
    assert await stored(sessions) == [1, 2, 4]


async def test_a_caller_that_gives_up_does_not_undo_its_write(sessions) -> None:
    writes = db.GroupCommit(sessions)
    caller = asyncio.ensure_future(writes.write(ADD_CUSTOMERS, 7))
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await writes.idle()
    assert await stored(sessions) == [7]


async def test_kinds_queued_together_go_in_one_transaction_in_the_order_first_queued(sessions) -> None:
    order: list[str] = []

    async def note(session: AsyncSession, items: list[Any]) -> list[None]:
        order.append(f"note x{len(items)}")
        await session.execute(text("SELECT 1"))
        return [None] * len(items)

    async def add(session: AsyncSession, items: list[int]) -> list[int]:
        order.append(f"add x{len(items)}")
        return await _add_customers(session, items)

    notes, adds = db.Batched("note", note), db.Batched("add", add)
    writes = db.GroupCommit(sessions)
    busy = asyncio.ensure_future(writes.write(notes, 0))
    await asyncio.sleep(0)
    await asyncio.gather(busy, writes.write(adds, 1), writes.write(notes, 1), writes.write(adds, 2))
    assert order == ["note x1", "add x2", "note x1"]
    assert writes.stats.transactions == 2 and await stored(sessions) == [1, 2]
