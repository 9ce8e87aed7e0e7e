"""Tickets: the hand-over from the bot to people, as data.

A ticket moves ``bot -> waiting -> assigned -> resolved``; while it is waiting or assigned the
customer's messages belong to it and the bot does not answer from the KB. Resolving (an agent's
``/close``) or cancelling (the customer's ``/cancel``, which puts it back to ``bot``) ends it and
closes the conversation, so the bot starts afresh. ``/reopen`` brings a resolved ticket back.

:class:`Tickets` is the service: it owns its transactions and returns plain data (:class:`TicketView`,
:class:`Card`...). The keyword-only functions at the bottom are the data access; they take the
session and never commit. Nothing here talks to Telegram.

Errors: :class:`TicketNotFound` (a :class:`kb.errors.KbError` and a ``LookupError``) when a
ticket id names no ticket where one must exist.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from kb.conversations import Person, conversation_id_for, customer_id_for, insert_message, record_message
from kb.errors import KbError
from kb.models import (
    ArticleVersion,
    Author,
    Conversation,
    Csat,
    Customer,
    Direction,
    Feedback,
    Message,
    Suggestion,
    SuggestionStatus,
    Ticket,
    TicketState,
    utcnow,
)

OPEN_STATES = (TicketState.WAITING, TicketState.ASSIGNED)
EARLIER_TICKETS = 5
BOT_TURNS = ("answer", "picked", "suggest", "escalate")


class TicketNotFound(KbError, LookupError):
    def __init__(self, ticket_id: int) -> None:
        self.ticket_id = ticket_id
        super().__init__(f"no ticket {ticket_id}")


@dataclass(frozen=True, slots=True)
class Agent:
    """A person in the agents' chat, as the update describes them."""

    telegram_id: int
    name: str  # for people: "Alice Smith (@alice)"


@dataclass(frozen=True, slots=True)
class TicketView:
    id: int
    state: TicketState
    customer_id: int
    customer_telegram_id: int
    customer_name: str
    language: str | None
    chat_id: int
    topic_id: int | None
    card_message_id: int | None
    agent_id: int | None
    agent_name: str | None
    reason: str
    question: str | None
    opened_at: datetime
    first_response_at: datetime | None
    resolved_at: datetime | None
    outcome: str | None

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES


@dataclass(frozen=True, slots=True)
class Opened:
    """The result of an escalation: the ticket, whether it is new, its place in the queue."""

    ticket: TicketView
    is_new: bool
    position: int


class Change(enum.StrEnum):
    DONE = "done"
    ALREADY = "already"  # nothing to do (already yours, already closed...)
    ENDED = "ended"  # the ticket is no longer open
    BUSY = "busy"  # reopen: the customer has another open ticket
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Outcome:
    change: Change
    ticket: TicketView | None = None
    previous_agent: str | None = None  # claim: who had it before
    other_ticket: int | None = None  # reopen refused: the customer's open ticket


@dataclass(frozen=True, slots=True)
class AgentReply:
    """An agent's message reached the customer: was it the first, did it assign the ticket."""

    ticket: TicketView
    first: bool
    claimed: bool


@dataclass(frozen=True, slots=True)
class EarlierTicket:
    id: int
    opened_at: datetime
    state: TicketState
    outcome: str | None
    csat: int | None


@dataclass(frozen=True, slots=True)
class Line:
    """One message of the conversation, for the card and the transcript."""

    at: datetime
    author: Author
    content_type: str
    text: str | None
    decision: str | None = None
    title: str | None = None  # the article, for the bot's answers
    version: int | None = None
    score: float | None = None
    helpful: bool | None = None
    agent: str | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """What the bot tried for one question: its answer (title, version, score) and the feedback."""

    question: str | None
    decision: str
    title: str | None = None
    version: int | None = None
    score: float | None = None
    helpful: bool | None = None
    suggestions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Card:
    ticket: TicketView
    username: str | None
    first_seen: datetime
    earlier: list[EarlierTicket]
    lines: list[Line]
    attempts: list[Attempt]
    csat: int | None = None
    tags: tuple[str, ...] = ()  # on the customer's profile (``/tag``)


@dataclass(frozen=True, slots=True)
class Rated:
    change: Change
    ticket: TicketView | None = None
    score: int | None = None


class Tickets:
    """The hand-over service: escalation, ownership, the relay log, CSAT and FAQ suggestions."""

    # -- the customer's side ------------------------------------------------------------------

    async def open(self, session: AsyncSession, *, person: Person, chat_id: int, reason: str) -> Opened:
        """Escalate: the customer's open ticket, or a new one with their last question."""
        async with session.begin():
            connection = await session.connection()
            now = utcnow()
            customer_id = await customer_id_for(connection, person, now)
            current = await open_ticket_of(session, customer_id=customer_id)
            if current is not None:
                view = await _view(session, current)
                return Opened(view, False, await queue_position(session, ticket=current))
            conversation_id = await conversation_id_for(connection, customer_id, chat_id, now)
            question = await last_question(session, conversation_id=conversation_id)
            ticket = Ticket(
                customer_id=customer_id,
                conversation_id=conversation_id,
                chat_id=chat_id,
                state=TicketState.WAITING,
                reason=reason,
                question=question,
                opened_at=utcnow(),
            )
            session.add(ticket)
            await session.flush()
            return Opened(await _view(session, ticket), True, await queue_position(session, ticket=ticket))

    async def open_for(self, session: AsyncSession, *, telegram_id: int) -> TicketView | None:
        """The customer's open ticket, if any (read-only)."""
        async with session.begin():
            ticket = await open_ticket_of(session, telegram_id=telegram_id)
            return await _view(session, ticket) if ticket else None

    async def customer_message(
        self,
        session: AsyncSession,
        *,
        ticket_id: int,
        person: Person,
        chat_id: int,
        telegram_message_id: int,
        content_type: str,
        text: str | None,
    ) -> int:
        """Store a message the customer sent while the ticket is open; returns the row id."""
        async with session.begin():
            return await record_message(
                await session.connection(),
                person,
                chat_id,
                direction=Direction.IN,
                author=Author.CUSTOMER,
                telegram_message_id=telegram_message_id,
                content_type=content_type,
                text=text,
                ticket_id=ticket_id,
            )

    async def set_relayed(self, session: AsyncSession, *, pairs: list[tuple[int, int]]) -> None:
        """Record where stored messages were copied: ``(row id, message id on the other side)``."""
        async with session.begin():
            for row_id, relay_id in pairs:
                row = await session.get(Message, row_id)
                if row is not None:
                    row.relay_message_id = relay_id

    async def counterpart(
        self, session: AsyncSession, *, ticket_id: int, message_id: int, in_topic: bool
    ) -> int | None:
        """The id of a relayed message's copy on the other side.

        ``in_topic``: ``message_id`` is in the agents' topic, the answer in the customer's chat;
        else the other way round.
        """
        async with session.begin():
            column, other = (
                (Message.relay_message_id, Message.telegram_message_id)
                if in_topic
                else (Message.telegram_message_id, Message.relay_message_id)
            )
            return await session.scalar(
                select(other)
                .where(
                    Message.ticket_id == ticket_id,
                    column == message_id,
                    Message.relay_message_id.is_not(None),
                    Message.author.in_([Author.CUSTOMER, Author.AGENT]),
                )
                .order_by(Message.id.desc())
                .limit(1)
            )

    async def agent_message_of(
        self, session: AsyncSession, *, ticket_id: int, topic_message_id: int
    ) -> tuple[int, int] | None:
        """An agent's relayed message by its id in the topic: (row id, id in the customer's chat)."""
        async with session.begin():
            row = await session.scalar(
                select(Message).where(
                    Message.ticket_id == ticket_id,
                    Message.author == Author.AGENT,
                    Message.decision == "relay",
                    Message.relay_message_id == topic_message_id,
                )
            )
            if row is None or row.telegram_message_id is None:
                return None
            return row.id, row.telegram_message_id

    async def edited(self, session: AsyncSession, *, row_id: int, text: str | None) -> None:
        async with session.begin():
            row = await session.get(Message, row_id)
            if row is not None:
                row.text = text

    async def cancel(self, session: AsyncSession, *, telegram_id: int) -> TicketView | None:
        """The customer hands the conversation back to the bot; None when nothing was open."""
        async with session.begin():
            ticket = await open_ticket_of(session, telegram_id=telegram_id)
            if ticket is None:
                return None
            await _end(session, ticket, state=TicketState.BOT, outcome="cancelled")
            return await _view(session, ticket)

    async def rate(self, session: AsyncSession, *, telegram_id: int, ticket_id: int, score: int) -> Rated:
        """The customer's 1-5 rating of a resolved ticket (pressing again changes it)."""
        if not 1 <= score <= 5:
            return Rated(Change.UNKNOWN)
        async with session.begin():
            ticket = await session.get(Ticket, ticket_id)
            customer = await session.scalar(select(Customer).where(Customer.telegram_id == telegram_id))
            if ticket is None or customer is None or ticket.customer_id != customer.id:
                return Rated(Change.UNKNOWN)
            if ticket.state is not TicketState.RESOLVED:
                return Rated(Change.ENDED, await _view(session, ticket))
            existing = await session.scalar(select(Csat).where(Csat.ticket_id == ticket_id))
            if existing is not None and existing.score == score:
                return Rated(Change.ALREADY, await _view(session, ticket), score)
            if existing is None:
                session.add(Csat(ticket_id=ticket_id, customer_id=customer.id, score=score))
            else:
                existing.score, existing.created_at = score, utcnow()
            return Rated(Change.DONE, await _view(session, ticket), score)

    # -- the agents' side ---------------------------------------------------------------------

    async def get(self, session: AsyncSession, *, ticket_id: int) -> TicketView | None:
        async with session.begin():
            ticket = await session.get(Ticket, ticket_id)
            return await _view(session, ticket) if ticket else None

    async def by_topic(self, session: AsyncSession, *, topic_id: int) -> TicketView | None:
        async with session.begin():
            ticket = await session.scalar(
                select(Ticket).where(Ticket.topic_id == topic_id).order_by(Ticket.id.desc()).limit(1)
            )
            return await _view(session, ticket) if ticket else None

    async def set_topic(
        self, session: AsyncSession, *, ticket_id: int, topic_id: int | None, card_message_id: int | None
    ) -> None:
        async with session.begin():
            ticket = await session.get(Ticket, ticket_id)
            if ticket is not None:
                ticket.topic_id = topic_id
                ticket.card_message_id = card_message_id

    async def card(self, session: AsyncSession, *, ticket_id: int, until: datetime | None = None) -> Card:
        """Everything agents need to take over, from the database (messages up to ``until``)."""
        async with session.begin():
            ticket = await session.get(Ticket, ticket_id)
            if ticket is None:
                raise TicketNotFound(ticket_id)
            customer = await session.get(Customer, ticket.customer_id)
            assert customer is not None
            earlier = await earlier_tickets(session, customer_id=customer.id, before=ticket.id)
            lines = await transcript(session, ticket=ticket, until=until)
            csat = await session.scalar(select(Csat.score).where(Csat.ticket_id == ticket.id))
            return Card(
                ticket=await _view(session, ticket),
                username=customer.username,
                first_seen=customer.first_seen,
                earlier=earlier,
                lines=lines,
                attempts=attempts_of(lines),
                csat=csat,
                tags=tuple(customer.tags),
            )

    async def claim(self, session: AsyncSession, *, ticket_id: int, agent: Agent) -> Outcome:
        async with session.begin():
            ticket = await session.get(Ticket, ticket_id)
            if ticket is None:
                return Outcome(Change.UNKNOWN)
            if not ticket.state.is_open:
                return Outcome(Change.ENDED, await _view(session, ticket))
            if ticket.state is TicketState.ASSIGNED and ticket.agent_id == agent.telegram_id:
                return Outcome(Change.ALREADY, await _view(session, ticket))
            previous = ticket.agent_name if ticket.state is TicketState.ASSIGNED else None
            ticket.state = TicketState.ASSIGNED
            ticket.agent_id, ticket.agent_name = agent.telegram_id, agent.name
            return Outcome(Change.DONE, await _view(session, ticket), previous_agent=previous)

    async def close(self, session: AsyncSession, *, ticket_id: int, agent: Agent) -> Outcome:
        """Resolve: the customer is rated and handed back to the bot."""
        async with session.begin():
            ticket = await session.get(Ticket, ticket_id)
            if ticket is None:
                return Outcome(Change.UNKNOWN)
            if not ticket.state.is_open:
                return Outcome(Change.ALREADY, await _view(session, ticket))
            if ticket.agent_id is None:
                ticket.agent_id, ticket.agent_name = agent.telegram_id, agent.name
            await _end(session, ticket, state=TicketState.RESOLVED, outcome="resolved")
            return Outcome(Change.DONE, await _view(session, ticket))

    async def reopen(self, session: AsyncSession, *, ticket_id: int, agent: Agent) -> Outcome:
        async with session.begin():
            ticket = await session.get(Ticket, ticket_id)
            if ticket is None:
                return Outcome(Change.UNKNOWN)
            if ticket.state.is_open:
                return Outcome(Change.ALREADY, await _view(session, ticket))
            other = await open_ticket_of(session, customer_id=ticket.customer_id)
            if other is not None:
                return Outcome(Change.BUSY, await _view(session, ticket), other_ticket=other.id)
            ticket.state = TicketState.ASSIGNED
            ticket.agent_id, ticket.agent_name = agent.telegram_id, agent.name
            ticket.resolved_at, ticket.outcome = None, None
            return Outcome(Change.DONE, await _view(session, ticket))

    async def agent_replied(
        self,
        session: AsyncSession,
        *,
        ticket_id: int,
        agent: Agent,
        topic_message_id: int | None,
        customer_message_id: int,
        content_type: str,
        text: str | None,
        version_id: int | None = None,
    ) -> AgentReply:
        """An agent's message reached the customer: log it, note the first response, and assign
        a waiting ticket to whoever answered first."""
        async with session.begin():
            ticket = await session.get(Ticket, ticket_id)
            if ticket is None:
                raise TicketNotFound(ticket_id)
            customer = await session.get(Customer, ticket.customer_id)
            assert customer is not None
            connection = await session.connection()
            chat_id = ticket.chat_id or customer.telegram_id
            await insert_message(
                connection,
                conversation_id=await conversation_id_for(connection, customer.id, chat_id, utcnow()),
                direction=Direction.OUT,
                author=Author.AGENT,
                chat_id=chat_id,
                telegram_message_id=customer_message_id,
                relay_message_id=topic_message_id,
                content_type=content_type,
                text=text,
                decision="agent_kb" if version_id else "relay",
                version_id=version_id,
                ticket_id=ticket.id,
                agent_id=agent.telegram_id,
            )
            first = ticket.first_response_at is None
            if first:
                ticket.first_response_at = utcnow()
            claimed = ticket.state is TicketState.WAITING
            if claimed:
                ticket.state = TicketState.ASSIGNED
                ticket.agent_id, ticket.agent_name = agent.telegram_id, agent.name
            return AgentReply(await _view(session, ticket), first, claimed)

    async def internal(
        self,
        session: AsyncSession,
        *,
        ticket_id: int,
        agent: Agent,
        chat_id: int,
        topic_message_id: int,
        text: str | None,
        kind: str = "note",
    ) -> None:
        """Keep an agent's message that does not go to the customer (a note, or one that could
        not be delivered because the ticket is closed)."""
        await _log_on_ticket(
            session,
            ticket_id,
            author=Author.AGENT,
            chat_id=chat_id,
            telegram_message_id=topic_message_id,
            text=text,
            decision=kind,
            agent_id=agent.telegram_id,
        )

    async def bot_said(
        self, session: AsyncSession, *, ticket_id: int, text: str, decision: str, telegram_message_id: int
    ) -> None:
        """Log what the bot told the customer about their ticket (e.g. the closing message)."""
        await _log_on_ticket(
            session,
            ticket_id,
            author=Author.BOT,
            chat_id=None,
            telegram_message_id=telegram_message_id,
            text=text,
            decision=decision,
        )

    async def customer_messages(self, session: AsyncSession, *, ticket_id: int) -> int:
        """How many messages the customer sent since the ticket opened."""
        async with session.begin():
            count = await session.scalar(
                select(func.count(Message.id)).where(
                    Message.ticket_id == ticket_id, Message.author == Author.CUSTOMER
                )
            )
            return int(count or 0)

    async def question_of(self, session: AsyncSession, *, ticket_id: int) -> str | None:
        """The customer's last question: their last text in the ticket, else the escalated one."""
        async with session.begin():
            ticket = await session.get(Ticket, ticket_id)
            if ticket is None:
                return None
            latest = await session.scalar(
                select(Message.text)
                .where(
                    Message.ticket_id == ticket_id,
                    Message.author == Author.CUSTOMER,
                    Message.content_type == "text",
                    Message.text.is_not(None),
                )
                .order_by(Message.id.desc())
                .limit(1)
            )
            return latest or ticket.question

    async def suggest_faq(
        self, session: AsyncSession, *, ticket_id: int, agent: Agent, answer: str | None = None
    ) -> Suggestion | None:
        """Save the customer's question and the agent's last answer (or ``answer``) for editors."""
        question = await self.question_of(session, ticket_id=ticket_id)
        async with session.begin():
            ticket = await session.get(Ticket, ticket_id)
            if ticket is None or not question:
                return None
            if not answer:
                answer = await session.scalar(
                    select(Message.text)
                    .where(
                        Message.ticket_id == ticket_id,
                        Message.author == Author.AGENT,
                        Message.decision.in_(["relay", "agent_kb"]),
                        Message.text.is_not(None),
                    )
                    .order_by(Message.id.desc())
                    .limit(1)
                )
            if not answer:
                return None
            suggestion = Suggestion(
                question=question,
                answer=answer,
                ticket_id=ticket.id,
                customer_id=ticket.customer_id,
                agent_id=agent.telegram_id,
                status=SuggestionStatus.PENDING,
            )
            session.add(suggestion)
            await session.flush()
            return suggestion


# -- data access: keyword-only, the session given, no commits ----------------------------------


async def open_ticket_of(
    session: AsyncSession, *, customer_id: int | None = None, telegram_id: int | None = None
) -> Ticket | None:
    """The customer's open ticket (the newest, should there be several), by either id."""
    query = select(Ticket).where(Ticket.state.in_(OPEN_STATES)).order_by(Ticket.id.desc()).limit(1)
    if customer_id is not None:
        return await session.scalar(query.where(Ticket.customer_id == customer_id))
    if telegram_id is None:
        raise TypeError("open_ticket_of needs customer_id or telegram_id")
    return await session.scalar(
        query.join(Customer, Customer.id == Ticket.customer_id).where(Customer.telegram_id == telegram_id)
    )


async def queue_position(session: AsyncSession, *, ticket: Ticket) -> int:
    """1 for the oldest ticket nobody has claimed yet; 0 once an agent has it."""
    if ticket.state is not TicketState.WAITING:
        return 0
    ahead = await session.scalar(
        select(func.count(Ticket.id)).where(Ticket.state == TicketState.WAITING, Ticket.id < ticket.id)
    )
    return int(ahead or 0) + 1


async def last_question(session: AsyncSession, *, conversation_id: int) -> str | None:
    return await session.scalar(
        select(Message.text)
        .where(
            Message.conversation_id == conversation_id,
            Message.author == Author.CUSTOMER,
            Message.content_type == "text",
        )
        .order_by(Message.id.desc())
        .limit(1)
    )


async def earlier_tickets(session: AsyncSession, *, customer_id: int, before: int) -> list[EarlierTicket]:
    rows = (
        await session.execute(
            select(Ticket, Csat.score)
            .outerjoin(Csat, Csat.ticket_id == Ticket.id)
            .where(Ticket.customer_id == customer_id, Ticket.id < before)
            .order_by(Ticket.id.desc())
            .limit(EARLIER_TICKETS)
        )
    ).all()
    return [EarlierTicket(t.id, t.opened_at, t.state, t.outcome, score) for t, score in rows]


async def transcript(session: AsyncSession, *, ticket: Ticket, until: datetime | None) -> list[Line]:
    """The conversation the ticket came from plus everything relayed since, oldest first."""
    scope = [Message.ticket_id == ticket.id]
    if ticket.conversation_id is not None:
        scope.append(Message.conversation_id == ticket.conversation_id)
    query = (
        select(Message, ArticleVersion.question, ArticleVersion.number, Feedback.helpful)
        .outerjoin(ArticleVersion, ArticleVersion.id == Message.version_id)
        .outerjoin(Feedback, Feedback.message_id == Message.id)
        .where(or_(*scope))
        .order_by(Message.id)
    )
    if until is not None:
        query = query.where(Message.created_at <= until)
    lines = []
    for message, title, number, helpful in (await session.execute(query)).all():
        lines.append(
            Line(
                at=message.created_at,
                author=message.author,
                content_type=message.content_type,
                text=message.text,
                decision=message.decision,
                title=title,
                version=number,
                score=message.score,
                helpful=helpful,
                agent=str(message.agent_id) if message.agent_id else None,
            )
        )
    return lines


def attempts_of(lines: list[Line]) -> list[Attempt]:
    """The bot's turns (answers, suggestions, no-answers) with the question each one was for."""
    attempts: list[Attempt] = []
    question: str | None = None
    for line in lines:
        if line.author is Author.CUSTOMER and line.content_type == "text":
            question = line.text
        elif (
            line.author is Author.BOT
            and line.decision == "picked"
            and attempts
            and (attempts[-1].decision == "suggest")
        ):
            offered = attempts.pop()  # the customer picked one of the suggestions: one turn
            attempts.append(
                Attempt(
                    question=offered.question,
                    decision="picked",
                    title=line.title,
                    version=line.version,
                    score=offered.score,
                    helpful=line.helpful,
                )
            )
        elif line.author is Author.BOT and line.decision in BOT_TURNS:
            attempts.append(
                Attempt(
                    question=question,
                    decision=line.decision or "",
                    title=line.title,
                    version=line.version,
                    score=line.score,
                    helpful=line.helpful,
                )
            )
    return attempts


async def _end(session: AsyncSession, ticket: Ticket, *, state: TicketState, outcome: str) -> None:
    now = utcnow()
    ticket.state, ticket.outcome, ticket.resolved_at = state, outcome, now
    # The customer starts afresh with the bot: a new conversation, a new count of failed turns.
    customer = await session.get(Customer, ticket.customer_id)
    if customer is not None:
        conversation = await session.scalar(
            select(Conversation)
            .where(Conversation.customer_id == customer.id, Conversation.closed_at.is_(None))
            .order_by(Conversation.id.desc())
            .limit(1)
        )
        if conversation is not None:
            conversation.closed_at, conversation.outcome = now, f"ticket_{outcome}"


async def _view(session: AsyncSession, ticket: Ticket) -> TicketView:
    customer = await session.get(Customer, ticket.customer_id)
    assert customer is not None
    name = " ".join(part for part in (customer.first_name, customer.last_name) if part)
    return TicketView(
        id=ticket.id,
        state=ticket.state,
        customer_id=customer.id,
        customer_telegram_id=customer.telegram_id,
        customer_name=name or f"Customer {customer.telegram_id}",
        language=customer.language,
        chat_id=ticket.chat_id or customer.telegram_id,
        topic_id=ticket.topic_id,
        card_message_id=ticket.card_message_id,
        agent_id=ticket.agent_id,
        agent_name=ticket.agent_name,
        reason=ticket.reason,
        question=ticket.question,
        opened_at=ticket.opened_at,
        first_response_at=ticket.first_response_at,
        resolved_at=ticket.resolved_at,
        outcome=ticket.outcome,
    )


async def _log_on_ticket(
    session: AsyncSession, ticket_id: int, *, author: Author, chat_id: int | None, **fields: object
) -> None:
    """Store an outgoing text message in the ticket's conversation (no-op for a gone ticket).

    ``chat_id`` None means the customer's chat."""
    async with session.begin():
        ticket = await session.get(Ticket, ticket_id)
        if ticket is None or ticket.conversation_id is None:
            return
        session.add(
            Message(
                conversation_id=ticket.conversation_id,
                direction=Direction.OUT,
                author=author,
                chat_id=(ticket.chat_id or 0) if chat_id is None else chat_id,
                content_type="text",
                ticket_id=ticket.id,
                **fields,
            )
        )
