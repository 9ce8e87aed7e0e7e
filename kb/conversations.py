"""Conversations with customers: who they are, what they asked, what the bot answered.

The services here own their transactions (``async with session.begin()``, or the group commit's
for a customer's turn and the sent messages' ids when the :class:`Helpdesk` has one) and return
plain data for the Telegram layer to render; they never talk to Telegram themselves. Tickets
(the hand-over to people) are in :mod:`kb.tickets`; this module decides when to offer one.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from kb.db import Batched, GroupCommit, parameters
from kb.decision import Action, Decision, Thresholds, decide
from kb.models import (
    Article,
    ArticleStatus,
    ArticleVersion,
    Author,
    Conversation,
    Customer,
    Direction,
    Feedback,
    Message,
    utcnow,
)
from kb.search import Hit, KnowledgeBase

CONVERSATION_GAP = timedelta(hours=12)  # silence longer than this starts a new conversation
ANSWER_HITS = 5  # hits a question is searched for: the answer, or up to three suggestions, and spares


@dataclass(frozen=True, slots=True)
class Person:
    """A Telegram user as the update describes them."""

    telegram_id: int
    first_name: str
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = None


@dataclass(frozen=True, slots=True)
class Shown:
    """An article version as the customer gets it."""

    version_id: int
    article_key: str
    version: int
    title: str
    answer: str
    score: float | None


class HumanOffer(enum.StrEnum):
    """How a person is offered with a reply: not at all (no agents), a button, or a real offer
    (after ``escalate_after_unanswered`` failed turns in a row: the customer confirms)."""

    NONE = "none"
    BUTTON = "button"
    OFFER = "offer"


@dataclass(slots=True)
class Reply:
    """What the bot decided and what to send; ``message_id`` is the stored outgoing row."""

    action: Action
    message_id: int
    article: Shown | None = None
    suggestions: list[Shown] = field(default_factory=list)
    human: HumanOffer = HumanOffer.BUTTON


class FeedbackOutcome:
    RECORDED = "recorded"
    ALREADY = "already"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class FeedbackResult:
    outcome: str  # a FeedbackOutcome
    human: HumanOffer = HumanOffer.NONE


# -- the bookkeeping of a turn, in Core statements ------------------------------------------------
# A customer's question is the bot's most frequent write: its bookkeeping is done in plain
# statements on the session's connection, with ids, not ORM objects (no identity map, no unit of
# work: those were a third of the bot's CPU per answer). The tickets' paths use the same helpers.

_CUSTOMERS = Customer.__table__
_CONVERSATIONS = Conversation.__table__
_MESSAGES = Message.__table__


@functools.cache
def _touch_customer_statement(dialect: str) -> Any:
    """Insert the customer or refresh their profile, returning the id; on PostgreSQL the
    upsert locks the row to the end of the transaction (one customer's turns go one by one)."""
    upsert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = upsert(_CUSTOMERS)
    new = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=[_CUSTOMERS.c.telegram_id],
        set_={
            "first_name": new.first_name,
            "last_name": new.last_name,
            "username": new.username,
            "language": func.coalesce(new.language, _CUSTOMERS.c.language),
            "last_seen": new.last_seen,
        },
    ).returning(_CUSTOMERS.c.id)


async def customer_id_for(connection: AsyncConnection, person: Person, now: datetime) -> int:
    """The customer's id, their profile refreshed from ``person`` (inserted on first contact)."""
    row = {
        "telegram_id": person.telegram_id,
        "first_name": person.first_name,
        "last_name": person.last_name,
        "username": person.username,
        "language": person.language_code or None,  # none given: the one known stays
        "first_seen": now,
        "last_seen": now,
        "tags": [],
        "notes": "",
    }
    return (await connection.execute(_touch_customer_statement(connection.dialect.name), row)).scalar_one()


@functools.cache
def _latest_conversation_statement() -> Any:
    c = _CONVERSATIONS.c
    return (
        select(c.id, c.closed_at, c.last_message_at)
        .where(c.customer_id == bindparam("customer"), c.chat_id == bindparam("chat"))
        .order_by(c.id.desc())
        .limit(1)
    )


async def conversation_id_for(
    connection: AsyncConnection, customer_id: int, chat_id: int, now: datetime
) -> int:
    """The customer's open conversation in ``chat_id`` (a new one after a close or a long gap),
    its last message time set to ``now``."""
    latest = (
        await connection.execute(_latest_conversation_statement(), {"customer": customer_id, "chat": chat_id})
    ).first()
    if latest is None or latest.closed_at or now - latest.last_message_at > CONVERSATION_GAP:
        values = {"customer_id": customer_id, "chat_id": chat_id, "started_at": now, "last_message_at": now}
        return (await connection.execute(_inserting(_CONVERSATIONS), values)).scalar_one()
    await connection.execute(_seen_statement(), {"row": latest.id, "now": now})
    return int(latest.id)


@functools.cache
def _inserting(table: Table) -> Any:
    """INSERT into ``table`` of the columns given, returning the new row's id."""
    return insert(table).returning(table.c.id)


@functools.cache
def _seen_statement() -> Any:
    c = _CONVERSATIONS.c
    return update(_CONVERSATIONS).where(c.id == bindparam("row")).values(last_message_at=bindparam("now"))


@functools.cache
def _incoming_statement() -> Any:
    m = _MESSAGES.c
    return (
        select(m.id)
        .where(m.chat_id == bindparam("chat"), m.telegram_message_id == bindparam("message"))
        .where(m.direction == Direction.IN)
        .limit(1)
    )


async def incoming_id(connection: AsyncConnection, *, chat_id: int, telegram_message_id: int) -> int | None:
    """The stored customer message of this Telegram message: the update is being processed
    again (after a crash or a transient failure), so it is not stored twice."""
    return await connection.scalar(_incoming_statement(), {"chat": chat_id, "message": telegram_message_id})


async def turn_after(connection: AsyncConnection, conversation_id: int, incoming_id: int) -> int | None:
    """The bot's recorded answer to the customer message ``incoming_id`` (the next bot message
    of its conversation)."""
    m = _MESSAGES.c
    return await connection.scalar(
        select(m.id)
        .where(m.conversation_id == conversation_id, m.id > incoming_id, m.author == Author.BOT)
        .order_by(m.id)
        .limit(1)
    )


async def insert_message(connection: AsyncConnection, **values: Any) -> int:
    """Store a message (the columns of ``kb.models.Message``); returns its row id."""
    values.setdefault("created_at", utcnow())
    return (await connection.execute(_inserting(_MESSAGES), values)).scalar_one()


async def record_message(connection: AsyncConnection, person: Person, chat_id: int, **values: Any) -> int:
    """Store a message of ``person``'s conversation in ``chat_id`` (the other columns of
    ``kb.models.Message`` in ``values``), their profile and the conversation touched; returns
    the message's row id."""
    now = utcnow()
    customer_id = await customer_id_for(connection, person, now)
    conversation_id = await conversation_id_for(connection, customer_id, chat_id, now)
    return await insert_message(
        connection, conversation_id=conversation_id, chat_id=chat_id, created_at=now, **values
    )


async def _published(connection: AsyncConnection, version_ids: Sequence[int]) -> dict[int, Any]:
    """The published versions among ``version_ids``, by id (one statement)."""
    if not version_ids:
        return {}
    v, a = ArticleVersion.__table__.c, Article.__table__.c
    rows = await connection.execute(
        select(v.id, a.key, v.number, v.question, v.answer)
        .join_from(ArticleVersion.__table__, Article.__table__, a.id == v.article_id)
        .where(v.id.in_(version_ids), a.status == ArticleStatus.PUBLISHED)
    )
    return {row.id: row for row in rows}


def _as_shown(row: Any, score: float | None) -> Shown:
    return Shown(row.id, row.key, row.number, row.question, row.answer, score)


async def _shown_versions(connection: AsyncConnection, hits: Sequence[Hit]) -> list[Shown]:
    """``hits`` as the customer gets them; a hit retired between the search and now keeps the
    title the search had."""
    found = await _published(connection, [hit.version_id for hit in hits])
    return [
        _as_shown(found[hit.version_id], hit.score)
        if hit.version_id in found
        else Shown(hit.version_id, hit.article_key, hit.version, hit.title, "", hit.score)
        for hit in hits
    ]


async def unanswered_streak(session: AsyncSession, *, conversation_id: int) -> int:
    """Failed bot turns in a row, newest first: no answer, an answer that "didn't help", or
    "did you mean" suggestions the customer passed over; any other answer ends the run."""
    rows = (
        await session.execute(
            select(Message.decision, Feedback.helpful)
            .outerjoin(Feedback, Feedback.message_id == Message.id)
            .where(
                Message.conversation_id == conversation_id,
                Message.author == Author.BOT,
                Message.decision.in_(["answer", "picked", "suggest", "escalate"]),
            )
            .order_by(Message.id.desc())
            .limit(50)
        )
    ).all()
    streak, picked = 0, False
    for decision, helpful in rows:
        if decision == "suggest" and picked:  # the pick that followed it was the turn
            picked = False
            continue
        picked = decision == "picked"
        if decision in ("answer", "picked") and helpful is not False:
            break
        streak += 1
    return streak


@functools.cache
def _set_telegram_id_statement() -> Any:
    table = Message.__table__  # Core: a row erased meanwhile is simply not there (no stale-data error)
    return (
        update(table)
        .where(table.c.id == bindparam("row_id"))
        .values(telegram_message_id=bindparam("sent_id"))
    )


async def _set_telegram_ids(session: AsyncSession, items: list[tuple[int, int]]) -> list[None]:
    """The Telegram ids of many sent bot messages, in one statement (by primary key)."""
    marks = [{"row_id": row_id, "sent_id": sent_id} for row_id, sent_id in items]
    await session.execute(_set_telegram_id_statement(), parameters(marks))
    return [None] * len(items)


SET_TELEGRAM_IDS = Batched("message ids", _set_telegram_ids)


async def _human_offer(
    session: AsyncSession, conversation_id: int, escalation: bool, offer_after: int
) -> HumanOffer:
    """How the bot offers a person now: not at all (no agents), a button, or an offer after
    ``offer_after`` failed turns in a row (0 = never)."""
    if not escalation:
        return HumanOffer.NONE
    if offer_after and await unanswered_streak(session, conversation_id=conversation_id) >= offer_after:
        return HumanOffer.OFFER
    return HumanOffer.BUTTON


@dataclass(frozen=True, slots=True)
class _Turn:
    """A customer's question and the bot's decision, to be recorded (:meth:`Helpdesk.ask`)."""

    person: Person
    chat_id: int
    telegram_message_id: int
    text: str
    decision: Decision
    escalation: bool
    offer_after: int


async def _record_turn(session: AsyncSession, turn: _Turn) -> Reply:
    """Store the question (once: an update processed again finds it) and the bot's turn, inside
    the caller's transaction; the reply to send."""
    decision = turn.decision
    connection = await session.connection()
    now = utcnow()
    customer_id = await customer_id_for(connection, turn.person, now)
    conversation_id = await conversation_id_for(connection, customer_id, turn.chat_id, now)
    incoming = await incoming_id(
        connection, chat_id=turn.chat_id, telegram_message_id=turn.telegram_message_id
    )
    if incoming is None:
        await insert_message(
            connection,
            conversation_id=conversation_id,
            direction=Direction.IN,
            author=Author.CUSTOMER,
            chat_id=turn.chat_id,
            telegram_message_id=turn.telegram_message_id,
            content_type="text",
            text=turn.text,
            created_at=now,
        )
    shown = await _shown_versions(connection, decision.chosen)
    top = shown[0] if decision.action is Action.ANSWER else None
    values = {
        "text": top.answer if top else None,
        "decision": decision.action.value,
        "hits": [h.as_log() for h in decision.hits],
        "version_id": top.version_id if top else None,
        "score": decision.top_score,
    }
    out = await turn_after(connection, conversation_id, incoming) if incoming is not None else None
    if out is None:
        out = await insert_message(
            connection,
            conversation_id=conversation_id,
            direction=Direction.OUT,
            author=Author.BOT,
            chat_id=turn.chat_id,
            content_type="text",
            created_at=now,
            **values,
        )
    else:  # processed again: the bot's turn is the one recorded the first time
        await connection.execute(update(_MESSAGES).where(_MESSAGES.c.id == out).values(**values))
    human = await _human_offer(session, conversation_id, turn.escalation, turn.offer_after)
    if human is HumanOffer.OFFER and decision.action is not Action.ESCALATE:
        human = HumanOffer.BUTTON  # the bot has something to show: offer with the next miss
    return Reply(
        decision.action,
        out,
        article=top,
        suggestions=shown if decision.action is Action.SUGGEST else [],
        human=human,
    )


async def _record_turns(session: AsyncSession, turns: list[_Turn]) -> list[Reply]:
    return [await _record_turn(session, turn) for turn in turns]


# Customers' turns share transactions (a turn is ~7 statements; under load the write lock, not
# the CPU, bounded the answers per second while each turn committed alone).
RECORD_TURNS = Batched("turns", _record_turns)


class Helpdesk:
    """The customer-facing service: questions in, decisions out, everything recorded.

    ``escalation``: people can take over (agents are configured); ``offer_after``: failed turns
    in a row before the bot offers a person itself (0 = never); ``writes``: the writer that
    commits small writes together (customers' turns, the Telegram ids of sent messages), else
    each is its own transaction.
    """

    def __init__(
        self,
        kb: KnowledgeBase,
        thresholds: Thresholds,
        *,
        escalation: bool = True,
        offer_after: int = 2,
        writes: GroupCommit | None = None,
    ) -> None:
        self.kb = kb
        self.thresholds = thresholds
        self.escalation = escalation
        self.offer_after = offer_after
        self.writes = writes

    def expect_question(self, text: str, *, language: str | None) -> None:
        """A customer's message that :meth:`ask` will likely be given has arrived: its search
        starts now (see :meth:`KnowledgeBase.start_search`)."""
        self.kb.start_search(text, k=ANSWER_HITS, language=language)

    async def ask(
        self, session: AsyncSession, *, person: Person, chat_id: int, telegram_message_id: int, text: str
    ) -> Reply:
        language = person.language_code
        hits = await self.kb.search(text, k=ANSWER_HITS, language=language)  # outside the tx
        turn = _Turn(
            person,
            chat_id,
            telegram_message_id,
            text,
            decide(hits, self.thresholds, cross_lingual=self.kb.cross_lingual(text, language=language)),
            self.escalation,
            self.offer_after,
        )
        if session.in_transaction():
            # The caller's transaction (on SQLite it holds the write lock, which the group
            # commit would wait for): the turn is recorded in it, and committed with it.
            return await _record_turn(session, turn)
        if self.writes is not None:  # committed with the other turns and small writes queued
            return await self.writes.write(RECORD_TURNS, turn)
        async with session.begin():
            return await _record_turn(session, turn)

    async def show(
        self, session: AsyncSession, *, person: Person, chat_id: int, version_id: int
    ) -> Reply | None:
        """The customer picked a "did you mean" suggestion: answer with that version."""
        async with session.begin():
            connection = await session.connection()
            found = await _published(connection, [version_id])
            if version_id not in found:
                return None
            shown = _as_shown(found[version_id], None)
            out = await record_message(
                connection,
                person,
                chat_id,
                direction=Direction.OUT,
                author=Author.BOT,
                text=shown.answer,
                decision="picked",
                version_id=version_id,
            )
        return Reply(Action.ANSWER, out, article=shown)

    async def note_incoming(
        self,
        session: AsyncSession,
        *,
        person: Person,
        chat_id: int,
        telegram_message_id: int,
        content_type: str,
        text: str | None = None,
    ) -> None:
        """Store a customer message the bot does not search for (commands, stickers, photos...)."""
        async with session.begin():
            connection = await session.connection()
            if await incoming_id(connection, chat_id=chat_id, telegram_message_id=telegram_message_id):
                return  # the update is processed again
            await record_message(
                connection,
                person,
                chat_id,
                direction=Direction.IN,
                author=Author.CUSTOMER,
                telegram_message_id=telegram_message_id,
                content_type=content_type,
                text=text,
            )

    async def note_outgoing(
        self, session: AsyncSession, *, person: Person, chat_id: int, text: str, decision: str | None = None
    ) -> int:
        """Store a bot message that is not an answer (greeting, help, apologies); returns its row id."""
        async with session.begin():
            return await record_message(
                await session.connection(),
                person,
                chat_id,
                direction=Direction.OUT,
                author=Author.BOT,
                text=text,
                decision=decision,
            )

    async def mark_sent(self, session: AsyncSession, *, message_id: int, telegram_message_id: int) -> None:
        """Record the Telegram id of a sent bot message (a row erased meanwhile stays erased)."""
        item = (message_id, telegram_message_id)
        if self.writes is not None:
            await self.writes.write(SET_TELEGRAM_IDS, item)
            return
        async with session.begin():
            await _set_telegram_ids(session, [item])

    async def feedback(
        self, session: AsyncSession, *, person: Person, message_id: int, helpful: bool
    ) -> FeedbackResult:
        """Store a "Helped" / "Didn't help" press; after "didn't help", how to offer a person."""
        async with session.begin():
            outcome = await self._store_feedback(session, person, message_id, helpful)
            human = HumanOffer.NONE
            if outcome == FeedbackOutcome.RECORDED and not helpful:
                message = await session.get(Message, message_id)
                assert message is not None
                human = await _human_offer(
                    session, message.conversation_id, self.escalation, self.offer_after
                )
            return FeedbackResult(outcome, human)

    async def _store_feedback(
        self, session: AsyncSession, person: Person, message_id: int, helpful: bool
    ) -> str:
        message = await session.get(Message, message_id)
        customer = await session.scalar(select(Customer).where(Customer.telegram_id == person.telegram_id))
        if message is None or customer is None or message.author is not Author.BOT:
            return FeedbackOutcome.UNKNOWN
        conversation = await session.get(Conversation, message.conversation_id)
        if conversation is None or conversation.customer_id != customer.id:
            return FeedbackOutcome.UNKNOWN
        existing = await session.scalar(select(Feedback).where(Feedback.message_id == message_id))
        if existing is not None:
            if existing.helpful == helpful:
                return FeedbackOutcome.ALREADY
            existing.helpful = helpful  # changed their mind: the last press counts
            existing.created_at = utcnow()
            return FeedbackOutcome.RECORDED
        session.add(
            Feedback(
                message_id=message_id,
                customer_id=customer.id,
                version_id=message.version_id,
                helpful=helpful,
            )
        )
        return FeedbackOutcome.RECORDED

    async def article(self, session: AsyncSession, *, version_id: int) -> Shown | None:
        """A published article version as the customer would get it."""
        async with session.begin():
            found = await _published(await session.connection(), [version_id])
        return _as_shown(found[version_id], None) if version_id in found else None

    async def candidates(
        self, session: AsyncSession, *, text: str, language: str | None, k: int = 3
    ) -> list[Shown]:
        """The best KB articles for ``text`` (for an agent's ``/suggest``), best first."""
        hits = await self.kb.search(text, k=k, language=language)  # outside the transaction
        async with session.begin():
            found = await _published(await session.connection(), [hit.version_id for hit in hits])
        return [_as_shown(found[hit.version_id], hit.score) for hit in hits if hit.version_id in found]
