"""Property-based fuzzing of what people send the bot (issue #6, "Fuzzing").

The real dispatcher long-polls the sandbox over HTTP (``harness``); hypothesis draws batches of
incoming updates, each from a customer of its own (so per-customer flood control stays out of
the way), and the whole batch is sent at once:

- private messages: any Unicode (emoji, right-to-left, zero-width and combining characters),
  empty text, 4096 characters and more, text with entities (bold, links, custom emoji ...),
  stickers, photos with any caption, voice, locations, contacts, dice, venues, documents, albums;
  from customers with an open ticket too (their messages go to the agents' forum);
- a customer editing a message; button presses with garbage callback data;
- in the agents' forum: the agent writing anything into a ticket's topic or into General,
  editing a relayed message, pressing garbage on a ticket's card; a stranger writing in a topic;
- channel posts, and messages (commands too) in a group the bot was added to.

The properties, checked once the bot has gone quiet:

- no update ends in the dispatcher's error handler (no "update ... failed" in the log, no
  "something went wrong" message to anyone), and nothing else is logged at ERROR;
- every Bot API call the bot made succeeded;
- each private message that calls for an answer gets one (a customer with an open ticket gets
  theirs copied into the ticket's topic instead), an agent's message reaches the customer, a
  stranger's does not, and every button press is answered;
- the bot says nothing in a group it was merely added to, nor in a channel.

Generated texts for what Telegram clients send in groups, edits and the agents' side stay within
Telegram's 4096 characters (clients split longer texts); a customer's private message may exceed
it. Entities sit on character boundaries, as Telegram sends them.

Batches are derandomized (the same on every run); ``HELPDESK_FUZZ_SCALE=10`` runs more of them.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from bot.keyboards import ArticleCb, CsatCb, FeedbackCb, HumanCb, TicketCb
from bot.sandbox import BotAPISandbox, Chat, User
from bot.texts import texts_for
from kb.models import Customer, Ticket, TicketState
from tests.conftest import BotHarness, eventually

SCALE = max(1, int(os.environ.get("HELPDESK_FUZZ_SCALE", "1")))
BATCH = 24
MESSAGE_LIMIT = 4096

_ids = itertools.count(880_000_001)  # a fresh customer (or group, or channel) per generated update


# --- what people send ----------------------------------------------------------------------------

SPECIAL_TEXTS = [
    "",
    " ",
    "\u200b",  # zero-width space only
    "\u200d\u200c\ufeff",
    "?",
    "/start",
    "/help extra words",
    "/nonexistent_command",
    "/start@helpdesk_sandbox_bot",
    "/human@other_bot",
    "/",
    "//",
    "👍",
    "👨‍👩‍👧‍👦🏳️‍🌈",  # ZWJ sequences
    "\u202eevil reversed text",  # right-to-left override
    "كيف يمكنني إعادة تعيين كلمة المرور؟",
    "איך מאפסים סיסמה?",
    "How do I reset my pass\u200bword?",
    "e\u0301\u0301\u0301\u0301 combining marks",
    "<b>not html</b> & <script>alert(1)</script>",
    "*bold?* _italic_ `code` [link](http://e.com)",
    "\x00\x01 control characters \x1f\x7f",
    "\ud7ff\ue000\uffff",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕸𝖆𝖙𝖍",
]
LANGUAGES = ["en", "en-GB", "cs", "de", "zh-hans", "ar", "pt-br", "xx", None]
CUSTOM_EMOJI = "5368324170671202286"


@dataclass(frozen=True)
class Person:
    """A customer's Telegram profile (the id is given when the update is sent)."""

    first_name: str
    last_name: str | None
    username: str | None
    language_code: str | None

    def user(self) -> User:
        return User(next(_ids), self.first_name, self.last_name, self.username, self.language_code)


@dataclass(frozen=True)
class Incoming:
    """One generated update.

    ``scenario`` says who does what where: ``private`` (a customer writes to the bot), ``edit``
    (a customer edits a message), ``press`` (a customer presses a button with garbage data),
    ``channel``, ``group``, ``agent`` (the agent writes in a ticket's topic), ``agent_edit``,
    ``forum_press`` (the agent presses garbage on a ticket's card), ``general`` (the agent writes
    in General), ``stranger`` (someone not an agent writes in a ticket's topic). ``via`` says how
    the content is sent: ``text``, ``fields`` (raw message fields) or a sandbox helper's name.
    """

    scenario: str
    person: Person
    via: str = "text"
    text: str = ""
    fields: dict[str, Any] = field(default_factory=dict)
    with_ticket: bool = False
    edit: str = ""
    data: str = ""

    def __repr__(self) -> str:  # hypothesis prints the failing batch: keep 4096+ texts readable
        text = self.text if len(self.text) < 80 else f"{self.text[:40]!r}...({len(self.text)} chars)"
        shown = {k: (v if len(repr(v)) < 200 else f"<{len(repr(v))} chars>") for k, v in self.fields.items()}
        return (
            f"Incoming({self.scenario} via {self.via}, text={text!r}, fields={shown}, "
            f"ticket={self.with_ticket}, edit={self.edit[:40]!r}, data={self.data!r})"
        )


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


names = st.text(min_size=1, max_size=64).filter(lambda name: name.strip())
persons = st.builds(
    Person,
    first_name=st.one_of(names, st.sampled_from(["Ann", "Bob & <Co>", "‮Eve", "李雷", "أحمد", "🦄"])),
    last_name=st.none() | st.text(max_size=64),
    username=st.none() | st.from_regex(r"[a-z][a-z0-9_]{4,31}", fullmatch=True),
    language_code=st.sampled_from(LANGUAGES),
)
texts = st.one_of(
    st.sampled_from(SPECIAL_TEXTS),
    st.text(max_size=300),
    st.text(alphabet=st.characters(categories=["Lo", "Mn", "Cf", "So", "Zs"]), max_size=120),
    st.builds(
        lambda word, extra: (word * MESSAGE_LIMIT)[: MESSAGE_LIMIT + extra],
        st.text(min_size=1, max_size=8),
        st.sampled_from([0, 1, 904]),
    ),
)
# What a Telegram client can send at most (longer texts are split into several messages); texts
# over the limit still reach the bot in a private chat here, to see that nothing echoes them.
sendable = texts.map(lambda text: text[:MESSAGE_LIMIT])


@st.composite
def entities(draw: st.DrawFn, text: str) -> list[dict[str, Any]]:
    """Valid message entities over ``text``: offsets in UTF-16 units, as Telegram counts them,
    on character boundaries (Telegram never splits a surrogate pair; aiogram's ``html_text``
    raises UnicodeDecodeError on an entity that does)."""
    boundaries = [utf16_len(text[:index]) for index in range(len(text) + 1)]
    if len(boundaries) < 2:
        return []
    found = []
    for _ in range(draw(st.integers(1, 4))):
        start = draw(st.integers(0, len(boundaries) - 2))
        end = draw(st.integers(start + 1, len(boundaries) - 1))
        offset, size = boundaries[start], boundaries[end] - boundaries[start]
        kind = draw(
            st.sampled_from(
                ["bold", "italic", "underline", "strikethrough", "spoiler", "code", "pre", "text_link",
                 "custom_emoji", "url", "mention", "hashtag", "blockquote", "expandable_blockquote"]
            )
        )  # fmt: skip
        entity: dict[str, Any] = {"type": kind, "offset": offset, "length": size}
        if kind == "text_link":
            entity["url"] = draw(st.sampled_from(["https://example.com/a?b=<c>&d", "tg://user?id=1"]))
        elif kind == "custom_emoji":
            entity["custom_emoji_id"] = CUSTOM_EMOJI
        elif kind == "pre":
            entity["language"] = draw(st.sampled_from(["python", "", "<x>"]))
        found.append(entity)
    return sorted(found, key=lambda e: (e["offset"], -e["length"]))


def file_fields(kind: str, number: int) -> dict[str, Any]:
    return {"file_id": f"FUZZ{kind.upper()}{number}", "file_unique_id": f"FUZZU{kind}{number}"}


@st.composite
def contents(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """Message content other than plain text, as ``(sandbox helper or "fields", parameters)``."""
    kind = draw(
        st.sampled_from(
            ["sticker", "photo", "voice", "location", "contact", "dice", "venue", "document", "album",
             "video", "animation", "audio", "video_note", "entities"]
        )
    )  # fmt: skip
    caption = draw(st.none() | texts.map(lambda t: t[:1024]))
    number = draw(st.integers(0, 10**6))
    if kind == "sticker":
        return kind, {"emoji": draw(st.sampled_from(["👍", "🏳️‍🌈", "", "a"]))}
    if kind == "photo":
        return kind, {"caption": caption}
    if kind == "voice":
        return kind, {"duration": draw(st.integers(0, 3600))}
    if kind == "location":
        latitude = draw(st.floats(-90, 90, allow_nan=False))
        return kind, {"latitude": latitude, "longitude": draw(st.floats(-180, 180, allow_nan=False))}
    if kind == "document":
        name = draw(
            st.sampled_from(["faq.md", "x", "..", "../../etc/passwd", "a b.pdf", "файл.docx", ".hidden"])
        )
        return kind, {"file_name": name, "content": draw(st.binary(max_size=64)), "caption": caption}
    if kind == "album":
        return kind, {"photos": draw(st.integers(2, 4)), "caption": caption}
    if kind == "entities":
        text = draw(texts.filter(bool))
        return "fields", {"text": text, "entities": draw(entities(text))}
    fields: dict[str, Any] = {
        "contact": {
            "phone_number": draw(st.sampled_from(["+420123456789", "", "12"])),
            "first_name": draw(names),
        },
        "dice": {
            "emoji": draw(st.sampled_from(["🎲", "🎯", "🏀", "⚽", "🎳", "🎰"])),
            "value": draw(st.integers(1, 6)),
        },
        "venue": {
            "location": {"latitude": 50.08, "longitude": 14.42},
            "title": draw(names),
            "address": draw(st.text(max_size=100)),
        },
        "video": {**file_fields("video", number), "width": 640, "height": 480, "duration": 3},
        "animation": {**file_fields("animation", number), "width": 320, "height": 240, "duration": 1},
        "audio": {**file_fields("audio", number), "duration": 180, "title": caption},
        "video_note": {**file_fields("video_note", number), "length": 240, "duration": 5},
    }
    content = {kind: {k: v for k, v in fields[kind].items() if v is not None}}
    if caption is not None and kind in ("video", "animation", "audio"):
        content["caption"] = caption
    return "fields", content


@st.composite
def garbage_data(draw: st.DrawFn) -> str:
    """Callback data no keyboard of the bot made: random, truncated or forged with our prefixes."""
    real = [
        FeedbackCb(message=999_999, helpful=True).pack(),
        ArticleCb(version=999_999).pack(),
        HumanCb(reason="unanswered").pack(),
        CsatCb(ticket=999_999, score=5).pack(),
        TicketCb(action="close", ticket=1).pack(),
    ]
    forged = [
        "fb:", "fb:x:y", "fb:-1:1", "fb:1:2:3", "art:", "art:abc", "art:99999999999999999999999999",
        "human:", "human:<b>", "csat:1:9", "csat:1:-5", "forget:", "forget:yes", "tk:x:1", "sg:approve:0",
        ":", "", "\x00", "🙂",
    ]  # fmt: skip
    data = draw(st.one_of(st.sampled_from(real + forged), st.text(max_size=64)))
    while len(data.encode()) > 64:  # Telegram's limit on callback data
        data = data[:-1]
    return data


@st.composite
def incoming(draw: st.DrawFn) -> Incoming:
    person = draw(persons)
    scenario = draw(
        st.sampled_from(
            ["private", "private", "private", "private", "edit", "press", "channel", "group", "agent",
             "agent_edit", "forum_press", "general", "stranger"]
        )
    )  # fmt: skip
    with_ticket = scenario in ("agent", "agent_edit", "forum_press", "stranger") or (
        scenario in ("private", "edit") and draw(st.integers(0, 3)) == 3
    )
    if scenario in ("private", "agent", "general", "stranger"):
        if draw(st.booleans()):
            relayed = sendable.filter(lambda t: t.strip() and not t.startswith("/"))  # not a command
            text = draw({"private": texts, "agent": relayed}.get(scenario, sendable))
            return Incoming(scenario, person, text=text, with_ticket=with_ticket)
        via, fields = draw(contents())
        return Incoming(scenario, person, via=via, fields=fields, with_ticket=with_ticket)
    if scenario in ("edit", "agent_edit"):
        first = draw(sendable.filter(lambda t: t.strip() and not t.startswith("/")))
        return Incoming(
            scenario, person, text=first, edit=draw(sendable.filter(str.strip)), with_ticket=with_ticket
        )
    if scenario in ("press", "forum_press"):
        return Incoming(scenario, person, data=draw(garbage_data()), with_ticket=with_ticket)
    return Incoming(scenario, person, text=draw(sendable))


# --- sending a batch -----------------------------------------------------------------------------


@dataclass
class Expectations:
    """What the bot owes once the batch is sent, and where it must stay silent."""

    replies: dict[int, int] = field(default_factory=dict)  # private chat -> bot messages at least
    answered: dict[int, tuple[int, int]] = field(default_factory=dict)  # chat -> (its count, topic's)
    unchanged: dict[int, int] = field(default_factory=dict)  # private chat -> bot messages exactly
    presses: list[str] = field(default_factory=list)  # callback query ids
    silent: list[int] = field(default_factory=list)  # chats the bot must not write into
    described: dict[int, str] = field(default_factory=dict)  # chat -> the update, for messages
    topics: dict[int, int] = field(default_factory=dict)  # customer chat -> their ticket's topic


@dataclass
class Prepared:
    """An update with its customer, their ticket's topic and the message to edit or press on."""

    item: Incoming
    customer: User
    thread: int | None = None
    target: int | None = None


def queue_raw(sandbox: BotAPISandbox, kind: str, payload: dict[str, Any]) -> None:
    """An update the sandbox has no helper for (channel posts, the bot's membership changing)."""
    sandbox._queue_update(kind, payload)  # the sandbox has no public helper for these yet


def bot_member(sandbox: BotAPISandbox, status: str) -> dict[str, Any]:
    bot = {
        "id": sandbox.bot_id,
        "is_bot": True,
        "first_name": sandbox.bot_first_name,
        "username": sandbox.bot_username,
    }
    return {"status": status, "user": bot}


def deliver(
    sandbox: BotAPISandbox,
    item: Incoming,
    *,
    chat: Chat | User,
    user: User | None = None,
    thread: int | None = None,
) -> dict[str, Any]:
    """Send the item's content as ``user`` into ``chat`` (a topic of it with ``thread``)."""
    where: dict[str, Any] = {"chat": chat, "user": user, "message_thread_id": thread}
    if item.via == "text":
        return sandbox.send_message(text=item.text, **where)
    if item.via == "fields":
        return sandbox.send_content(fields=item.fields, **where)
    sent = getattr(sandbox, f"send_{item.via}")(**where, **item.fields)
    return sent[0] if isinstance(sent, list) else sent


async def prepare(harness: BotHarness, batch: list[Incoming]) -> list[Prepared]:
    """Give each update its customer; open tickets and send first messages where it needs them."""
    sandbox = harness.sandbox
    prepared = [Prepared(item, item.person.user()) for item in batch]
    for entry in prepared:
        if entry.item.with_ticket:
            sandbox.send_message(chat=entry.customer, text="/human")
        elif entry.item.scenario in ("edit", "press"):
            update = sandbox.send_message(chat=entry.customer, text=entry.item.text)
            entry.target = update["message"]["message_id"]
    for entry in prepared:
        if entry.item.with_ticket or entry.item.scenario in ("edit", "press"):
            await sandbox.wait_for_bot_message(entry.customer.id, timeout=30)
        if entry.item.with_ticket:
            ticket = await open_ticket_of(harness, entry.customer.id)
            entry.thread = await harness.topic_of(ticket, within=30)
            if entry.item.scenario == "edit":
                update = sandbox.send_message(chat=entry.customer, text=entry.item.text)
                entry.target = update["message"]["message_id"]
            elif entry.item.scenario == "agent_edit":
                update = deliver(
                    sandbox, entry.item, chat=harness.forum, user=harness.agent, thread=entry.thread
                )
                entry.target = update["message"]["message_id"]
            elif entry.item.scenario == "forum_press":
                entry.target = await card_of(harness, ticket)
    await harness.settle(quiet=0.5, timeout=60)
    return prepared


async def send_batch(harness: BotHarness, prepared: list[Prepared]) -> Expectations:
    sandbox = harness.sandbox
    expect = Expectations()
    for entry in prepared:
        item, customer = entry.item, entry.customer
        expect.described[customer.id] = repr(item)
        before = len(sandbox.messages_to(customer.id))
        if entry.thread is not None:
            expect.topics[customer.id] = entry.thread
        if item.scenario == "private" and entry.thread is not None:
            # the with-agents router relays it into the topic, or answers a command it knows
            expect.answered[customer.id] = (before, len(harness.in_topic(entry.thread)))
        elif item.scenario == "private":
            expect.replies[customer.id] = before + 1
        elif item.scenario == "agent":
            expect.replies[customer.id] = before + 1  # relayed to the customer
        elif item.scenario == "stranger":
            expect.unchanged[customer.id] = before  # nothing of a stranger reaches the customer
        send(harness, entry, expect)
    return expect


def send(harness: BotHarness, entry: Prepared, expect: Expectations) -> None:
    sandbox, item, customer = harness.sandbox, entry.item, entry.customer
    if item.scenario == "private":
        deliver(sandbox, item, chat=customer)
    elif item.scenario == "edit":
        sandbox.edit_message(chat=customer, message_id=entry.target, text=item.edit)
    elif item.scenario == "press":
        [reply] = sandbox.messages_to(customer.id)[-1:]
        update = sandbox.press_button(
            chat=customer, message_id=reply.message_id, data=item.data, strict=False
        )
        expect.presses.append(update["callback_query"]["id"])
    elif item.scenario == "agent":
        deliver(sandbox, item, chat=harness.forum, user=harness.agent, thread=entry.thread)
    elif item.scenario == "agent_edit":
        sandbox.edit_message(chat=harness.forum, user=harness.agent, message_id=entry.target, text=item.edit)
    elif item.scenario == "forum_press":
        update = sandbox.press_button(
            chat=harness.forum, user=harness.agent, message_id=entry.target, data=item.data, strict=False
        )
        expect.presses.append(update["callback_query"]["id"])
    elif item.scenario == "general":
        deliver(sandbox, item, chat=harness.forum, user=harness.agent)
    elif item.scenario == "stranger":
        stranger = item.person.user()  # someone in the agents' forum who is not an agent
        deliver(sandbox, item, chat=harness.forum, user=stranger, thread=entry.thread)
    elif item.scenario == "channel":
        post_in_channel(sandbox, item, expect)
    else:
        write_in_group(sandbox, item, customer, expect)


def post_in_channel(sandbox: BotAPISandbox, item: Incoming, expect: Expectations) -> None:
    channel = Chat(-1003_000_000_000 - next(_ids), type="channel", title=item.person.first_name)
    sandbox.add_chat(channel)
    expect.silent.append(channel.id)
    post = {"message_id": 1, "chat": channel.to_dict(), "date": int(time.time()), "text": item.text or "-"}
    queue_raw(sandbox, "channel_post", {**post, "sender_chat": channel.to_dict()})
    edited = {
        **post,
        "text": item.text + "!",
        "edit_date": int(time.time()),
        "sender_chat": channel.to_dict(),
    }
    queue_raw(sandbox, "edited_channel_post", edited)


def write_in_group(sandbox: BotAPISandbox, item: Incoming, user: User, expect: Expectations) -> None:
    """The bot is added to a group; people talk there, commands to it included."""
    group = Chat(-next(_ids), type="group", title=item.person.first_name)
    sandbox.add_chat(group)
    expect.silent.append(group.id)
    membership = {
        "chat": group.to_dict(),
        "from": user.to_dict(),
        "date": int(time.time()),
        "old_chat_member": bot_member(sandbox, "left"),
        "new_chat_member": bot_member(sandbox, "member"),
    }
    queue_raw(sandbox, "my_chat_member", membership)
    for text in (item.text, "/start", "/human@helpdesk_sandbox_bot", "How do I reset my password?"):
        sandbox.send_message(chat=group, user=user, text=text)
    sandbox.send_sticker(chat=group, user=user)


async def open_ticket_of(harness: BotHarness, telegram_id: int) -> int:
    async def found() -> int | None:
        async with harness.services.sessions() as session:
            return await session.scalar(
                select(Ticket.id)
                .join(Customer, Customer.id == Ticket.customer_id)
                .where(Customer.telegram_id == telegram_id, Ticket.state != TicketState.RESOLVED)
            )

    return await eventually(found, within=30)


async def card_of(harness: BotHarness, ticket_id: int) -> int:
    async with harness.services.sessions() as session:
        ticket = await session.get(Ticket, ticket_id)
        assert ticket is not None and ticket.card_message_id is not None
        return ticket.card_message_id


# --- the properties ------------------------------------------------------------------------------


def failures(records: list[logging.LogRecord]) -> list[str]:
    return [f"{record.name}: {record.getMessage()}" for record in records if record.levelno >= logging.ERROR]


async def check(
    harness: BotHarness, expect: Expectations, caplog: pytest.LogCaptureFixture, first_call: int
) -> None:
    sandbox = harness.sandbox
    # Every update handled, follow-ups included: a quiet spell alone was once a first reply still
    # on its way on a loaded host (another test's models on both cores).
    await harness.settle(quiet=1.0, timeout=90)
    assert not failures(caplog.records), failures(caplog.records)
    failed = [call.describe() for call in sandbox.calls[first_call:] if not call.ok]
    assert not failed, failed
    errors = {texts_for(language).error for language in LANGUAGES}
    for chat in [*expect.described, harness.forum.id]:
        wrong = [m.plain_text for m in sandbox.messages_to(chat) if m.plain_text in errors]
        assert not wrong, f"an error reply in chat {chat}: {expect.described.get(chat, 'the forum')}"
    for chat, count in expect.replies.items():
        assert len(sandbox.messages_to(chat)) >= count, f"no reply for {expect.described[chat]}"
    for chat, (own, topic) in expect.answered.items():
        grew = len(sandbox.messages_to(chat)) > own or len(harness.in_topic(expect.topics[chat])) > topic
        assert grew, f"neither relayed nor answered: {expect.described[chat]}"
    for chat, count in expect.unchanged.items():
        assert len(sandbox.messages_to(chat)) == count, f"reached the customer: {expect.described[chat]}"
    answered = {call.params.get("callback_query_id") for call in sandbox.calls_to("answerCallbackQuery")}
    assert set(expect.presses) <= answered, "every button press is answered"
    for chat in expect.silent:
        assert sandbox.messages_to(chat) == [], f"the bot wrote into {chat}"


@settings(
    max_examples=4 * SCALE,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # a failure names its update; shrinking would take minutes
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(batch=st.lists(incoming(), min_size=BATCH, max_size=BATCH))
async def test_fuzzed_updates_never_break_the_bot(
    harness: BotHarness, caplog: pytest.LogCaptureFixture, batch: list[Incoming]
) -> None:
    """One running bot for all batches (the harness is shared by the examples on purpose)."""
    caplog.clear()
    caplog.set_level(logging.WARNING)
    prepared = await prepare(harness, batch)
    first_call = len(harness.sandbox.calls)
    expect = await send_batch(harness, prepared)
    await check(harness, expect, caplog, first_call)


async def test_a_customer_edit_as_long_as_telegram_allows_reaches_the_topic(harness: BotHarness) -> None:
    """Found by the fuzzing above: the notice line plus a 4096-character edit was over Telegram's
    limit, so agents never saw the edit. The text is now cut to fit, and says so with "…"."""
    customer = User(next(_ids), "Dana", language_code="en")
    harness.sandbox.send_message(chat=customer, text="/human")
    await harness.sandbox.wait_for_bot_message(customer.id, timeout=20)
    thread = await harness.topic_of(await open_ticket_of(harness, customer.id), within=20)
    sent = harness.sandbox.send_message(chat=customer, text="My order did not arrive.")
    await harness.settle()
    first_call, before = len(harness.sandbox.calls), len(harness.in_topic(thread))

    edited = "Ω" * (MESSAGE_LIMIT - 1) + "!"
    harness.sandbox.edit_message(chat=customer, message_id=sent["message"]["message_id"], text=edited)
    await harness.settle()

    assert [call.describe() for call in harness.sandbox.calls[first_call:] if not call.ok] == []
    [notice] = harness.in_topic(thread)[before:]
    assert notice.plain_text.startswith("✏️ The customer edited a message:\nΩΩΩ")
    assert len(notice.plain_text) == MESSAGE_LIMIT and notice.plain_text.endswith("Ω…")
