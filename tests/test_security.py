"""Security: roles, forged button presses, per-customer flood control, escaping for the parse mode.

Scenario tests drive the real dispatcher through the sandbox Bot API over HTTP. A forged press is
what a modified client can send: any callback data, on any message of the presser's own chat
(``press_button(..., strict=False)``). It must be refused with a short toast and change nothing:
no row, no message to anyone. The sandbox parses HTML as Telegram does and answers 400 to a
malformed entity, so "no failed call" means no text broke its parse mode.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiogram.types import Chat, Update
from aiogram.types import Message as TgMessage
from aiogram.types import User as TgUser
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from bot.config import SecuritySettings, Settings
from bot.flood import Buckets, FloodControl
from bot.keyboards import (
    ArticleCb,
    CsatCb,
    FeedbackCb,
    HumanCb,
    ReviewCb,
    SendAnswerCb,
    TicketCb,
    offers,
    suggestions,
)
from bot.render import render_answer, toast_text
from bot.sandbox import ApiCall, BotAPISandbox, EntityParseError, SentMessage, User, parse_entities
from bot.texts import EDITOR_EN, EN
from ingest.pipeline import ingest_paths
from kb.conversations import Shown
from kb.models import (
    Article,
    ArticleVersion,
    Author,
    Csat,
    Direction,
    Feedback,
    Message,
    Suggestion,
    SuggestionStatus,
    Ticket,
    TicketState,
)
from tests.conftest import BotHarness, eventually, make_settings, running_bot

log = logging.getLogger(__name__)

ANN = User(601, "Ann", language_code="en")
BEN = User(602, "Ben", language_code="en")
CID = User(603, "Cid", language_code="en")
MALLORY = User(950, "Mallory", username="mallory")
EDITOR = User(900, "Erin", "Editor", language_code="en")
PIZZA = "What's the best pizza place in Naples?"

# Everything that breaks a careless HTML message: tags (known, unknown, unclosed, stray end
# tags), bare and broken entities, and the Markdown markers a renderer might act on.
NASTY = "<b>bold? & <i>it</i> </b> <script> &amp &lt; &#x; &#0; &#xD800; *star* _under_ `tick` ``` [x](y)"


async def rows(harness: BotHarness, model: type, *where: Any) -> list[Any]:
    async with harness.services.sessions() as session:
        return list((await session.scalars(select(model).where(*where).order_by(model.id))).all())


async def count(harness: BotHarness, model: type) -> int:
    async with harness.services.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


def failed_calls(sandbox: BotAPISandbox) -> list[str]:
    """Every Bot API call that failed, but "message is not modified": two refreshes of the card
    racing each other send the same text twice, and the desk expects that answer."""
    return [
        call.describe()
        for call in sandbox.calls
        if not call.ok and "message is not modified" not in (call.description or "")
    ]


async def toast_of(sandbox: BotAPISandbox, update: dict[str, Any]) -> ApiCall:
    """The answerCallbackQuery the bot made for a press (``press_button``'s update)."""
    query_id = update["callback_query"]["id"]
    [call] = await sandbox.wait_for(
        lambda c: c.method == "answerCallbackQuery" and c.params.get("callback_query_id") == query_id
    )
    return call


async def escalate(harness: BotHarness, user: User, question: str) -> tuple[Ticket, int]:
    """The customer asks, then ``/human``; returns the ticket and its forum topic."""
    await harness.say(user, question)
    await harness.say(user, "/human")

    async def opened() -> list[Ticket]:
        return await rows(harness, Ticket, Ticket.state == TicketState.WAITING)

    ticket = [t for t in await eventually(opened) if t.chat_id == user.id][-1]
    return ticket, await harness.topic_of(ticket.id)


def in_forum(harness: BotHarness, user: User, text: str, topic: int | None) -> None:
    harness.sandbox.send_message(chat=harness.forum, user=user, text=text, message_thread_id=topic)


async def next_in_topic(harness: BotHarness, topic: int, after: int) -> SentMessage:
    return await harness.sandbox.wait_for_bot_message(harness.forum.id, after=after, thread_id=topic)


async def snapshot(harness: BotHarness) -> dict[str, Any]:
    """What a press must not change: rows, ticket states, suggestions, every chat's messages."""
    sandbox = harness.sandbox
    chats = {ANN.id, BEN.id, CID.id, EDITOR.id, harness.forum.id}
    return {
        "messages": await count(harness, Message),
        "feedback": await count(harness, Feedback),
        "csat": await count(harness, Csat),
        "tickets": [(t.id, t.state, t.agent_id) for t in await rows(harness, Ticket)],
        "suggestions": [(s.id, s.status) for s in await rows(harness, Suggestion)],
        "versions": await count(harness, ArticleVersion),
        "sent": {chat: len(sandbox.messages_to(chat)) for chat in chats},
        "edits": sum(1 for c in sandbox.calls if c.method.startswith("edit")),
    }


# -- roles and forged presses: customers --------------------------------------------------------------


async def test_forged_presses_in_a_private_chat_are_refused_and_change_nothing(harness: BotHarness) -> None:
    sandbox = harness.sandbox
    answer = await harness.say(ANN, "How do I cancel my subscription?")
    assert answer.buttons == [["👍 Helped", "👎 Didn't help"]]
    await harness.say(BEN, "Which payment methods do you accept?")
    [bens_answer] = await rows(harness, Message, Message.author == Author.BOT, Message.chat_id == BEN.id)
    did_you_mean = await harness.say(ANN, "change my login details")
    offered = [data for data in did_you_mean.button_data if data.startswith("art:")]
    assert offered, did_you_mean.buttons
    offered_versions = {ArticleCb.unpack(data).version for data in offered}
    never_offered = next(v.id for v in await rows(harness, ArticleVersion) if v.id not in offered_versions)

    # Ben's resolved ticket, with the rating buttons in his chat
    ticket, topic = await escalate(harness, BEN, PIZZA)
    in_forum(harness, harness.agent, "/close", topic)
    await eventually(lambda: rows(harness, Ticket, Ticket.state == TicketState.RESOLVED))
    async with harness.services.sessions() as session, session.begin():
        session.add(Suggestion(question="Is there parking?", answer="No.", agent_id=0))
    [suggestion] = await rows(harness, Suggestion)
    await harness.settle()

    refused = EN.button_refused
    forged = [  # (the message Ann presses on, the data her client sends, the toast she must get)
        (answer, FeedbackCb(message=bens_answer.id, helpful=False).pack(), EN.feedback_unknown),
        (did_you_mean, ArticleCb(version=never_offered).pack(), refused),
        (answer, offered[0], refused),  # an article offered elsewhere, pressed on another message
        (answer, HumanCb(reason="<b>urgent</b>").pack(), refused),
        (answer, TicketCb(action="close", ticket=ticket.id).pack(), refused),
        (answer, TicketCb(action="claim", ticket=ticket.id).pack(), refused),
        (answer, SendAnswerCb(ticket=ticket.id, version=never_offered).pack(), refused),
        (answer, ReviewCb(action="approve", suggestion=suggestion.id).pack(), refused),
        (answer, CsatCb(ticket=ticket.id, score=1).pack(), EN.csat_unknown),
        (answer, "fb:not-a-number:x", refused),
        (answer, "nonsense", refused),
    ]
    before = await snapshot(harness)
    for message, data, toast in forged:
        update = sandbox.press_button(
            chat=ANN.id, user=ANN, message_id=message.message_id, data=data, strict=False
        )
        call = await toast_of(sandbox, update)
        assert call.ok and call.params.get("text") == toast, (data, call.describe())
        assert len(toast) <= 200 and not call.params.get("show_alert")
    await harness.settle()
    assert await snapshot(harness) == before
    assert not await rows(harness, Message, Message.decision == "picked")
    assert failed_calls(sandbox) == []

    # the real buttons still work: the offered article, then the rating of one's own ticket
    sandbox.press_button(chat=ANN.id, user=ANN, message_id=did_you_mean.message_id, data=offered[0])
    picked = await sandbox.wait_for_bot_message(ANN.id, after=before["sent"][ANN.id])
    assert picked.buttons == [["👍 Helped", "👎 Didn't help"]]
    rating = sandbox.messages_to(BEN.id)[-1]
    assert "rate the help" in (rating.plain_text or "")
    update = sandbox.press_button(chat=BEN.id, user=BEN, message_id=rating.message_id, button_text="4 ⭐")
    assert (await toast_of(sandbox, update)).params["text"] == EN.csat_thanks.format(score=4)
    assert [c.score for c in await rows(harness, Csat)] == [4]


# -- roles and forged presses: the agents' forum --------------------------------------------------------


async def test_in_the_agents_chat_only_agents_act_and_only_on_what_was_offered(harness: BotHarness) -> None:
    sandbox = harness.sandbox
    ticket, topic = await escalate(harness, ANN, "My password reset link has expired, what now?")
    await harness.settle()
    customer_before = len(sandbox.messages_to(ANN.id))

    # a non-agent's /close in the topic: refused, nothing reaches the customer, the ticket stays open
    seen = len(harness.in_topic(topic))
    in_forum(harness, MALLORY, "/close", topic)
    refusal = await next_in_topic(harness, topic, after=seen)
    assert refusal.plain_text == EN.stranger_refused
    # a non-agent's command in General: refused too
    general_before = len(sandbox.messages_to(harness.forum.id))
    in_forum(harness, MALLORY, "/stats", None)
    stranger = await sandbox.wait_for_bot_message(harness.forum.id, after=general_before)
    assert stranger.plain_text == EN.stranger_command and stranger.thread_id is None

    # the agent's /suggest: one "Send" per offered article
    seen = len(harness.in_topic(topic))
    in_forum(harness, harness.agent, "/suggest", topic)
    suggested = await next_in_topic(harness, topic, after=seen)
    sends = suggested.button_data
    assert sends and all(data.startswith("tks:") for data in sends)
    offered = {SendAnswerCb.unpack(data).version for data in sends}
    never_offered = next(v.id for v in await rows(harness, ArticleVersion) if v.id not in offered)
    card = harness.in_topic(topic)[0]
    await harness.settle()

    before = await snapshot(harness)
    forged = [  # (who presses, on which message, the data, the toast)
        (MALLORY, suggested, sends[0], EN.stranger_toast),
        (
            harness.agent,
            suggested,
            SendAnswerCb(ticket=ticket.id, version=never_offered).pack(),
            EN.button_refused,
        ),
        (harness.agent, card, sends[0], EN.button_refused),  # offered, but not on this message
        (harness.agent, card, TicketCb(action="delete", ticket=ticket.id).pack(), EN.button_refused),
        (harness.agent, card, CsatCb(ticket=ticket.id, score=5).pack(), EN.button_refused),
        (harness.agent, card, ArticleCb(version=never_offered).pack(), EN.button_refused),
        (harness.agent, card, "nonsense", EN.button_refused),
    ]
    for user, message, data, toast in forged:
        update = sandbox.press_button(
            chat=harness.forum, user=user, message_id=message.message_id, data=data, strict=False
        )
        call = await toast_of(sandbox, update)
        assert call.ok and call.params.get("text") == toast, (data, call.describe())
    await harness.settle()
    assert await snapshot(harness) == before
    assert len(sandbox.messages_to(ANN.id)) == customer_before
    assert (await rows(harness, Ticket))[0].state is TicketState.WAITING

    # the offered article, pressed where it was offered, goes to the customer
    update = sandbox.press_button(
        chat=harness.forum, user=harness.agent, message_id=suggested.message_id, data=sends[0]
    )
    assert (await toast_of(sandbox, update)).params["text"] == EN.kb_sent_toast
    sent = await sandbox.wait_for_bot_message(ANN.id, after=customer_before)
    assert "Source:" in (sent.plain_text or "")
    assert failed_calls(sandbox) == []


# -- roles: editors ------------------------------------------------------------------------------------

EDITOR_FAQ = b"""## Do you ship to Iceland?

Yes: Iceland is in our EU shipping zone, delivery takes 3-5 working days.
"""


def _with_editors(base: Settings, tmp_path: Path) -> Settings:
    return base.model_copy(
        update={
            "telegram": base.telegram.model_copy(update={"editors": [EDITOR.id]}),
            "ingest": base.ingest.model_copy(update={"uploads_dir": tmp_path / "uploads"}),
        }
    )


@pytest.fixture
async def editors_harness(tmp_path: Path, encoder) -> AsyncIterator[BotHarness]:
    async with running_bot(_with_editors(make_settings(tmp_path), tmp_path), encoder) as harness:
        yield harness


async def test_documents_and_reviews_are_for_editors_only(
    editors_harness: BotHarness, tmp_path: Path
) -> None:
    harness, sandbox = editors_harness, editors_harness.sandbox
    articles = await count(harness, Article)

    # a customer's FAQ file is a customer's message: stored, never downloaded nor ingested
    sandbox.send_document(chat=MALLORY.id, user=MALLORY, file_name="faq.md", content=EDITOR_FAQ)
    reply = await sandbox.wait_for_bot_message(MALLORY.id)
    assert reply.plain_text == EN.not_text
    assert not sandbox.calls_to("getFile") and not (tmp_path / "uploads").exists()
    assert await count(harness, Article) == articles

    # an editor's press with an action no keyboard makes, and a stranger's: nothing decided
    await harness.say(EDITOR, "/kb")  # Telegram lets bots write only to people who started a chat
    async with harness.services.sessions() as session, session.begin():
        session.add(Suggestion(question="Is there parking?", answer="No.", agent_id=0))
    review = await sandbox.wait_for_bot_message(EDITOR.id, after=1)
    assert review.buttons == [["✅ Approve", "✏️ Edit", "❌ Reject"]]
    [suggestion] = await rows(harness, Suggestion)
    forged = ReviewCb(action="publish", suggestion=suggestion.id).pack()
    update = sandbox.press_button(
        chat=EDITOR.id, user=EDITOR, message_id=review.message_id, data=forged, strict=False
    )
    assert (await toast_of(sandbox, update)).params["text"] == EN.button_refused
    approve = ReviewCb(action="approve", suggestion=suggestion.id).pack()
    update = sandbox.press_button(chat=EDITOR.id, user=MALLORY, message_id=review.message_id, data=approve)
    assert (await toast_of(sandbox, update)).params["text"] == EDITOR_EN.review_stranger
    await harness.settle()
    assert [s.status for s in await rows(harness, Suggestion)] == [SuggestionStatus.PENDING]

    # an editor's file with a name made to break HTML: acknowledged, ingested, summarised
    name = "<b>&amp faq_*`.md"
    before = len(sandbox.messages_to(EDITOR.id))
    sandbox.send_document(chat=EDITOR.id, user=EDITOR, file_name=name, content=EDITOR_FAQ)
    ingesting = await sandbox.wait_for_bot_message(EDITOR.id, after=before)
    assert name in (ingesting.plain_text or "")
    summary = await sandbox.wait_for_bot_message(EDITOR.id, after=before + 1, timeout=30)
    assert "added 1" in (summary.plain_text or "")
    assert await count(harness, Article) == articles + 1
    assert failed_calls(sandbox) == []


# -- flood control --------------------------------------------------------------------------------------

QUESTIONS = (
    "How do I reset my password?",
    "How do I cancel my subscription?",
    "Which payment methods do you accept?",
    "How do I change the email address on my account?",
)


def _notices(sandbox: BotAPISandbox, user: User) -> list[SentMessage]:
    return [m for m in sandbox.messages_to(user.id) if m.plain_text == EN.flood_notice]


async def test_a_flood_gets_one_notice_while_others_are_answered_promptly(
    settings: Settings, encoder
) -> None:
    defaults = settings.model_copy(update={"security": SecuritySettings()})
    async with running_bot(defaults, encoder) as harness:
        await _flood(harness)


async def _flood(harness: BotHarness) -> None:
    sandbox = harness.sandbox
    security = harness.services.settings.security
    await harness.say(BEN, "How do I reset my password?")  # the first search of a process warms up
    started = time.monotonic()
    for number in range(40):
        sandbox.send_message(chat=ANN.id, user=ANN, text=f"{QUESTIONS[number % len(QUESTIONS)]} ({number})")
    sandbox.send_message(chat=BEN.id, user=BEN, text="Which payment methods do you accept?")
    bens = await sandbox.wait_for_bot_message(BEN.id, after=1)
    ben_waited = time.monotonic() - started
    assert "Source:" in (bens.plain_text or "")

    async def all_stored() -> list[Message]:
        found = await rows(harness, Message, Message.chat_id == ANN.id, Message.direction == Direction.IN)
        return found if len(found) == 40 else []

    stored = await eventually(all_stored, within=60)
    await sandbox.wait_idle(quiet=0.5, timeout=60)
    took = time.monotonic() - started

    assert len(_notices(sandbox, ANN)) == 1
    answers = [m for m in sandbox.messages_to(ANN.id) if m.plain_text != EN.flood_notice]
    refilled = math.ceil(took * security.flood_per_minute / 60)
    assert security.flood_burst <= len(answers) <= security.flood_burst + refilled
    assert [int(m.text.rsplit("(", 1)[1].rstrip(")")) for m in stored] == list(range(40))  # all, in order
    answered = await rows(harness, Message, Message.chat_id == ANN.id, Message.decision == "answer")
    assert len(answered) == len(answers)
    assert ben_waited < 5, f"Ben waited {ben_waited:.1f}s"
    assert failed_calls(sandbox) == []
    log.warning(
        "flood: 40 messages at once -> %d answered, 1 notice, all 40 stored in %.1fs; "
        "another customer answered %.2fs after sending",
        len(answers), took, ben_waited,
    )  # fmt: skip


def _tight(base: Settings, tmp_path: Path) -> Settings:
    """Two messages at once, then one a minute; Erin (an editor) is exempt."""
    tight = _with_editors(base, tmp_path)
    return tight.model_copy(
        update={"security": tight.security.model_copy(update={"flood_burst": 2, "flood_per_minute": 1})}
    )


async def test_flood_control_spares_editors_agents_and_open_tickets(tmp_path: Path, encoder) -> None:
    async with running_bot(_tight(make_settings(tmp_path), tmp_path), encoder) as harness:
        sandbox = harness.sandbox
        # an editor writing fast is answered every time
        for question in QUESTIONS:
            sandbox.send_message(chat=EDITOR.id, user=EDITOR, text=question)
        await eventually(lambda: _count_sent(sandbox, EDITOR, 4), within=30)

        # a customer over the rate: one notice; a press is refused with a toast and stores nothing
        first = await harness.say(CID, QUESTIONS[0])
        await harness.say(CID, QUESTIONS[1])
        for question in QUESTIONS[2:]:
            sandbox.send_message(chat=CID.id, user=CID, text=question)
        await eventually(lambda: _count_stored(harness, CID, 4))
        await harness.settle()
        assert len(_notices(sandbox, CID)) == 1 and len(sandbox.messages_to(CID.id)) == 3
        update = sandbox.press_button(
            chat=CID.id, user=CID, message_id=first.message_id, button_text="👍 Helped"
        )
        assert (await toast_of(sandbox, update)).params["text"] == EN.flood_toast
        await harness.settle()
        assert not await rows(harness, Feedback)

        # with an open ticket everything goes to the agents: their queue merges bursts
        _, topic = await escalate(harness, BEN, PIZZA)  # his two messages
        for number in range(6):
            sandbox.send_message(chat=BEN.id, user=BEN, text=f"more detail {number}")

        async def relayed() -> bool:
            shown = " ".join(m.plain_text or "" for m in harness.in_topic(topic))
            return all(f"more detail {n}" in shown for n in range(6))

        assert await eventually(relayed, within=20)
        assert not _notices(sandbox, BEN)

        # the agent exempt by id writes to the bot privately, fast
        agent = harness.agent
        for question in QUESTIONS[:3]:
            sandbox.send_message(chat=agent.id, user=agent, text=question)
        await eventually(lambda: _count_sent(sandbox, agent, 3), within=30)
        assert not _notices(sandbox, agent) and not _notices(sandbox, EDITOR)
        assert failed_calls(sandbox) == []


async def test_questions_start_their_search_on_arrival_unless_flood_control_holds_them(
    tmp_path: Path, encoder
) -> None:
    async with running_bot(_tight(make_settings(tmp_path), tmp_path), encoder) as harness:
        kb = harness.services.kb
        started: list[str] = []
        start_search = kb.start_search

        def recording(text: str, **options: Any) -> None:
            started.append(text)
            start_search(text, **options)

        kb.start_search = recording  # type: ignore[method-assign]
        reply = await harness.say(ANN, QUESTIONS[0])  # one of Ann's two tokens spent
        assert started == [QUESTIONS[0]] and "Source:" in (reply.plain_text or "")
        assert not kb._early  # taken over by the answer's search
        started.clear()

        def update(number: int, user: User, text: str | None, *, chat: int | None = None) -> Update:
            sender = TgUser(id=user.id, is_bot=False, first_name=user.first_name)
            where = Chat(id=chat or user.id, type="private" if chat is None else "supergroup")
            message = TgMessage(message_id=number, date=0, chat=where, from_user=sender, text=text)
            return Update(update_id=10_000 + number, message=message)

        arrival = [
            update(1, ANN, QUESTIONS[1]),  # her last token
            update(2, ANN, QUESTIONS[2]),  # would be held back
            update(3, EDITOR, QUESTIONS[3]),  # exempt
            update(4, BEN, "/help"),
            update(5, BEN, None),  # a sticker, say
            update(6, BEN, "?!"),
            update(7, BEN, QUESTIONS[1], chat=-100123),
        ]
        harness.dispatcher["inbox"].on_arrival(arrival)
        assert started == [QUESTIONS[1], QUESTIONS[3]]


async def _count_sent(sandbox: BotAPISandbox, user: User, expected: int) -> bool:
    return len(sandbox.messages_to(user.id)) >= expected


async def _count_stored(harness: BotHarness, user: User, expected: int) -> bool:
    found = await rows(harness, Message, Message.chat_id == user.id, Message.direction == Direction.IN)
    return len(found) >= expected


def test_buckets_allow_a_burst_then_the_rate_and_notice_once_per_flood() -> None:
    now = [0.0]
    buckets = Buckets(3, 60, clock=lambda: now[0])  # one token a second
    assert buckets.has_tokens(1, 3) and not buckets.has_tokens(1, 4)  # a peek spends nothing
    assert [buckets.take(1) for _ in range(4)] == [True, True, True, False]
    assert not buckets.has_tokens(1)
    assert buckets.take(2)  # another customer has a bucket of their own
    assert buckets.first_refusal(1) and not buckets.first_refusal(1)
    now[0] = 1.0
    assert buckets.take(1) and not buckets.take(1)
    assert not buckets.first_refusal(1)  # the same flood: no second notice
    now[0] = 4.5  # quiet long enough to fill up again: the next flood gets a notice
    assert [buckets.take(1) for _ in range(4)] == [True, True, True, False]
    assert buckets.first_refusal(1)


def test_idle_buckets_are_forgotten() -> None:
    now = [0.0]
    buckets = Buckets(2, 60, clock=lambda: now[0])
    for key in range(1000):
        buckets.take(key)
    now[0] = 10.0  # everyone's bucket is full again
    for _ in range(100):
        buckets.take(5000)
    assert len(buckets) == 1


def test_agents_and_editors_are_exempt(tmp_path: Path) -> None:
    base = make_settings(tmp_path)
    settings = base.model_copy(
        update={"telegram": base.telegram.model_copy(update={"agents": [7001], "editors": [900]})}
    )
    assert FloodControl(settings).exempt == {7001, 900}


# -- escaping -------------------------------------------------------------------------------------------

NASTY_FAQ = f"""# Odd <FAQ> & co

## What does <b>bold</b> & `code` *do*_ in the ``` shell?

Type `<b>` & **bold <i>** then *it* _it_ and a [link](https://example.com/?a=1&b=<2>) or [rel](docs/x).
Broken entities stay text: &amp &#x; &#0; &lt;b&gt; &#128512; </i> <i> <tg-spoiler>

```
<pre> & </code> {NASTY}
```

| a<b | c&d |
|-----|-----|
| *x* | `y` |

## Why is 2 < 3 && 5 > 4 on *my* _bill_?

Because {NASTY}. Also **unclosed bold and _unclosed italic and `unclosed code.
""".encode()

NASTY_NAME = User(777, "<b>Zoë & *Co*", "_`&#0;</i>", username="zoe_co", language_code="en")
NASTY_AGENT = User(7002, "<Bob> & *Partners*", "`_</b>", username="bob_agent")


def _escaping_settings(tmp_path: Path) -> Settings:
    """Every question a "did you mean" (the buttons carry the titles), editors to review /faq."""
    base = make_settings(tmp_path, answer_threshold=0.999, suggest_threshold=0.05, answer_margin=1.0)
    return _with_editors(base, tmp_path)


async def test_nasty_text_from_everyone_never_breaks_the_parse_mode(tmp_path: Path, encoder) -> None:
    async with running_bot(_escaping_settings(tmp_path), encoder, agents=[7001, NASTY_AGENT.id]) as harness:
        sandbox, forum = harness.sandbox, harness.forum
        faq = tmp_path / "nasty.md"
        faq.write_bytes(NASTY_FAQ)
        report = await ingest_paths([faq], sessions=harness.services.sessions, encoder=encoder)
        assert report.added == 2 and not report.failed
        await harness.services.kb.sync(harness.services.sessions)

        await harness.say(EDITOR, "/kb")  # to get the review of /faq below
        # a customer with a nasty name: the greeting
        hello = await harness.say(NASTY_NAME, "/start")
        assert NASTY_NAME.first_name in (hello.plain_text or "")

        # did-you-mean buttons with nasty titles, then the nasty answer
        dym = await harness.say(NASTY_NAME, "what does bold and code really do in the shell")
        assert "Did you mean" in (dym.plain_text or "")
        titles = [row[0] for row in dym.buttons[:-1]]
        nasty_title = next(t for t in titles if "<b>bold</b>" in t)
        before = len(sandbox.messages_to(NASTY_NAME.id))
        sandbox.press_button(
            chat=NASTY_NAME.id, user=NASTY_NAME, message_id=dym.message_id, button_text=nasty_title
        )
        answer = await sandbox.wait_for_bot_message(NASTY_NAME.id, after=before)
        shown = " ".join(m.plain_text or "" for m in sandbox.messages_to(NASTY_NAME.id)[before:])
        pieces = ("<b>", "&amp &#x; &#0;", "<pre> & </code>", "a<b", "<script>", f"Source: {nasty_title}")
        assert [piece for piece in pieces if piece not in shown] == []
        assert answer is not None

        # the hand-over: the card carries the name, the question and the picked title
        _, topic = await escalate(harness, NASTY_NAME, "Why is 2 < 3 && 5 > 4 on *my* _bill_? </b>")
        card = harness.in_topic(topic)[0]
        assert NASTY_NAME.first_name in (card.plain_text or "") and "</b>" in (card.plain_text or "")
        assert "<b>Zoë" in sandbox.topics(forum.id)[topic]

        # both ways: customer texts (one formatted), edits, the agent's texts and edits
        sent = sandbox.send_content(
            chat=NASTY_NAME.id,
            user=NASTY_NAME,
            fields={"text": f"bold {NASTY}", "entities": [{"type": "bold", "offset": 0, "length": 4}]},
        )
        sandbox.send_message(chat=NASTY_NAME.id, user=NASTY_NAME, text=f"plain {NASTY}")
        await eventually(lambda: _topic_says(harness, topic, f"plain {NASTY}"))
        assert await _topic_says(harness, topic, f"bold {NASTY}")
        sandbox.edit_message(
            chat=NASTY_NAME.id,
            user=NASTY_NAME,
            message_id=sent["message"]["message_id"],
            text=f"{NASTY} (edited)",
        )
        await eventually(lambda: _topic_says(harness, topic, f"{NASTY} (edited)"))
        customer_seen = len(sandbox.messages_to(NASTY_NAME.id))
        agent_message = sandbox.send_message(
            chat=forum, user=NASTY_AGENT, text=f"agent: {NASTY}", message_thread_id=topic
        )
        await sandbox.wait_for_bot_message(NASTY_NAME.id, after=customer_seen)
        await eventually(lambda: rows(harness, Message, Message.author == Author.AGENT))  # then edit
        sandbox.edit_message(
            chat=forum,
            user=NASTY_AGENT,
            message_id=agent_message["message"]["message_id"],
            text=f"{NASTY} v2",
        )
        await eventually(lambda: _chat_says(sandbox, NASTY_NAME.id, f"{NASTY} v2"))

        # the agents' tools: notes, tags, the profile, /suggest and Send, /faq and its review
        for command in (f"/note {NASTY}", f"// {NASTY}", "/tag <vip> &co *x* `y`", "/profile", "/suggest"):
            in_forum(harness, NASTY_AGENT, command, topic)
        suggested = await eventually(lambda: _with_buttons(harness, topic, "tks:"))
        before = len(sandbox.messages_to(NASTY_NAME.id))
        sandbox.press_button(
            chat=forum, user=NASTY_AGENT, message_id=suggested.message_id, data=suggested.button_data[0]
        )
        await sandbox.wait_for_bot_message(NASTY_NAME.id, after=before)
        in_forum(harness, NASTY_AGENT, f"/faq {NASTY}", topic)
        review = await eventually(lambda: _latest_review(sandbox))
        sandbox.press_button(
            chat=EDITOR.id, user=EDITOR, message_id=review.message_id, button_text="✅ Approve"
        )
        await eventually(lambda: _chat_says(sandbox, EDITOR.id, "Approved by"))

        # claim by a nasty name, close, rate
        card = harness.in_topic(topic)[0]
        sandbox.press_button(chat=forum, user=NASTY_AGENT, message_id=card.message_id, button_text="✅ Close")
        await eventually(lambda: rows(harness, Ticket, Ticket.state == TicketState.RESOLVED))
        await sandbox.wait_idle(quiet=0.5, timeout=30)

        profile = next(m for m in harness.in_topic(topic) if (m.plain_text or "").startswith("👤"))
        assert NASTY in (profile.plain_text or "") and "<vip>" in (profile.plain_text or "")
        assert f"A: {NASTY}" in " ".join(m.plain_text or "" for m in harness.in_topic(topic))  # /faq
        assert failed_calls(sandbox) == []
        methods = {c.method for c in sandbox.calls}
        assert methods >= {"sendMessage", "editMessageText", "copyMessage", "createForumTopic"}


async def _topic_says(harness: BotHarness, topic: int, text: str) -> bool:
    return any(text in (m.plain_text or "") for m in harness.in_topic(topic))


async def _chat_says(sandbox: BotAPISandbox, chat_id: int, text: str) -> bool:
    return any(text in (m.plain_text or "") for m in sandbox.messages_to(chat_id))


async def _with_buttons(harness: BotHarness, topic: int, prefix: str) -> SentMessage | None:
    found = [m for m in harness.in_topic(topic) if any(d.startswith(prefix) for d in m.button_data)]
    return found[-1] if found else None


async def _latest_review(sandbox: BotAPISandbox) -> SentMessage | None:
    found = [
        m for m in sandbox.messages_to(EDITOR.id) if m.buttons and "FAQ suggestion" in (m.plain_text or "")
    ]
    return found[-1] if found else None


# -- escaping, pure: the renderer against Telegram's HTML parser ------------------------------------------

_PIECES = st.sampled_from(
    [
        *"ab <>&*_`[]()#|-+ \n\t~:/.;1", "&amp;", "&#x;", "&#0;", "&lt", "&#xD800;", "&#128512;",
        "**", "__", "```", "~~~", "    ", "1. ", "* ", "# ", "{: .c}", "  \n", "\\", "💡", "<b>", "</i>",
        "[l](http://a.b?x=1&y=<2>)", "[*x*](https://q)", "[rel](docs/a)", "| a<b | c&d |", "\n\n",
    ]
)  # fmt: skip


@hypothesis_settings(max_examples=400, deadline=None)
@given(st.lists(_PIECES, min_size=1, max_size=120).map("".join), st.sampled_from([4096, 120, 30]))
def test_rendered_answers_always_parse_and_fit(markdown: str, limit: int) -> None:
    for part in render_answer(markdown, footer="<i>Source: &lt;x&gt;</i>", limit=limit):
        try:
            plain, _ = parse_entities(part, "HTML")
        except EntityParseError as exc:
            pytest.fail(f"{markdown!r} rendered {part!r}: {exc}")
        assert plain.strip(), f"{markdown!r} rendered an empty message {part!r}"
        assert len(plain) <= limit


def test_an_empty_code_block_or_heading_is_not_an_empty_message() -> None:
    for markdown in ("```\n   \n```", "```rust\n```\nafter", "#  #", "    \t"):
        for part in render_answer(markdown, limit=20):
            assert parse_entities(part, "HTML")[0].strip(), (markdown, part)
    assert render_answer("```code``` inline") == ["``<code>code</code>`` inline"]


def test_toasts_are_plain_text_within_telegrams_limit() -> None:
    assert toast_text("✅ Approved by <b>A &amp; B</b> &lt;x&gt;") == "✅ Approved by A & B <x>"
    assert len(toast_text("x" * 500)) <= 190


def test_button_labels_are_never_empty_and_keyboards_offer_only_their_buttons() -> None:
    shown = [Shown(11, "k", 1, " \n ", "", 0.6), Shown(12, "k2", 1, "t" * 100, "", 0.5)]
    markup = suggestions(EN, shown)
    labels = [row[0].text for row in markup.inline_keyboard]
    assert labels[0] == "…" and len(labels[1]) <= 60
    assert offers(markup, ArticleCb(version=12).pack())
    assert not offers(markup, ArticleCb(version=13).pack()) and not offers(None, ArticleCb(version=12).pack())
