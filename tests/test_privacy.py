"""Customers control their data: /mydata, /forget (nothing of theirs left in any table), the
retention purge (in the bot and as `helpdesk privacy purge`), its setting and the migration."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import MetaData, select
from typer.testing import CliRunner

from bot.cli import app
from bot.config import load_settings
from bot.errors import ConfigError
from bot.keyboards import ForgetCb
from bot.runtime import Services
from bot.sandbox import User
from kb import db
from kb import search as search_module
from kb.models import (
    Article,
    ArticleVersion,
    AuditEntry,
    Author,
    Conversation,
    Csat,
    Customer,
    Direction,
    Embedding,
    Feedback,
    Message,
    Suggestion,
    Ticket,
    TicketState,
    utcnow,
)
from kb.privacy import purge
from kb.suggestions import approve
from tests.conftest import BotHarness, eventually
from tests.test_handover import agent_says, escalate, rows

ZED = User(880123456, "Zephyrine", "Quillfeather", username="zeph_qf", language_code="en")
BEN = User(502, "Ben", language_code="en")
PARROT = "Does my parrot Bartholomew qualify for the loyalty discount?"
NEEDLES = ("880123456", "Zephyrine", "Quillfeather", "zeph_qf", "Bartholomew")


async def _everything_about_zed(harness: BotHarness) -> tuple[int, int]:
    """Zed's history: an answer marked Helped, a resolved ticket rated 5 with an FAQ approved
    from it, tags and a note, then a second ticket still open. Returns (open ticket, its topic)."""
    answer = await harness.say(ZED, "How do I reset my password?")
    harness.sandbox.press_button(chat=ZED.id, user=ZED, message_id=answer.message_id, button_text="👍 Helped")
    await eventually(lambda: rows(harness, Feedback))
    first, topic = await escalate(harness, ZED, PARROT)
    agent_says(harness, topic, "Yes: Bartholomew gets the 10% loyalty discount like everyone.")
    await harness.sandbox.wait_for(lambda c: c.method == "copyMessage" and c.params["chat_id"] == ZED.id)
    agent_says(harness, topic, "/tag vip")
    agent_says(harness, topic, "/note Zephyrine prefers mornings")
    agent_says(harness, topic, "/faq")
    [suggestion] = await eventually(lambda: rows(harness, Suggestion))
    await eventually(lambda: rows(harness, Customer, Customer.notes != ""))
    await approve(harness.services.sessions, harness.services.encoder, suggestion.id, editor="erin")
    await harness.services.kb.sync(harness.services.sessions)
    before = len(harness.sandbox.messages_to(ZED.id))
    agent_says(harness, topic, "/close")
    closing = await harness.sandbox.wait_for_bot_message(ZED.id, after=before)
    harness.sandbox.press_button(chat=ZED.id, user=ZED, message_id=closing.message_id, button_text="5 ⭐")
    await eventually(lambda: rows(harness, Csat))
    await harness.say(ZED, "/human")
    [second] = await eventually(lambda: rows(harness, Ticket, Ticket.state == TicketState.WAITING))
    assert second.id != first.id
    return second.id, await harness.topic_of(second.id)


async def test_mydata_sends_everything_stored_and_forget_leaves_nothing(harness: BotHarness) -> None:
    open_ticket, open_topic = await _everything_about_zed(harness)
    await harness.say(BEN, "Which payment methods do you accept?")
    relayed = len(harness.sandbox.calls_to("copyMessage"))

    # -- /mydata: a JSON file of everything, even while a ticket is open (not relayed to agents)
    before = len(harness.sandbox.messages_to(ZED.id))
    harness.sandbox.send_message(chat=ZED.id, user=ZED, text="/mydata")
    sent = await harness.sandbox.wait_for_bot_message(ZED.id, after=before)
    assert sent.document_name == "my-data.json" and "Everything we store about you" in sent.plain_caption
    assert len(harness.sandbox.calls_to("copyMessage")) == relayed
    data = json.loads(sent.document_bytes)
    profile = data["profile"]
    assert (profile["telegram_id"], profile["first_name"], profile["last_name"], profile["username"]) == (
        ZED.id, "Zephyrine", "Quillfeather", "zeph_qf",
    )  # fmt: skip
    assert profile["tags"] == ["vip"] and "Zephyrine prefers mornings" in profile["notes"]
    texts = [m["text"] for c in data["conversations"] for m in c["messages"]]
    assert PARROT in texts and "How do I reset my password?" in texts
    assert any("Bartholomew gets the 10%" in (t or "") for t in texts)  # the agent's reply
    [customer] = await rows(harness, Customer, Customer.telegram_id == ZED.id)
    conversations = await rows(harness, Conversation, Conversation.customer_id == customer.id)
    messages = await rows(harness, Message, Message.conversation_id.in_([c.id for c in conversations]))
    assert sorted(m["id"] for c in data["conversations"] for m in c["messages"]) == [m.id for m in messages]
    assert [f["helpful"] for f in data["feedback"]] == [True]
    assert [(t["state"], t["outcome"]) for t in data["tickets"]] == [
        ("resolved", "resolved"),
        ("waiting", None),
    ]
    assert [c["score"] for c in data["csat"]] == [5]
    assert [s["question"] for s in data["suggestions"]] == [PARROT]
    assert {e["action"] for e in data["access_log"]} >= {"tagged", "noted", "suggestion_approved"}

    # -- /forget: a confirmation first, then everything goes
    before = len(harness.sandbox.messages_to(ZED.id))
    harness.sandbox.send_message(chat=ZED.id, user=ZED, text="/forget")
    confirm = await harness.sandbox.wait_for_bot_message(ZED.id, after=before)
    assert "can't be undone" in confirm.plain_text
    assert confirm.buttons == [["🗑 Yes, erase everything", "Keep my data"]]
    assert await rows(harness, Customer, Customer.telegram_id == ZED.id)  # nothing yet
    harness.sandbox.press_button(
        chat=ZED.id, user=ZED, message_id=confirm.message_id, button_text="🗑 Yes, erase everything"
    )

    async def done():
        message = harness.sandbox.message(ZED.id, confirm.message_id)
        return message if "everything we stored about you is erased" in (message.plain_text or "") else None

    assert (await eventually(done)).buttons == []

    # the open ticket's topic is told and closed; every topic of theirs is renamed, cards blanked
    await harness.sandbox.wait_for(
        lambda c: c.method == "closeForumTopic" and c.params["message_thread_id"] == open_topic
    )
    told = [m.plain_text for m in harness.in_topic(open_topic)]
    assert any(f"ticket #{open_ticket} is closed" in (t or "") for t in told)
    await harness.sandbox.wait_for(lambda c: c.method == "editForumTopic", count=2)
    assert set(harness.sandbox.topics(harness.forum.id).values()) == {"#1 (erased)", "#2 (erased)"}
    for message in harness.sandbox.messages_to(harness.forum.id):
        if message.message_id in {
            c.params.get("message_id") for c in harness.sandbox.calls_to("pinChatMessage")
        }:
            assert "erased at their request" in message.plain_text and "Zephyrine" not in message.plain_text

    # pressed again (an old button): nothing stored any more, nothing recreated
    harness.sandbox.press_button(
        chat=ZED.id, user=ZED, message_id=confirm.message_id, data=ForgetCb(confirm=True).pack(), strict=False
    )

    async def nothing_left():
        message = harness.sandbox.message(ZED.id, confirm.message_id)
        return "nothing stored about you" in (message.plain_text or "")

    try:
        await eventually(nothing_left, within=15)
    except AssertionError as exc:  # say what the bot did with the press instead
        calls = [c.describe() for c in harness.sandbox.calls if c.params.get("chat_id") in (ZED.id, None)]
        raise AssertionError(
            f"{exc}; the message: {harness.sandbox.message(ZED.id, confirm.message_id)!r}; "
            f"the last calls: {calls[-6:]}"
        ) from None
    await harness.settle()
    # nor does the process's memory: the query caches and the language cache are keyed by text
    assert not any(PARROT in cache for cache in harness.services.kb.query_caches)
    assert search_module._detected.cache_info().currsize == 0

    # -- no row of any table mentions them (every column of every row, by reflection)
    found = await _scan(harness.services, NEEDLES)
    assert found == [], found
    assert [c.first_name for c in await rows(harness, Customer)] == ["Ben"]
    assert await rows(harness, Message)  # Ben's conversation stays
    assert not await rows(harness, ArticleVersion, ArticleVersion.author == "erin")  # the approved FAQ
    assert not await rows(harness, Article, Article.key.like("agents/%"))
    hits = await harness.services.kb.search(PARROT)
    assert all("Bartholomew" not in h.title for h in hits)
    [forgotten] = await rows(harness, AuditEntry, AuditEntry.action == "forgotten")
    assert forgotten.actor == "customer" and "tickets 2" in forgotten.detail
    assert all(e.detail == "" for e in await rows(harness, AuditEntry, AuditEntry.action == "tagged"))


async def _scan(services: Services, needles: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """(table, column, value) of every cell that contains one of ``needles``."""
    found = []
    async with services.engine.connect() as connection:
        metadata = MetaData()
        await connection.run_sync(metadata.reflect)
        assert {"customers", "messages", "embeddings", "audit_log", "suggestions"} <= set(metadata.tables)
        for table in metadata.sorted_tables:
            for row in (await connection.execute(select(table))).mappings():
                for column, value in row.items():
                    if value is None:
                        continue
                    text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
                    found += [(table.name, column, text[:80]) for n in needles if n.lower() in text.lower()]
    return found


async def test_mydata_and_forget_for_someone_unknown_or_who_changes_their_mind(harness: BotHarness) -> None:
    reply = await harness.say(ZED, "/mydata")
    assert reply.plain_text == "We don't store anything about you."
    assert not await rows(harness, Customer)  # asking stores nothing

    await harness.say(ZED, "How do I reset my password?")
    confirm = await harness.say(ZED, "/forget")
    harness.sandbox.press_button(
        chat=ZED.id, user=ZED, message_id=confirm.message_id, button_text="Keep my data"
    )

    async def kept():
        return harness.sandbox.message(ZED.id, confirm.message_id).plain_text == "OK, nothing was erased."

    assert await eventually(kept)
    assert len(await rows(harness, Customer)) == 1 and len(await rows(harness, Message)) == 2


# -- the retention purge -----------------------------------------------------------------------------


async def _history(services: Services, telegram_id: int, *, age: timedelta, question: str) -> int:
    """A customer with one conversation of ``age``: a question, an answer with feedback, a resolved
    ticket rated 4, a suggestion from it (approved when old). Returns the customer's id."""
    at = utcnow() - age
    async with services.sessions() as session, session.begin():
        customer = Customer(
            telegram_id=telegram_id, first_name=f"C{telegram_id}", first_seen=at, last_seen=at
        )
        session.add(customer)
        await session.flush()
        conversation = Conversation(
            customer_id=customer.id, chat_id=telegram_id, started_at=at, last_message_at=at
        )
        session.add(conversation)
        await session.flush()
        common = {"conversation_id": conversation.id, "chat_id": telegram_id, "created_at": at}
        session.add(Message(direction=Direction.IN, author=Author.CUSTOMER, text=question, **common))
        answer = Message(direction=Direction.OUT, author=Author.BOT, decision="answer", text="A.", **common)
        session.add(answer)
        await session.flush()
        session.add(Feedback(message_id=answer.id, customer_id=customer.id, helpful=False, created_at=at))
        ticket = Ticket(
            customer_id=customer.id,
            conversation_id=conversation.id,
            state=TicketState.RESOLVED,
            question=question,
            opened_at=at,
            resolved_at=at,
        )
        session.add(ticket)
        await session.flush()
        session.add(Csat(ticket_id=ticket.id, customer_id=customer.id, score=4, created_at=at))
        session.add(
            Suggestion(
                question=question,
                answer="Agents' answer.",
                ticket_id=ticket.id,
                customer_id=customer.id,
                agent_id=1,
            )
        )
        return customer.id


async def test_purge_removes_old_conversations_and_what_hangs_off_them(services: Services) -> None:
    await _history(services, 9001, age=timedelta(days=60), question="Old question about invoices?")
    recent = await _history(services, 9002, age=timedelta(days=2), question="New question about invoices?")
    [old_suggestion] = [s for s in await _all(services, Suggestion) if s.question.startswith("Old")]
    approved = await approve(services.sessions, services.encoder, old_suggestion.id, editor="erin")

    dry = await purge(services.sessions, older_than_days=30, dry_run=True)
    counted = (dry.customers, dry.conversations, dry.messages, dry.feedback, dry.tickets, dry.csat)
    assert (*counted, dry.suggestions) == (1, 1, 2, 1, 1, 1, 1)
    assert len(await _all(services, Customer)) == 2  # a dry run deletes nothing

    done = await purge(services.sessions, older_than_days=30)
    assert done.as_dict() == {**dry.as_dict(), "article_versions": 0, "articles": 0, "kb_changed": False}
    assert [c.id for c in await _all(services, Customer)] == [recent]
    for model in (Conversation, Message, Feedback, Ticket, Csat, Suggestion):
        assert len(await _all(services, model)) == (2 if model is Message else 1), model
    # the editors' approved entry stays, tied to no one any more
    [version] = [v for v in await _all(services, ArticleVersion) if v.author == "erin"]
    assert (version.source_file, version.source_anchor) == ("agents", "")
    assert approved.article_key == "agents/old-question-about-invoices"
    assert await _all(services, Embedding)
    [approval, entry] = await _all(services, AuditEntry)
    assert (entry.actor, entry.action) == ("system", "purged") and "older than 30 days" in entry.detail
    assert (approval.action, approval.detail) == ("suggestion_approved", "")  # no words of theirs
    again = await purge(services.sessions, older_than_days=30)
    assert again.conversations == 0 and len(await _all(services, AuditEntry)) == 2


async def test_purge_keeps_the_conversation_of_an_open_ticket(services: Services) -> None:
    await _history(services, 9001, age=timedelta(days=60), question="Still waiting?")
    async with services.sessions() as session, session.begin():
        ticket = (await session.scalars(select(Ticket))).one()
        ticket.state = TicketState.WAITING
    done = await purge(services.sessions, older_than_days=30)
    assert (done.conversations, done.customers) == (0, 0)
    assert len(await _all(services, Message)) == 2


async def _all(services: Services, model: type) -> list:
    async with services.sessions() as session:
        return list((await session.scalars(select(model).order_by(model.id))).all())


async def test_the_command_line_purge(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    await _history(services, 9001, age=timedelta(days=60), question="Old?")
    monkeypatch.setenv("HELPDESK_DATABASE__URL", services.settings.database.url)
    monkeypatch.delenv("HELPDESK_CONFIG", raising=False)
    runner = CliRunner()
    off = await asyncio.to_thread(runner.invoke, app, ["privacy", "purge"])
    assert off.exit_code == 0 and "retention_days is 0" in off.stdout

    monkeypatch.setenv("HELPDESK_PRIVACY__RETENTION_DAYS", "30")
    dry = await asyncio.to_thread(runner.invoke, app, ["privacy", "purge", "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    counts = json.loads(dry.stdout)
    assert (counts["dry_run"], counts["older_than_days"], counts["conversations"], counts["messages"]) == (
        True, 30, 1, 2,
    )  # fmt: skip
    assert len(await _all(services, Message)) == 2
    real = await asyncio.to_thread(runner.invoke, app, ["privacy", "purge"])
    assert real.exit_code == 0 and "deleted 1 customers, 1 conversations, 2 messages" in real.stdout
    assert not await _all(services, Message) and not await _all(services, Customer)

    exported = await asyncio.to_thread(runner.invoke, app, ["privacy", "export", "9001"])
    assert exported.exit_code == 1 and "nothing is stored" in exported.stderr


async def test_the_bot_runs_the_purge_in_the_background(make_harness) -> None:
    from bot.app import purge_daily

    async with make_harness() as harness:
        await _history(harness.services, 9001, age=timedelta(days=60), question="Old?")
        harness.services.settings = harness.services.settings.model_copy(
            update={"privacy": harness.services.settings.privacy.model_copy(update={"retention_days": 30})}
        )
        task = asyncio.create_task(purge_daily(harness.services, every=0.05))
        try:
            await eventually(lambda: _none_left(harness.services))
        finally:
            task.cancel()


async def _none_left(services: Services) -> bool:
    return not await _all(services, Customer)


# -- the setting and the migration -----------------------------------------------------------------


@pytest.mark.parametrize("value", ["-1", "100000"])
def test_retention_days_is_validated(value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"[privacy]\nretention_days = {value}\n")
    with pytest.raises(ConfigError, match=r"privacy\.retention_days"):
        load_settings(path)
    path.write_text("[privacy]\nretention_days = 90\n")
    assert load_settings(path).privacy.retention_days == 90


def test_a_database_at_0002_upgrades_to_head_and_back(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    url = f"sqlite+aiosqlite:///{path}"
    db.upgrade_sync(url, "0002")
    with sqlite3.connect(path) as con:
        con.execute(
            "INSERT INTO suggestions (id, question, answer, agent_id, status, created_at) "
            "VALUES (1, 'Q?', 'A.', 7, 'pending', '2026-01-01')"
        )
    db.upgrade_sync(url)
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT version_num FROM alembic_version").fetchone() == (db.head_revision(),)
        assert con.execute("SELECT id, status, announced_at FROM suggestions").fetchall() == [
            (1, "pending", None)
        ]
        columns = {row[1] for row in con.execute("PRAGMA table_info(audit_log)")}
        assert columns == {"id", "at", "actor", "action", "customer_id", "detail"}
    from alembic import command

    command.downgrade(db.alembic_config(url), "0002")
    with sqlite3.connect(path) as con:
        assert "audit_log" not in {row[0] for row in con.execute("SELECT name FROM sqlite_master")}
        assert con.execute("SELECT id, question FROM suggestions").fetchall() == [(1, "Q?")]
