"""Conversations with customers: who they are, what they asked, what the bot answered.

The services here own their transactions (``async with session.begin()``) and return plain
data for the Telegram layer to render; they never talk to Telegram themselves. Tickets (the
hand-over to people) are in :mod:`kb.tickets`; this module decides when to offer one.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from kb.db import Batched, GroupCommit, parameters
from kb.decision import Action, Thresholds, decide
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


async def locked_customer(session: AsyncSession, *, telegram_id: int) -> Customer | None:
    """The customer, their row locked to the end of the transaction (PostgreSQL; SQLite's write
    transactions are serial already): one customer's turns, handled concurrently, go one by one."""
    return await session.scalar(select(Customer).where(Customer.telegram_id == telegram_id).with_for_update())


async def touch_customer(session: AsyncSession, person: Person) -> Customer:
    customer = await locked_customer(session, telegram_id=person.telegram_id)
    now = utcnow()
    if customer is None:
        try:
            async with session.begin_nested():  # a concurrent first message may insert them first
                customer = Customer(telegram_id=person.telegram_id, first_seen=now)
                session.add(customer)
        except IntegrityError:
            customer = await locked_customer(session, telegram_id=person.telegram_id)
            if customer is None:
                raise
    customer.first_name = person.first_name
    customer.last_name = person.last_name
    customer.username = person.username
    customer.language = person.language_code or customer.language
    customer.last_seen = now
    await session.flush()
    return customer


async def conversation_for(session: AsyncSession, customer: Customer, chat_id: int) -> Conversation:
    now = utcnow()
    conversation = await session.scalar(
        select(Conversation)
        .where(Conversation.customer_id == customer.id, Conversation.chat_id == chat_id)
        .order_by(Conversation.id.desc())
        .limit(1)
    )
    if (
        conversation is None
        or conversation.closed_at
        or now - conversation.last_message_at > CONVERSATION_GAP
    ):
        conversation = Conversation(customer_id=customer.id, chat_id=chat_id, started_at=now)
        session.add(conversation)
    conversation.last_message_at = now
    await session.flush()
    return conversation


def message_row(
    conversation: Conversation, *, direction: Direction, author: Author, **fields: object
) -> Message:
    return Message(
        conversation_id=conversation.id,
        direction=direction,
        author=author,
        chat_id=conversation.chat_id,
        **fields,
    )


async def stored_incoming(session: AsyncSession, *, chat_id: int, telegram_message_id: int) -> Message | None:
    """The customer message already stored for this Telegram message: the update is being
    processed again (after a crash or a transient failure), so it is not stored twice."""
    return await session.scalar(
        select(Message)
        .where(
            Message.chat_id == chat_id,
            Message.telegram_message_id == telegram_message_id,
            Message.direction == Direction.IN,
        )
        .limit(1)
    )


async def bot_turn_after(session: AsyncSession, incoming: Message) -> Message | None:
    """The bot's recorded answer to ``incoming`` (the next bot message of its conversation)."""
    return await session.scalar(
        select(Message)
        .where(
            Message.conversation_id == incoming.conversation_id,
            Message.id > incoming.id,
            Message.author == Author.BOT,
        )
        .order_by(Message.id)
        .limit(1)
    )


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


class Helpdesk:
    """The customer-facing service: questions in, decisions out, everything recorded.

    ``escalation``: people can take over (agents are configured); ``offer_after``: failed turns
    in a row before the bot offers a person itself (0 = never); ``writes``: the writer that
    commits small writes together (the Telegram ids of sent messages), else each is its own
    transaction.
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

    async def _offer(self, session: AsyncSession, conversation_id: int) -> HumanOffer:
        if not self.escalation:
            return HumanOffer.NONE
        if self.offer_after and await unanswered_streak(session, conversation_id=conversation_id) >= (
            self.offer_after
        ):
            return HumanOffer.OFFER
        return HumanOffer.BUTTON

    def expect_question(self, text: str, *, language: str | None) -> None:
        """A customer's message that :meth:`ask` will likely be given has arrived: its search
        starts now (see :meth:`KnowledgeBase.start_search`)."""
        self.kb.start_search(text, k=ANSWER_HITS, language=language)

    async def ask(
        self, session: AsyncSession, *, person: Person, chat_id: int, telegram_message_id: int, text: str
    ) -> Reply:
        hits = await self.kb.search(text, k=ANSWER_HITS, language=person.language_code)  # outside the tx
        decision = decide(hits, self.thresholds)
        async with session.begin():
            customer = await touch_customer(session, person)
            conversation = await conversation_for(session, customer, chat_id)
            incoming = await stored_incoming(
                session, chat_id=chat_id, telegram_message_id=telegram_message_id
            )
            if incoming is None:
                session.add(
                    message_row(
                        conversation,
                        direction=Direction.IN,
                        author=Author.CUSTOMER,
                        telegram_message_id=telegram_message_id,
                        text=text,
                    )
                )
            shown = [await self._shown(session, hit) for hit in decision.chosen]
            top = shown[0] if decision.action is Action.ANSWER else None
            turn = {
                "text": top.answer if top else None,
                "decision": decision.action.value,
                "hits": [h.as_log() for h in decision.hits],
                "version_id": top.version_id if top else None,
                "score": decision.top_score,
            }
            out = await bot_turn_after(session, incoming) if incoming is not None else None
            if out is None:
                out = message_row(conversation, direction=Direction.OUT, author=Author.BOT, **turn)
                session.add(out)
            else:  # processed again: the bot's turn is the one recorded the first time
                for name, value in turn.items():
                    setattr(out, name, value)
            await session.flush()
            human = await self._offer(session, conversation.id)
            if human is HumanOffer.OFFER and decision.action is not Action.ESCALATE:
                human = HumanOffer.BUTTON  # the bot has something to show: offer with the next miss
        return Reply(
            decision.action,
            out.id,
            article=top,
            suggestions=shown if decision.action is Action.SUGGEST else [],
            human=human,
        )

    async def show(
        self, session: AsyncSession, *, person: Person, chat_id: int, version_id: int
    ) -> Reply | None:
        """The customer picked a "did you mean" suggestion: answer with that version."""
        async with session.begin():
            shown = await self._shown_version(session, version_id, score=None)
            if shown is None:
                return None
            customer = await touch_customer(session, person)
            conversation = await conversation_for(session, customer, chat_id)
            out = message_row(
                conversation,
                direction=Direction.OUT,
                author=Author.BOT,
                text=shown.answer,
                decision="picked",
                version_id=version_id,
            )
            session.add(out)
            await session.flush()
        return Reply(Action.ANSWER, out.id, article=shown)

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
            customer = await touch_customer(session, person)
            conversation = await conversation_for(session, customer, chat_id)
            if await stored_incoming(session, chat_id=chat_id, telegram_message_id=telegram_message_id):
                return  # the update is processed again
            session.add(
                message_row(
                    conversation,
                    direction=Direction.IN,
                    author=Author.CUSTOMER,
                    telegram_message_id=telegram_message_id,
                    content_type=content_type,
                    text=text,
                )
            )

    async def note_outgoing(
        self, session: AsyncSession, *, person: Person, chat_id: int, text: str, decision: str | None = None
    ) -> int:
        """Store a bot message that is not an answer (greeting, help, apologies); returns its row id."""
        async with session.begin():
            customer = await touch_customer(session, person)
            conversation = await conversation_for(session, customer, chat_id)
            out = message_row(
                conversation, direction=Direction.OUT, author=Author.BOT, text=text, decision=decision
            )
            session.add(out)
            await session.flush()
            return out.id

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
                human = await self._offer(session, message.conversation_id)
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
            return await self._shown_version(session, version_id, score=None)

    async def candidates(
        self, session: AsyncSession, *, text: str, language: str | None, k: int = 3
    ) -> list[Shown]:
        """The best KB articles for ``text`` (for an agent's ``/suggest``), best first."""
        hits = await self.kb.search(text, k=k, language=language)  # outside the transaction
        async with session.begin():
            shown = [await self._shown_version(session, hit.version_id, score=hit.score) for hit in hits]
        return [s for s in shown if s is not None]

    async def _shown(self, session: AsyncSession, hit: Hit) -> Shown:
        shown = await self._shown_version(session, hit.version_id, score=hit.score)
        if shown is None:  # retired between the search and now: show the title we have
            return Shown(hit.version_id, hit.article_key, hit.version, hit.title, "", hit.score)
        return shown

    async def _shown_version(
        self, session: AsyncSession, version_id: int, *, score: float | None
    ) -> Shown | None:
        row = (
            await session.execute(
                select(ArticleVersion, Article.key)
                .join(Article, Article.id == ArticleVersion.article_id)
                .where(ArticleVersion.id == version_id, Article.status == ArticleStatus.PUBLISHED)
            )
        ).first()
        if row is None:
            return None
        version, key = row
        return Shown(version.id, key, version.number, version.question, version.answer, score)
