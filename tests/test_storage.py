"""Storage under load: many customers writing at once through the real services.

On SQLite every write transaction takes the write lock when it begins (``BEGIN IMMEDIATE``) and
waits for it (busy timeout), so concurrent writers queue instead of failing with "database is
locked"; on PostgreSQL (``HELPDESK_TEST_DATABASE_URL``) the same tests run against the server.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, func, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from bot.runtime import Services, open_services
from ingest.pipeline import ingest_paths
from kb import db
from kb.conversations import Helpdesk, Person, Reply
from kb.models import ArticleVersion, Author, Base, Conversation, Customer, Message
from tests.conftest import EXAMPLE_FAQ, StubEncoder, database_url

CUSTOMERS = 200
FIRST_ID = 7_000_000_000  # Telegram ids have outgrown 32 bits: these need BIGINT on PostgreSQL
Sessions = async_sessionmaker[AsyncSession]
QUESTIONS = ["How do I reset my password?", "Which payment methods do you accept?", "pizza near the office?"]


@pytest.fixture
async def stub_services(settings: Settings) -> AsyncIterator[Services]:
    encoder = StubEncoder()
    async with open_services(settings, encoder=encoder) as services:
        report = await ingest_paths([EXAMPLE_FAQ], sessions=services.sessions, encoder=encoder)
        assert report.added > 0 and not report.failed
        await services.kb.sync(services.sessions)
        yield services


def person(n: int) -> Person:
    return Person(FIRST_ID + n, f"Customer {n}", username=f"c{n}", language_code="en")


async def customer_turn(helpdesk: Helpdesk, sessions: Sessions, n: int, start: asyncio.Event) -> int:
    """What the bot stores for one customer message, as three write transactions: the message,
    the bot's reply, then the reply's Telegram id once it was sent. Returns the reply's row id."""
    await start.wait()
    who = person(n)
    async with sessions() as session:
        await helpdesk.note_incoming(
            session,
            person=who,
            chat_id=who.telegram_id,
            telegram_message_id=1,
            content_type="text",
            text=QUESTIONS[n % len(QUESTIONS)],
        )
    async with sessions() as session:
        reply = await helpdesk.note_outgoing(
            session, person=who, chat_id=who.telegram_id, text=f"Answer for {n}", decision="answer"
        )
    async with sessions() as session:
        await helpdesk.mark_sent(session, message_id=reply, telegram_message_id=2)
    return reply


async def all_at_once(count: int, turn: Callable[[int, asyncio.Event], Awaitable[object]]) -> float:
    """Start ``count`` turns together; raise with every error if any failed; return the seconds taken."""
    start = asyncio.Event()
    tasks = [asyncio.create_task(turn(n, start)) for n in range(count)]
    await asyncio.sleep(0)  # every task is waiting on the start line
    began = time.perf_counter()
    start.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    elapsed = time.perf_counter() - began
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, f"{len(errors)} of {count} turns failed, e.g. {errors[0]!r}"
    return elapsed


async def count(services: Services, statement) -> int:
    async with services.sessions() as session:
        return int(await session.scalar(statement) or 0)


async def test_200_customers_writing_at_once_all_get_stored(stub_services: Services) -> None:
    services = stub_services
    helpdesk = Helpdesk(services.kb, services.thresholds)
    elapsed = await all_at_once(
        CUSTOMERS, lambda n, start: customer_turn(helpdesk, services.sessions, n, start)
    )
    print(
        f"\n{CUSTOMERS} customers at once on {services.engine.dialect.name}: {elapsed:.2f} s, "
        f"{CUSTOMERS * 3 / elapsed:.0f} write transactions/s"
    )

    assert await count(services, select(func.count()).select_from(Customer)) == CUSTOMERS
    assert await count(services, select(func.count()).select_from(Conversation)) == CUSTOMERS
    ids = select(func.count(func.distinct(Customer.telegram_id))).where(Customer.telegram_id >= FIRST_ID)
    assert await count(services, ids) == CUSTOMERS
    incoming = select(func.count()).select_from(Message).where(Message.author == Author.CUSTOMER)
    assert await count(services, incoming) == CUSTOMERS
    sent = (
        select(func.count())
        .select_from(Message)
        .where(Message.author == Author.BOT, Message.telegram_message_id == 2)
    )
    assert await count(services, sent) == CUSTOMERS
    biggest = select(func.max(Message.chat_id))
    assert await count(services, biggest) == FIRST_ID + CUSTOMERS - 1


async def test_one_customer_sending_a_burst_is_one_customer_in_one_conversation(
    stub_services: Services,
) -> None:
    """aiogram handles a customer's updates concurrently: the first message of a new customer
    and the ones right behind it must not create the customer twice (or fail on the unique id)."""
    services = stub_services
    helpdesk = Helpdesk(services.kb, services.thresholds)
    burst = 20

    async def same_customer(n: int, start: asyncio.Event) -> Reply:
        await start.wait()
        who = person(0)
        async with services.sessions() as session:
            return await helpdesk.ask(
                session, person=who, chat_id=who.telegram_id, telegram_message_id=n + 1, text=f"question {n}"
            )

    await all_at_once(burst, same_customer)

    assert await count(services, select(func.count()).select_from(Customer)) == 1
    assert await count(services, select(func.count()).select_from(Conversation)) == 1
    incoming = select(func.count()).select_from(Message).where(Message.author == Author.CUSTOMER)
    assert await count(services, incoming) == burst


async def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(settings: Settings) -> None:
    async with open_services(settings, encoder=StubEncoder(), sync=False) as services:
        if services.engine.dialect.name != "sqlite":
            pytest.skip("SQLite's journal mode and busy timeout: this run is on another database")
        async with services.engine.connect() as connection:
            assert (await connection.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
            assert (await connection.exec_driver_sql("PRAGMA busy_timeout")).scalar() >= 10_000
            assert (await connection.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1


async def test_a_write_transaction_holds_the_write_lock_from_its_start(settings: Settings) -> None:
    """Two transactions that read and then write: on SQLite the second waits at its start for
    the first to finish instead of failing later when it wants to write."""
    async with open_services(settings, encoder=StubEncoder(), sync=False) as services:
        if services.engine.dialect.name != "sqlite":
            pytest.skip("SQLite's locking: this run is on another database")
        order: list[str] = []
        first_inside = asyncio.Event()

        async def first() -> None:
            async with services.sessions() as session, session.begin():
                await session.execute(text("SELECT count(*) FROM customers"))
                order.append("first in")
                first_inside.set()
                await asyncio.sleep(0.3)
                session.add(Customer(telegram_id=1, first_name="One"))
                await session.flush()
                order.append("first out")

        async def second() -> None:
            await first_inside.wait()
            async with services.sessions() as session, session.begin():
                await session.execute(text("SELECT count(*) FROM customers"))
                order.append("second in")
                session.add(Customer(telegram_id=2, first_name="Two"))

        await asyncio.gather(first(), second())
        assert order == ["first in", "first out", "second in"]
        assert await count(services, select(func.count()).select_from(Customer)) == 2


async def test_a_question_longer_than_300_characters_is_stored_whole(
    settings: Settings, tmp_path: Path
) -> None:
    """PostgreSQL enforces VARCHAR lengths that SQLite ignores: a long heading (its slug is the
    source anchor) must ingest on both."""
    question = "How do I " + " ".join(f"configure setting number {n}" for n in range(20)) + "?"
    faq = tmp_path / "long.md"
    faq.write_text(f"# {question}\n\nOne setting at a time.\n", encoding="utf-8")
    encoder = StubEncoder()
    async with open_services(settings, encoder=encoder, sync=False) as services:
        report = await ingest_paths([faq], sessions=services.sessions, encoder=encoder)
        assert report.added == 1 and not report.failed, report.failed
        async with services.sessions() as session:
            version = await session.scalar(select(ArticleVersion))
    assert version is not None and version.question == question
    assert len(version.source_anchor) > 300 and version.source_anchor.startswith("how-do-i-configure")


async def schema_state(url: str) -> tuple[set[str], list[object]]:
    """The tables of the database at ``url`` and how its schema differs from the models'."""

    def inspect_schema(connection: Connection) -> tuple[set[str], list[object]]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return set(inspect(connection).get_table_names()), compare_metadata(context, Base.metadata)

    engine = db.create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(inspect_schema)
    finally:
        await engine.dispose()


async def test_the_migrations_build_the_models_schema_down_and_up_again(tmp_path: Path) -> None:
    url = database_url(tmp_path)
    await db.upgrade(url)
    tables, differences = await schema_state(url)
    assert differences == []
    assert set(Base.metadata.tables) <= tables

    await asyncio.to_thread(command.downgrade, db.alembic_config(url), "base")
    assert (await schema_state(url))[0] == {"alembic_version"}

    await db.upgrade(url)
    tables, differences = await schema_state(url)
    assert differences == [] and set(Base.metadata.tables) <= tables


def test_upgrading_an_sqlite_database_keeps_the_rows_of_rebuilt_tables(tmp_path: Path) -> None:
    """0002 rebuilds ``messages`` (SQLite alters a table by copying it): the feedback that
    references its rows (ON DELETE CASCADE) must survive the drop of the old copy."""
    path = tmp_path / "old.db"
    url = f"sqlite+aiosqlite:///{path}"
    db.upgrade_sync(url, "0001")
    with sqlite3.connect(path) as con:
        con.executescript(
            "INSERT INTO customers (id, telegram_id, first_name, first_seen, last_seen, tags, notes)"
            " VALUES (1, 7000000001, 'Ann', '2026-01-01', '2026-01-01', '[]', '');"
            "INSERT INTO conversations (id, customer_id, chat_id, started_at, last_message_at)"
            " VALUES (1, 1, 7000000001, '2026-01-01', '2026-01-01');"
            "INSERT INTO messages (id, conversation_id, direction, author, chat_id, content_type, created_at)"
            " VALUES (1, 1, 'out', 'bot', 7000000001, 'text', '2026-01-01');"
            "INSERT INTO feedback (id, message_id, customer_id, helpful, created_at)"
            " VALUES (1, 1, 1, 1, '2026-01-01');"
        )
    db.upgrade_sync(url)
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT id, message_id, helpful FROM feedback").fetchall() == [(1, 1, 1)]
        assert con.execute("SELECT id, conversation_id FROM messages").fetchall() == [(1, 1)]
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []


async def test_customers_asking_at_once_share_transactions_and_each_gets_its_own_turn(
    stub_services: Services,
) -> None:
    """Helpdesk.ask through the group commit (as the bot runs it): concurrent customers' turns
    are committed together, each stored once with its own reply row, in its own conversation."""
    services = stub_services
    helpdesk = Helpdesk(services.kb, services.thresholds, writes=services.writes)
    before = services.writes.stats.transactions
    customers = 60

    async def asking(n: int, start: asyncio.Event) -> Reply:
        await start.wait()
        who = person(n)
        async with services.sessions() as session:
            return await helpdesk.ask(
                session, person=who, chat_id=who.telegram_id, telegram_message_id=1, text=QUESTIONS[n % 3]
            )

    start = asyncio.Event()
    tasks = [asyncio.create_task(asking(n, start)) for n in range(customers)]
    await asyncio.sleep(0)
    start.set()
    replies = await asyncio.gather(*tasks)
    transactions = services.writes.stats.transactions - before
    assert 0 < transactions < customers / 3, f"{customers} turns took {transactions} transactions"
    assert len({reply.message_id for reply in replies}) == customers
    async with services.sessions() as session:
        rows = {m.id: m for m in await session.scalars(select(Message).where(Message.author == Author.BOT))}
        for n, reply in enumerate(replies):
            row = rows[reply.message_id]
            assert row.chat_id == person(n).telegram_id and row.decision == reply.action.value
    asked = select(func.count()).select_from(Message).where(Message.author == Author.CUSTOMER)
    assert await count(services, asked) == customers
    async with services.sessions() as session:
        again = await helpdesk.ask(  # the same update handled again: the turn recorded first
            session, person=person(0), chat_id=person(0).telegram_id, telegram_message_id=1, text=QUESTIONS[0]
        )
    assert again.message_id == replies[0].message_id
    assert await count(services, asked) == customers


async def test_asking_inside_the_callers_own_transaction_records_the_turn_in_it(
    stub_services: Services,
) -> None:
    """A handler that read on its session first (on SQLite its transaction holds the write lock)
    and then asks: the turn goes into that transaction instead of waiting for the group commit,
    which would wait for the lock (for the busy timeout, then fail)."""
    services = stub_services
    helpdesk = Helpdesk(services.kb, services.thresholds, writes=services.writes)
    who = person(1)
    async with services.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Customer)) == 0  # begins it
        reply = await asyncio.wait_for(
            helpdesk.ask(
                session, person=who, chat_id=who.telegram_id, telegram_message_id=1, text=QUESTIONS[0]
            ),
            timeout=10,
        )
        await session.commit()
    async with services.sessions() as session:
        stored = await session.get(Message, reply.message_id)
        assert stored is not None and stored.author == Author.BOT and stored.chat_id == who.telegram_id
