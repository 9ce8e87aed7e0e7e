"""The hand-over's parts on their own: business hours, settings, the migration, the paced sender,
the card and the customer's acknowledgement."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramRetryAfter
from aiogram.methods import CopyMessage, SendMessage

from bot.config import load_settings
from bot.errors import ConfigError
from bot.forum import CARD_LIMIT, card_html, topic_name
from bot.handover import Escalation, acknowledgement
from bot.pacing import PacedSender, Pacing
from bot.sandbox import BotAPISandbox, Chat, User
from bot.texts import EN
from kb import db
from kb.hours import parse_business_hours
from kb.models import Author, TicketState
from kb.tickets import Card, Line, TicketView

PRAGUE = "Mon-Fri 09:00-18:00, Sat 10:00-14:00 Europe/Prague"


# -- business hours ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "open_", "next_opening"),
    [
        ("2026-11-27T10:00:00+01:00", True, "2026-11-27T10:00:00+01:00"),  # Friday morning
        ("2026-11-27T18:30:00+01:00", False, "2026-11-28T10:00:00+01:00"),  # Friday evening -> Saturday
        ("2026-11-28T14:00:00+01:00", False, "2026-11-30T09:00:00+01:00"),  # Saturday 14:00 -> Monday
        ("2026-11-29T23:59:00+01:00", False, "2026-11-30T09:00:00+01:00"),  # Sunday night
        ("2026-03-27T19:00:00+01:00", False, "2026-03-28T10:00:00+01:00"),
        ("2026-03-28T15:00:00+01:00", False, "2026-03-30T09:00:00+02:00"),  # across the DST change
    ],
)
def test_business_hours(at: str, open_: bool, next_opening: str) -> None:
    hours = parse_business_hours(PRAGUE)
    assert hours is not None and hours.zone_name == "Europe/Prague"
    when = datetime.fromisoformat(at)
    assert hours.is_open(when) is open_
    assert hours.next_opening(when) == datetime.fromisoformat(next_opening)
    assert hours.next_opening(when.astimezone(UTC)) == datetime.fromisoformat(next_opening)


def test_business_hours_forms() -> None:
    assert parse_business_hours("") is None and parse_business_hours("   ") is None
    weekend = parse_business_hours("Fri-Mon 00:00-24:00 UTC")
    assert weekend is not None and sorted(weekend.openings[0].days) == [0, 4, 5, 6]
    daily = parse_business_hours("daily 08:00-20:00 America/New_York")
    assert daily is not None and daily.is_open(datetime(2026, 7, 4, 12, tzinfo=UTC))  # 08:00 in New York


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Mon-Fri 09:00-18:00", "end with a time zone"),
        ("Mon-Fri 09:00-18:00 Europe/Prag", "unknown time zone 'Europe/Prag'"),
        ("Mun-Fri 09:00-18:00 UTC", "unknown day 'Mun'"),
        ("Mon-Fri 9-18 UTC", "cannot read 'Mon-Fri 9-18'"),
        ("Mon 18:00-09:00 UTC", "closing time must be after the opening time"),
        ("Mon 09:00-25:00 UTC", "'25:00' is not a time of day"),
    ],
)
def test_bad_business_hours_are_a_config_error_naming_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[helpdesk]\nbusiness_hours = "{text}"\n')
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    assert "helpdesk.business_hours" in str(raised.value) and message in str(raised.value)


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[telegram]\nagents_chat_id = 12345\n", "telegram.agents_chat_id"),
        ("[telegram]\nagents = [-5]\n", "telegram.agents"),
        ("[helpdesk]\nescalate_after_unanswered = -1\n", "helpdesk.escalate_after_unanswered"),
        ("[helpdesk]\ncolour = 1\n", "unknown key helpdesk.colour"),
    ],
)
def test_bad_hand_over_settings(tmp_path: Path, toml: str, key: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_settings(path)


def test_hand_over_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        "[telegram]\nagents_chat_id = -1001234567890\nagents = [1, 2]\n"
        f'[helpdesk]\nbusiness_hours = "{PRAGUE}"\n'
    )
    monkeypatch.setenv("HELPDESK_HELPDESK__ESCALATE_AFTER_UNANSWERED", "3")
    settings = load_settings(path)
    assert (settings.telegram.agents_chat_id, settings.telegram.agents) == (-1001234567890, [1, 2])
    assert settings.helpdesk.escalate_after_unanswered == 3
    assert settings.helpdesk.hours is not None and settings.helpdesk.hours.text == PRAGUE


# -- the migration -------------------------------------------------------------------------------


def test_a_database_at_0001_upgrades_and_keeps_its_tickets(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    url = f"sqlite+aiosqlite:///{path}"
    db.upgrade_sync(url, "0001")
    with sqlite3.connect(path) as con:
        con.execute(
            "INSERT INTO customers (id, telegram_id, first_name, first_seen, last_seen, tags, notes) "
            "VALUES (1, 501, 'Ann', '2026-01-01', '2026-01-01', '[]', '')"
        )
        con.execute(
            "INSERT INTO conversations (id, customer_id, chat_id, started_at, last_message_at) "
            "VALUES (1, 1, 501, '2026-01-01', '2026-01-01')"
        )
        con.execute(
            "INSERT INTO tickets (id, customer_id, conversation_id, state, reason, opened_at) "
            "VALUES (1, 1, 1, 'waiting', 'command', '2026-01-01')"
        )
    db.upgrade_sync(url, "0002")
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT version_num FROM alembic_version").fetchone() == ("0002",)
        assert con.execute("SELECT id, state, chat_id, topic_id FROM tickets").fetchall() == [
            (1, "waiting", 501, None)
        ]
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"suggestions", "csat"} <= tables
        columns = {row[1] for row in con.execute("PRAGMA table_info(messages)")}
        assert {"ticket_id", "relay_message_id", "agent_id"} <= columns
    from alembic import command

    command.downgrade(db.alembic_config(url), "0001")
    with sqlite3.connect(path) as con:
        assert "csat" not in {row[0] for row in con.execute("SELECT name FROM sqlite_master")}


# -- the paced sender ----------------------------------------------------------------------------

GROUP = Chat.forum(-1009000000001, "Agents")
CUSTOMER = User(501, "Ann")


@pytest.fixture
async def sandbox() -> AsyncIterator[BotAPISandbox]:
    async with BotAPISandbox() as running:
        running.add_chat(GROUP)
        running.add_chat(Chat.private(CUSTOMER))
        yield running


@pytest.fixture
async def bot(sandbox: BotAPISandbox) -> AsyncIterator[Bot]:
    client = Bot(sandbox.token, session=AiohttpSession(api=TelegramAPIServer.from_base(sandbox.url)))
    yield client
    await client.session.close()


def group_sends(sandbox: BotAPISandbox) -> list[float]:
    return [c.time for c in sandbox.calls if c.ok and c.chat_id == GROUP.id and c.method == "sendMessage"]


def test_the_default_pacing_is_telegrams() -> None:
    pacing = Pacing()
    assert pacing.group_limit / pacing.window <= 20 / 60  # 20 messages a minute into a group
    assert pacing.group_interval >= 1.0 and pacing.private_interval >= 1.0
    assert pacing.overall_per_second <= 30


async def test_a_group_gets_at_most_its_limit_per_window_in_order(sandbox: BotAPISandbox, bot: Bot) -> None:
    sender = PacedSender(Pacing(group_interval=0.02, group_limit=3, window=0.6, private_interval=0.0))
    sender.bind(bot)
    futures = [sender.submit(GROUP.id, SendMessage(chat_id=GROUP.id, text=f"n{i}")) for i in range(7)]
    await asyncio.gather(*futures)
    assert [m.plain_text for m in sandbox.messages_to(GROUP.id)] == [f"n{i}" for i in range(7)]
    sent = group_sends(sandbox)
    for i, at in enumerate(sent):
        assert sum(1 for t in sent[i:] if t - at < 0.6 - 0.02) <= 3
    assert sent[-1] - sent[0] >= 1.2 - 0.05  # 7 messages at 3 per 0.6 s: three windows


async def test_a_429_pauses_the_chat_for_retry_after_then_retries(sandbox: BotAPISandbox, bot: Bot) -> None:
    sender = PacedSender(Pacing.fast())
    sender.bind(bot)
    sandbox.fail_next("sendMessage", error_code=429, retry_after=1)
    started = time.monotonic()
    first = sender.submit(GROUP.id, SendMessage(chat_id=GROUP.id, text="one"))
    second = sender.submit(GROUP.id, SendMessage(chat_id=GROUP.id, text="two"))
    await asyncio.gather(first, second)
    assert time.monotonic() - started >= 1.0
    assert [m.plain_text for m in sandbox.messages_to(GROUP.id)] == ["one", "two"]
    assert sender.stats.retried_after_429 == 1 and sender.stats.sent == 2

    sandbox.fail_next("sendMessage", error_code=502)
    await sender.send(GROUP.id, SendMessage(chat_id=GROUP.id, text="three"))
    assert sender.stats.retried_after_error == 1

    stubborn = PacedSender(dataclasses.replace(Pacing.fast(), retries=1))
    stubborn.bind(bot)
    sandbox.fail_next("sendMessage", error_code=429, retry_after=1, times=2)
    with pytest.raises(TelegramRetryAfter):
        await stubborn.send(GROUP.id, SendMessage(chat_id=GROUP.id, text="never"))
    assert stubborn.stats.failed == 1 and sender.stats.failed == 0


async def test_texts_waiting_in_a_backed_up_queue_are_coalesced(sandbox: BotAPISandbox, bot: Bot) -> None:
    sender = PacedSender(Pacing.fast())
    sender.bind(bot)
    sandbox.fail_next("copyMessage", error_code=429, retry_after=1)
    sources = [
        sandbox.send_message(chat=CUSTOMER, text=f"part {i} <b>")["message"]["message_id"] for i in range(5)
    ]
    photo = sandbox.send_photo(chat=CUSTOMER, caption="pic")["message"]["message_id"]

    def copy(message_id: int) -> CopyMessage:
        return CopyMessage(chat_id=GROUP.id, from_chat_id=CUSTOMER.id, message_id=message_id)

    key = ("topic", 1)
    futures = [sender.submit(GROUP.id, copy(sources[0]), merge_key=key, merge_html="part 0 &lt;b&gt;")]
    await sandbox.wait_for(lambda c: c.method == "copyMessage" and c.error_code == 429)  # on its way
    futures += [
        sender.submit(GROUP.id, copy(m), merge_key=key, merge_html=f"part {i} &lt;b&gt;")
        for i, m in enumerate(sources[1:3], 1)
    ]
    futures.append(sender.submit(GROUP.id, copy(photo), merge_key=key))
    futures += [
        sender.submit(GROUP.id, copy(m), merge_key=key, merge_html=f"part {i} &lt;b&gt;")
        for i, m in enumerate(sources[3:], 3)
    ]
    results = await asyncio.gather(*futures)
    shown = [(m.content_type, m.plain_text or m.plain_caption) for m in sandbox.messages_to(GROUP.id)]
    assert shown == [
        ("text", "part 0 <b>"),
        ("text", "part 1 <b>\n\npart 2 <b>"),  # waited behind the 429: one message
        ("photo", "pic"),  # never merged, and nothing jumps over it
        ("text", "part 3 <b>\n\npart 4 <b>"),
    ]
    assert results[1].message_id == results[2].message_id and sender.stats.merged == 2


# -- what people read ------------------------------------------------------------------------------


def _ticket(**changes: object) -> TicketView:
    values: dict[str, object] = dict(
        id=7, state=TicketState.WAITING, customer_id=1, customer_telegram_id=501, customer_name="Ann Lee",
        language="en", chat_id=501, topic_id=None, card_message_id=None, agent_id=None, agent_name=None,
        reason="command", question="Why does the app crash when I upload a very large video file?",
        opened_at=datetime(2026, 11, 23, 10, tzinfo=UTC), first_response_at=None, resolved_at=None,
        outcome=None,
    )  # fmt: skip
    values.update(changes)
    return TicketView(**values)  # type: ignore[arg-type]


def test_topic_names() -> None:
    assert topic_name(_ticket()) == "#7 Ann Lee — Why does the app crash when…"
    assert topic_name(_ticket(question=None)) == "#7 Ann Lee"
    long = topic_name(_ticket(customer_name="A" * 200))
    assert len(long) == 128 and long.endswith("…")


def test_the_card_fits_one_message_however_long_the_conversation() -> None:
    at = datetime(2026, 11, 23, 9, tzinfo=UTC)
    lines = [
        Line(at=at, author=Author.CUSTOMER, content_type="text", text=f"question {i} " + "x" * 500)
        for i in range(300)
    ]
    card = Card(ticket=_ticket(), username=None, first_seen=at, earlier=[], lines=lines, attempts=[])
    html, attach = card_html(card, EN)
    assert len(html) <= CARD_LIMIT and attach
    assert "question 299" in html and "no username" in html


def test_the_acknowledgement_outside_business_hours() -> None:
    hours = parse_business_hours(PRAGUE)
    assert hours is not None
    now = datetime(2026, 11, 27, 20, 0, tzinfo=UTC)  # Friday 21:00 in Prague
    escalation = Escalation(_ticket(), True, 3, hours.next_opening(now))
    text = acknowledgement(escalation, EN, now=now)
    assert "request #7" in text and "Your place in the queue: 3." in text
    assert "They're back tomorrow at 10:00 (Europe/Prague time), in about 13 hours" in text
    monday = acknowledgement(
        Escalation(_ticket(), False, 0, hours.next_opening(now + timedelta(days=1))),
        EN,
        now=now + timedelta(days=1),
    )
    assert "already with our team" in monday and "on Monday at 09:00" in monday
    assert acknowledgement(None, EN) == EN.human_unavailable
