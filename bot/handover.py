"""The agents' desk: one forum supergroup, one topic per ticket, messages relayed both ways.

:class:`Desk` is the Telegram side of :class:`kb.tickets.Tickets`. Handlers make one call to it;
it records through the ticket service (in transactions of its own) and talks to Telegram through
the :class:`~bot.pacing.PacedSender`, never holding a transaction across a Bot API call:

* escalation opens (or finds) the customer's ticket; a topic named
  ``#<ticket> <customer> — <first words>`` is created, the card posted first and pinned (the
  whole conversation attached as a .txt file when it does not fit);
* customer messages are copied into the topic (albums with ``copyMessages``, consecutive texts
  coalesced while the group's queue is backed up); agent messages are copied to the customer,
  their edits relayed as edits; notes (``/note``, ``//...``) and commands stay in the topic;
* a topic deleted by hand is recreated, with the card, by the next message that needs it (the
  sender's ``repair`` hook, so the queue keeps its order);
* the agents' chat not being a forum, or the bot lacking the "Manage topics" right, is logged
  at start and whenever a topic cannot be created; tickets are still recorded.

Every follow-up of a send (recording the copy's id, telling the agent the customer blocked the
bot...) runs in a task of its own, so handlers return as soon as their calls are queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiogram import Bot
from aiogram.enums import ContentType
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest, TelegramForbiddenError
from aiogram.methods import (
    CloseForumTopic,
    CopyMessage,
    CopyMessages,
    CreateForumTopic,
    EditForumTopic,
    EditMessageCaption,
    EditMessageText,
    PinChatMessage,
    ReopenForumTopic,
    SendDocument,
    SendMessage,
    TelegramMethod,
)
from aiogram.types import (
    BufferedInputFile,
    ChatMemberAdministrator,
    ChatMemberMember,
    ChatMemberOwner,
    InlineKeyboardMarkup,
    Message,
    ReplyParameters,
    User,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import delivery, keyboards, metrics
from bot.config import Settings
from bot.forum import (
    PREVIEW_CHARS,
    card_html,
    clip,
    profile_html,
    stats_html,
    topic_name,
    transcript_text,
)
from bot.logs import bind_log_context
from bot.pacing import PacedSender
from bot.render import LIMIT, escape, render_answer
from bot.texts import EN, Texts, texts_for
from kb.analytics import service_report
from kb.conversations import Helpdesk, Person
from kb.customers import clean_tags, customer_profile, note_customer, profile_summary, tag_customer
from kb.hours import BusinessHours
from kb.models import utcnow
from kb.privacy import Erased, forget_customer, record
from kb.tickets import Agent, Change, Rated, Tickets, TicketView

log = logging.getLogger(__name__)

STATS_PERIODS = (7, 30)  # days, for /stats
MEMBER_TTL = 300.0  # seconds a getChatMember answer is trusted (telegram.agents empty)
HINT_EVERY = 600.0  # seconds between two hints to one person (General, non-agents)
FORUM_RETRY = 60.0  # seconds before trying the forum again after it failed
RELAY_SETTLE_SECONDS = 10.0  # how long /faq waits for an agent's message still on its way


@dataclass(frozen=True, slots=True)
class Escalation:
    ticket: TicketView
    is_new: bool
    position: int  # place in the queue; 0 once an agent has it
    opens_at: datetime | None  # outside business hours: when the team is back


def agent_of(user: User) -> Agent:
    name = user.full_name + (f" (@{user.username})" if user.username else "")
    return Agent(user.id, name)


def kind_of(message: Message) -> str:
    return ContentType(message.content_type).value


def acknowledgement(escalation: Escalation | None, texts: Texts, *, now: datetime | None = None) -> str:
    """What the customer is told after asking for a person."""
    if escalation is None:
        return texts.human_unavailable
    ticket = escalation.ticket
    template = texts.human_requested if escalation.is_new else texts.human_already
    parts = [template.format(ticket=ticket.id)]
    if escalation.position == 1:
        parts.append(texts.queue_next)
    elif escalation.position > 1:
        parts.append(texts.queue_position.format(position=escalation.position))
    if escalation.opens_at is not None:
        parts.append(_after_hours(escalation.opens_at, texts, now or utcnow()))
    parts.append(texts.cancel_hint)
    return "\n\n".join(parts)


def _after_hours(opens_at: datetime, texts: Texts, now: datetime) -> str:
    zone = opens_at.tzinfo or UTC
    local_now = now.astimezone(zone)
    clock = opens_at.strftime("%H:%M")
    days = (opens_at.date() - local_now.date()).days
    if days == 0:
        when = texts.when_today.format(time=clock)
    elif days == 1:
        when = texts.when_tomorrow.format(time=clock)
    else:
        when = texts.when_day.format(day=texts.weekdays[opens_at.weekday()], time=clock)
    wait = opens_at - now
    if wait < timedelta(hours=1):
        delta = texts.in_minutes.format(n=max(1, round(wait.total_seconds() / 60)))
    elif wait < timedelta(hours=36):
        delta = texts.in_hours.format(n=round(wait.total_seconds() / 3600))
    else:
        delta = texts.in_days.format(n=round(wait.total_seconds() / 86400))
    zone_name = getattr(zone, "key", str(zone))
    return texts.after_hours.format(when=when, zone=escape(zone_name), delta=delta)


def _ids(result: Any) -> list[int]:
    items = result if isinstance(result, list) else [result]
    return [item.message_id for item in items]


def _explicit_reply(message: Message) -> int | None:
    """The message this one answers, when the sender chose one (not a forum topic's root)."""
    replied = message.reply_to_message
    if replied is None or (message.is_topic_message and replied.message_id == message.message_thread_id):
        return None
    return replied.message_id


class Desk:
    """The agents' forum desk; app-wide, in the dispatcher's workflow data as ``desk``."""

    def __init__(
        self,
        settings: Settings,
        *,
        sessions: async_sessionmaker[AsyncSession],
        tickets: Tickets,
        helpdesk: Helpdesk,
        sender: PacedSender,
    ) -> None:
        self.chat_id = settings.telegram.agents_chat_id
        self.agents = frozenset(settings.telegram.agents)
        self.hours: BusinessHours | None = settings.helpdesk.hours
        self.zone = self.hours.zone if self.hours else UTC
        self.sessions = sessions
        self.tickets = tickets
        self.helpdesk = helpdesk
        self.sender = sender
        self.sender.repair = self._repair
        self.texts = EN  # the forum's language
        self.problem: str | None = None  # why the forum cannot be used, if it cannot
        self._problem_at = 0.0
        self.forum_retry = FORUM_RETRY
        self._bot: Bot | None = None
        self._members: dict[int, tuple[bool, float]] = {}
        self._hinted: dict[tuple[int, int | None], float] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._moved: dict[int, int] = {}  # deleted topic -> its replacement
        self._tasks: set[asyncio.Task[Any]] = set()
        self._relaying: dict[int, set[asyncio.Task[Any]]] = {}  # ticket -> agents' relays in flight
        self.on_suggestion: Callable[[], None] | None = None  # a new FAQ suggestion (editors' desk)

    @property
    def enabled(self) -> bool:
        return bool(self.chat_id)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, bot: Bot) -> None:
        """Bind the bot and check the agents' chat (a forum, the bot an admin who manages topics)."""
        self._bot = bot
        self.sender.bind(bot)
        if not self.enabled:
            log.info("hand-over to agents is off: telegram.agents_chat_id is 0")
            return
        problem = await self.check_forum(bot)
        if problem:
            self._fail(problem)
        else:
            log.info("hand-over to agents in chat %s: ready", self.chat_id)

    async def check_forum(self, bot: Bot) -> str | None:
        """None when the agents' chat is usable, else what is wrong, in words."""
        where = f"the agents' chat (telegram.agents_chat_id = {self.chat_id})"
        try:
            chat = await bot.get_chat(self.chat_id)
        except TelegramAPIError as exc:
            return f"cannot reach {where}: {exc.message}; add the bot to the group as an administrator"
        if chat.type != "supergroup" or not chat.is_forum:
            return (
                f"{where}, {chat.title!r}, is not a forum: turn on Topics in the group's settings "
                "(that also makes it a supergroup)"
            )
        try:
            member = await bot.get_chat_member(self.chat_id, bot.id)
        except TelegramAPIError as exc:
            return f"cannot read the bot's rights in {where}: {exc.message}"
        if not isinstance(member, ChatMemberAdministrator) or not member.can_manage_topics:
            return (
                f"the bot is not an administrator with the 'Manage topics' right in {where}, "
                f"{chat.title!r}: promote it (Manage topics, Pin messages)"
            )
        if not member.can_pin_messages:
            log.warning("the bot cannot pin messages in %s: cards will not be pinned", where)
        return None

    def _fail(self, problem: str) -> None:
        self.problem, self._problem_at = problem, time.monotonic()
        log.error(
            "hand-over: %s. Tickets are still recorded and customers told a person will get back "
            "to them; topics are created once this is fixed.",
            problem,
        )

    def _forum_usable(self) -> bool:
        if not self.enabled:
            return False
        return self.problem is None or time.monotonic() - self._problem_at >= self.forum_retry

    async def stop(self) -> None:
        """Send what is queued (for a few seconds), finish the follow-ups."""
        await self.sender.close()
        if self._tasks:
            _, late = await asyncio.wait(list(self._tasks), timeout=5.0)
            for task in late:
                task.cancel()

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coroutine)
        delivery.track(task)  # the update that spawned it is done once it is
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    async def _relays_settled(self, ticket_id: int) -> None:
        """Wait for the agents' messages of a ticket still on their way to the customer: they are
        stored once delivered, and a command typed right after one (``/faq``) must see it."""
        pending = self._relaying.get(ticket_id)
        if pending:
            await asyncio.wait(list(pending), timeout=RELAY_SETTLE_SECONDS)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("hand-over follow-up failed", exc_info=task.exception())

    def _lock(self, ticket_id: int) -> asyncio.Lock:
        return self._locks.setdefault(ticket_id, asyncio.Lock())

    # -- the customer's side --------------------------------------------------------------------

    async def open_ticket(self, session: AsyncSession, *, telegram_id: int) -> TicketView | None:
        if not self.enabled:
            return None
        ticket = await self.tickets.open_for(session, telegram_id=telegram_id)
        bind_log_context(ticket_id=ticket.id if ticket else None)
        return ticket

    async def escalate(
        self, session: AsyncSession, *, person: Person, chat_id: int, reason: str
    ) -> Escalation | None:
        """Open (or find) the customer's ticket; its topic follows in the background."""
        if not self.enabled:
            return None
        opened = await self.tickets.open(session, person=person, chat_id=chat_id, reason=reason)
        bind_log_context(ticket_id=opened.ticket.id)
        metrics.escalated(new=opened.is_new)
        now = utcnow()
        opens_at = None
        if self.hours is not None and not self.hours.is_open(now):
            opens_at = self.hours.next_opening(now)
        if opened.ticket.topic_id is None:
            self._spawn(self._ensure_topic(opened.ticket.id))
        return Escalation(opened.ticket, opened.is_new, opened.position, opens_at)

    async def relay_from_customer(
        self,
        session: AsyncSession,
        *,
        ticket: TicketView,
        person: Person,
        message: Message,
        album: Sequence[Message] | None = None,
    ) -> None:
        """Store the customer's message(s) in the ticket and copy them into its topic."""
        parts = list(album or [message])
        rows = [
            await self.tickets.customer_message(
                session,
                ticket_id=ticket.id,
                person=person,
                chat_id=part.chat.id,
                telegram_message_id=part.message_id,
                content_type=kind_of(part),
                text=part.text or part.caption,
            )
            for part in parts
        ]
        thread = await self._ensure_topic(ticket.id)
        if thread is None:
            return  # kept; the card will carry it once the topic exists
        if len(parts) > 1:
            method: TelegramMethod[Any] = CopyMessages(
                chat_id=self.chat_id,
                message_thread_id=thread,
                from_chat_id=message.chat.id,
                message_ids=[part.message_id for part in parts],
            )
            future = self._to_topic(ticket.id, method)
        else:
            reply = await self._counterpart(session, ticket.id, _explicit_reply(message), in_topic=False)
            method = CopyMessage(
                chat_id=self.chat_id,
                message_thread_id=thread,
                from_chat_id=message.chat.id,
                message_id=message.message_id,
                reply_parameters=reply,
            )
            merge = message.html_text if message.text and reply is None else None
            future = self._to_topic(ticket.id, method, merge_html=merge)
        self._spawn(self._customer_relayed(future, rows, ticket.id))

    async def _customer_relayed(self, future: asyncio.Future[Any], rows: list[int], ticket_id: int) -> None:
        try:
            result = await future
        except TelegramBadRequest as exc:
            deleted = "message to copy not found" in exc.message
            log.warning("ticket #%s: a customer message was not copied: %s", ticket_id, exc.message)
            notice = (
                self.texts.customer_deleted
                if deleted
                else self.texts.relay_lost.format(reason=escape(exc.message))
            )
            await self.notice(ticket_id, notice)
            return
        except TelegramAPIError as exc:
            log.error("ticket #%s: a customer message was not copied: %s", ticket_id, exc)
            return
        ids = _ids(result)
        pairs = list(zip(rows, ids, strict=True)) if len(ids) == len(rows) else [(r, ids[-1]) for r in rows]
        async with self.sessions() as session:
            await self.tickets.set_relayed(session, pairs=pairs)

    async def relay_customer_edit(
        self, session: AsyncSession, *, ticket: TicketView, message: Message
    ) -> None:
        """The customer edited a message: agents see the new text, under the old copy."""
        thread = await self._ensure_topic(ticket.id)
        if thread is None:
            return
        copy_id = await self.tickets.counterpart(
            session, ticket_id=ticket.id, message_id=message.message_id, in_topic=False
        )
        notice = self.texts.customer_edited
        text = f"{notice}\n{_edited_text(message, room=LIMIT - len(notice) - 1)}"
        reply = ReplyParameters(message_id=copy_id, allow_sending_without_reply=True) if copy_id else None
        future = self._to_topic(
            ticket.id,
            SendMessage(chat_id=self.chat_id, message_thread_id=thread, text=text, reply_parameters=reply),
        )
        self._spawn(self._logged(future, f"ticket #{ticket.id}: customer edit"))

    async def cancel(self, session: AsyncSession, *, telegram_id: int) -> TicketView | None:
        """The customer hands back to the bot; agents are told and the topic is closed."""
        ticket = await self.tickets.cancel(session, telegram_id=telegram_id)
        if ticket is not None and ticket.topic_id is not None:
            self._spawn(self._ended(ticket, self.texts.agent_cancelled))
        return ticket

    async def rate(self, session: AsyncSession, *, telegram_id: int, ticket_id: int, score: int) -> Rated:
        rated = await self.tickets.rate(session, telegram_id=telegram_id, ticket_id=ticket_id, score=score)
        if rated.change is Change.DONE and rated.ticket is not None and rated.ticket.topic_id:
            self._spawn(self.notice(rated.ticket.id, self.texts.agent_rated.format(score=score)))
            self._spawn(self.refresh_card(rated.ticket.id))
        return rated

    # -- the agents' side -----------------------------------------------------------------------

    async def is_agent(self, bot: Bot, user: User | None) -> bool:
        """Listed in ``telegram.agents``; or, with the list empty, any person in the agents' chat."""
        if user is None or user.is_bot:
            return False
        if self.agents:
            return user.id in self.agents
        known = self._members.get(user.id)
        if known is not None and time.monotonic() - known[1] < MEMBER_TTL:
            return known[0]
        try:
            member = await bot.get_chat_member(self.chat_id, user.id)
        except TelegramAPIError as exc:
            log.warning("cannot check whether user %s is in the agents' chat: %s", user.id, exc)
            return False
        allowed = isinstance(member, ChatMemberOwner | ChatMemberAdministrator | ChatMemberMember)
        self._members[user.id] = (allowed, time.monotonic())
        return allowed

    async def ticket_of_topic(self, session: AsyncSession, *, topic_id: int) -> TicketView | None:
        ticket = await self.tickets.by_topic(session, topic_id=topic_id)
        if ticket is None:
            moved = self._moved.get(topic_id)
            if moved is not None:
                ticket = await self.tickets.by_topic(session, topic_id=moved)
        bind_log_context(ticket_id=ticket.id if ticket else None)
        return ticket

    async def relay_from_agent(
        self,
        session: AsyncSession,
        *,
        ticket: TicketView,
        agent: Agent,
        message: Message,
        album: Sequence[Message] | None = None,
    ) -> None:
        """Copy an agent's message(s) to the customer; a closed ticket keeps them in the topic."""
        parts = list(album or [message])
        if not ticket.is_open:
            for part in parts:
                await self.tickets.internal(
                    session,
                    ticket_id=ticket.id,
                    agent=agent,
                    chat_id=self.chat_id,
                    topic_message_id=part.message_id,
                    text=part.text or part.caption,
                    kind="undelivered",
                )
            self._spawn(self.notice(ticket.id, self.texts.topic_closed, reply_to=message.message_id))
            return
        if len(parts) > 1:
            method: TelegramMethod[Any] = CopyMessages(
                chat_id=ticket.chat_id, from_chat_id=self.chat_id, message_ids=[p.message_id for p in parts]
            )
        else:
            reply = await self._counterpart(session, ticket.id, _explicit_reply(message), in_topic=True)
            method = CopyMessage(
                chat_id=ticket.chat_id,
                from_chat_id=self.chat_id,
                message_id=message.message_id,
                reply_parameters=reply,
            )
        future = self.sender.submit(ticket.chat_id, method)
        pending = self._relaying.setdefault(ticket.id, set())
        task = self._spawn(self._agent_relayed(future, parts, ticket, agent, after=list(pending)))
        pending.add(task)

        def settled(done: asyncio.Task[Any]) -> None:
            pending.discard(done)
            if not pending:
                self._relaying.pop(ticket.id, None)

        task.add_done_callback(settled)

    async def _agent_relayed(
        self,
        future: asyncio.Future[Any],
        parts: list[Message],
        ticket: TicketView,
        agent: Agent,
        *,
        after: list[asyncio.Task[Any]],
    ) -> None:
        """Store an agent's message once delivered, after the ones they sent before it (``after``):
        the conversation's rows keep the order the customer saw."""
        if not await self._delivered(future, ticket, reply_to=parts[0].message_id):
            return
        if after:
            await asyncio.wait(after)
        ids = _ids(await future)
        claimed = False
        async with self.sessions() as session:
            for part, customer_id in zip(parts, ids, strict=False):
                reply = await self.tickets.agent_replied(
                    session,
                    ticket_id=ticket.id,
                    agent=agent,
                    topic_message_id=part.message_id,
                    customer_message_id=customer_id,
                    content_type=kind_of(part),
                    text=part.text or part.caption,
                )
                claimed = claimed or reply.claimed
        if claimed:
            await self.notice(ticket.id, self.texts.first_reply_claimed.format(agent=escape(agent.name)))
            await self.refresh_card(ticket.id)

    async def _delivered(
        self, future: asyncio.Future[Any], ticket: TicketView, *, reply_to: int | None
    ) -> bool:
        """Await a send to the customer; tell the agents when it failed (blocked, gone...)."""
        try:
            await future
        except TelegramForbiddenError:
            log.info("ticket #%s: the customer has blocked the bot", ticket.id)
            await self.notice(ticket.id, self.texts.customer_blocked, reply_to=reply_to)
            return False
        except TelegramAPIError as exc:
            log.warning("ticket #%s: not delivered to the customer: %s", ticket.id, exc)
            reason = escape(getattr(exc, "message", str(exc)))
            await self.notice(ticket.id, self.texts.not_delivered.format(reason=reason), reply_to=reply_to)
            return False
        return True

    async def relay_agent_edit(self, session: AsyncSession, *, ticket: TicketView, message: Message) -> None:
        """An agent edited a message the customer got: edit the customer's copy."""
        found = await self.tickets.agent_message_of(
            session, ticket_id=ticket.id, topic_message_id=message.message_id
        )
        if found is None:
            return
        row_id, customer_message_id = found
        method: TelegramMethod[Any]
        if message.text is not None:
            method = EditMessageText(
                chat_id=ticket.chat_id, message_id=customer_message_id, text=message.html_text
            )
        elif message.caption is not None:
            method = EditMessageCaption(
                chat_id=ticket.chat_id, message_id=customer_message_id, caption=message.html_text
            )
        else:
            return
        future = self.sender.submit(ticket.chat_id, method)
        self._spawn(self._edit_relayed(future, ticket, row_id, message))

    async def _edit_relayed(
        self, future: asyncio.Future[Any], ticket: TicketView, row_id: int, message: Message
    ) -> None:
        try:
            await future
        except TelegramBadRequest as exc:
            if "not modified" in exc.message:
                return
            await self._delivered(future, ticket, reply_to=message.message_id)
            return
        except TelegramAPIError:
            await self._delivered(future, ticket, reply_to=message.message_id)
            return
        async with self.sessions() as session:
            await self.tickets.edited(session, row_id=row_id, text=message.text or message.caption)

    async def note(
        self,
        session: AsyncSession,
        *,
        ticket: TicketView,
        agent: Agent,
        message: Message,
        text: str,
        confirm: bool,
        profile: bool = False,
    ) -> None:
        """Keep an internal note; ``confirm`` answers it in the topic; ``profile`` (``/note``)
        also adds it to the customer's profile notes."""
        if not text.strip():
            self._spawn(self.notice(ticket.id, self.texts.note_usage, reply_to=message.message_id))
            return
        await self.tickets.internal(
            session,
            ticket_id=ticket.id,
            agent=agent,
            chat_id=self.chat_id,
            topic_message_id=message.message_id,
            text=text,
        )
        if profile:
            await note_customer(
                session,
                customer_id=ticket.customer_id,
                text=text,
                author=agent.name,
                actor=f"agent:{agent.telegram_id}",
            )
        if confirm:
            self._spawn(self.notice(ticket.id, self.texts.note_saved, reply_to=message.message_id))

    async def claim(
        self, session: AsyncSession, *, ticket_id: int, thread_id: int | None, agent: Agent
    ) -> str:
        """The card's Claim button; returns the toast for the agent."""
        ticket = await self._checked(session, ticket_id, thread_id)
        if ticket is None:
            return self.texts.wrong_topic
        outcome = await self.tickets.claim(session, ticket_id=ticket.id, agent=agent)
        if outcome.change is Change.ENDED:
            return self.texts.ticket_ended
        if outcome.change is Change.ALREADY:
            return self.texts.claim_already
        if outcome.previous_agent:
            text = self.texts.agent_took_over.format(
                agent=escape(agent.name), previous=escape(outcome.previous_agent)
            )
        else:
            text = self.texts.agent_claimed.format(agent=escape(agent.name))
        self._spawn(self.notice(ticket.id, text))
        self._spawn(self.refresh_card(ticket.id))
        return self.texts.claim_done

    async def close(
        self, session: AsyncSession, *, ticket_id: int, thread_id: int | None, agent: Agent
    ) -> str:
        """``/close`` or the Close button: resolve, ask the customer to rate, close the topic."""
        ticket = await self._checked(session, ticket_id, thread_id)
        if ticket is None:
            return self.texts.wrong_topic
        outcome = await self.tickets.close(session, ticket_id=ticket.id, agent=agent)
        if outcome.change is not Change.DONE or outcome.ticket is None:
            if outcome.change is Change.ALREADY:
                self._spawn(self.notice(ticket.id, self.texts.close_already))
            return self.texts.close_already
        closed = outcome.ticket
        customer_texts = texts_for(closed.language)
        text = customer_texts.ticket_resolved.format(ticket=closed.id)
        future = self.sender.submit(
            closed.chat_id,
            SendMessage(chat_id=closed.chat_id, text=text, reply_markup=keyboards.rating(closed.id)),
        )
        self._spawn(self._told_customer(future, closed, text, "csat_request"))
        notice = self.texts.agent_closed.format(ticket=closed.id, agent=escape(agent.name))
        self._spawn(self._ended(closed, notice))
        return self.texts.ticket_ended

    async def reopen(self, session: AsyncSession, *, ticket: TicketView, agent: Agent) -> None:
        outcome = await self.tickets.reopen(session, ticket_id=ticket.id, agent=agent)
        if outcome.change is Change.ALREADY:
            self._spawn(self.notice(ticket.id, self.texts.reopen_already))
            return
        if outcome.change is Change.BUSY:
            self._spawn(self.notice(ticket.id, self.texts.reopen_busy.format(other=outcome.other_ticket)))
            return
        if outcome.change is not Change.DONE or outcome.ticket is None:
            return
        opened = outcome.ticket
        text = texts_for(opened.language).ticket_reopened.format(ticket=opened.id)
        future = self.sender.submit(opened.chat_id, SendMessage(chat_id=opened.chat_id, text=text))
        self._spawn(self._told_customer(future, opened, text, "reopened"))
        self._spawn(self._reopened(opened, agent))

    async def _reopened(self, ticket: TicketView, agent: Agent) -> None:
        if ticket.topic_id is not None:
            await self._quietly(ReopenForumTopic(chat_id=self.chat_id, message_thread_id=ticket.topic_id))
        await self.notice(
            ticket.id, self.texts.agent_reopened.format(ticket=ticket.id, agent=escape(agent.name))
        )
        await self.refresh_card(ticket.id)

    async def suggest(self, session: AsyncSession, *, ticket: TicketView) -> None:
        """``/suggest``: the best KB answers for the customer's last question, each with Send."""
        question = await self.tickets.question_of(session, ticket_id=ticket.id)
        if not question:
            self._spawn(self.notice(ticket.id, self.texts.no_question))
            return
        shown = await self.helpdesk.candidates(session, text=question, language=ticket.language)
        if not shown:
            self._spawn(self.notice(ticket.id, self.texts.suggest_none.format(question=escape(question))))
            return
        items = [
            self.texts.suggest_item.format(
                n=number,
                title=escape(s.title),
                version=s.version,
                score=f"{s.score:.2f}" if s.score is not None else "–",
                preview=escape(clip(s.answer, PREVIEW_CHARS)),
            )
            for number, s in enumerate(shown, start=1)
        ]
        text = "\n\n".join([self.texts.suggest_header.format(question=escape(clip(question, 200))), *items])
        markup = keyboards.send_answers(self.texts, ticket.id, shown)
        self._spawn(self.notice(ticket.id, text, markup=markup))

    async def send_answer(
        self, session: AsyncSession, *, ticket_id: int, thread_id: int | None, version_id: int, agent: Agent
    ) -> str:
        """A "Send" press under ``/suggest``: the article goes to the customer from the agent."""
        ticket = await self._checked(session, ticket_id, thread_id)
        if ticket is None:
            return self.texts.wrong_topic
        if not ticket.is_open:
            return self.texts.ticket_ended
        shown = await self.helpdesk.article(session, version_id=version_id)
        if shown is None:
            return self.texts.kb_gone
        customer_texts = texts_for(ticket.language)
        footer = f"<i>{escape(customer_texts.source.format(title=shown.title))}</i>"
        futures = [
            self.sender.submit(ticket.chat_id, SendMessage(chat_id=ticket.chat_id, text=part))
            for part in render_answer(shown.answer, footer=footer)
        ]
        self._spawn(self._answer_sent(futures, ticket, agent, shown.version_id, shown.title, shown.version))
        return self.texts.kb_sent_toast

    async def _answer_sent(
        self,
        futures: list[asyncio.Future[Any]],
        ticket: TicketView,
        agent: Agent,
        version_id: int,
        title: str,
        version: int,
    ) -> None:
        last = None
        for future in futures:
            if not await self._delivered(future, ticket, reply_to=None):
                return
            last = (await future).message_id
        assert last is not None
        async with self.sessions() as session:
            answer = await self.helpdesk.article(session, version_id=version_id)
            reply = await self.tickets.agent_replied(
                session,
                ticket_id=ticket.id,
                agent=agent,
                topic_message_id=None,
                customer_message_id=last,
                content_type="text",
                text=answer.answer if answer else title,
                version_id=version_id,
            )
        await self.notice(
            ticket.id,
            self.texts.kb_sent.format(agent=escape(agent.name), title=escape(title), version=version),
        )
        if reply.claimed:
            await self.refresh_card(ticket.id)

    async def faq(
        self, session: AsyncSession, *, ticket: TicketView, agent: Agent, answer: str | None
    ) -> None:
        """``/faq [ANSWER]``: the customer's question and the agent's answer, for the editors."""
        if not answer:
            await self._relays_settled(ticket.id)  # "the agent's last answer" may be on its way
        suggestion = await self.tickets.suggest_faq(session, ticket_id=ticket.id, agent=agent, answer=answer)
        if suggestion is None:
            self._spawn(self.notice(ticket.id, self.texts.faq_nothing))
            return
        text = self.texts.faq_saved.format(
            id=suggestion.id,
            question=escape(clip(suggestion.question, 300)),
            answer=escape(clip(suggestion.answer, 600)),
        )
        self._spawn(self.notice(ticket.id, text))
        if self.on_suggestion is not None:
            self.on_suggestion()

    async def profile(self, session: AsyncSession, *, ticket: TicketView, agent: Agent) -> None:
        """``/profile``: the customer's profile and history, in the topic (and in the audit log)."""
        profile = await customer_profile(self.sessions, ticket.customer_id)
        if profile is None:
            self._spawn(self.notice(ticket.id, self.texts.profile_gone))
            return
        await record(
            session,
            actor=f"agent:{agent.telegram_id}",
            action="profile_viewed",
            customer_id=ticket.customer_id,
        )
        html = profile_html(profile, profile_summary(profile), self.texts, zone=self.zone)
        self._spawn(self.notice(ticket.id, html))

    async def tag(self, session: AsyncSession, *, ticket: TicketView, agent: Agent, args: str | None) -> None:
        """``/tag TAG... | -TAG``: tags on the customer's profile; the card shows them."""
        add, remove = clean_tags((args or "").split())
        if not add and not remove:
            self._spawn(self.notice(ticket.id, self.texts.tag_usage))
            return
        tags = await tag_customer(
            session,
            customer_id=ticket.customer_id,
            add=add,
            remove=remove,
            actor=f"agent:{agent.telegram_id}",
        )
        if tags is None:
            self._spawn(self.notice(ticket.id, self.texts.profile_gone))
            return
        shown = escape(", ".join(tags)) if tags else self.texts.tag_none
        self._spawn(self.notice(ticket.id, self.texts.tag_done.format(tags=shown)))
        self._spawn(self.refresh_card(ticket.id))

    async def stats(self, message: Message) -> None:
        """``/stats`` anywhere in the agents' chat: the service figures, short."""
        reports = [await service_report(self.sessions, since_days=days) for days in STATS_PERIODS]
        await self.hint(message, stats_html(reports, self.texts), always=True)

    async def forget(self, session: AsyncSession, *, telegram_id: int) -> Erased | None:
        """A customer's ``/forget``: erase their data; their topics are told, closed and blanked."""
        erased = await forget_customer(session, telegram_id=telegram_id)
        delivery.erased(telegram_id)  # what is still said to them now is not journaled
        if erased is None:
            return None
        self.helpdesk.kb.forget_questions()  # their questions, cached by text in this process
        if erased.kb_changed:
            self._spawn(self.helpdesk.kb.sync(self.sessions))
        if self.enabled:
            for ref in erased.topics:
                self._spawn(
                    self._erased_topic(ref.ticket_id, ref.topic_id, ref.card_message_id, ref.was_open)
                )
        return erased

    async def _erased_topic(
        self, ticket_id: int, topic_id: int, card_message_id: int | None, was_open: bool
    ) -> None:
        calls: list[TelegramMethod[Any]] = []
        if was_open:
            calls.append(
                SendMessage(
                    chat_id=self.chat_id,
                    message_thread_id=topic_id,
                    text=self.texts.customer_erased.format(ticket=ticket_id),
                )
            )
        if card_message_id is not None:
            calls.append(
                EditMessageText(
                    chat_id=self.chat_id,
                    message_id=card_message_id,
                    text=self.texts.card_erased.format(ticket=ticket_id),
                )
            )
        calls.append(
            EditForumTopic(
                chat_id=self.chat_id,
                message_thread_id=topic_id,
                name=self.texts.topic_erased.format(ticket=ticket_id),
            )
        )
        if was_open:
            calls.append(CloseForumTopic(chat_id=self.chat_id, message_thread_id=topic_id))
        for method in calls:
            try:
                await self._to_topic(ticket_id, method)
            except TelegramAPIError as exc:
                log.info("ticket #%s (erased): %s: %s", ticket_id, type(method).__name__, exc)

    async def hint(self, message: Message, text: str, *, always: bool = False) -> None:
        """A short answer in the agents' chat (General or a topic), at most every few minutes per
        person unless ``always``."""
        thread = message.message_thread_id if message.is_topic_message else None
        key = (message.from_user.id if message.from_user else 0, thread)
        now = time.monotonic()
        if not always and now - self._hinted.get(key, -HINT_EVERY) < HINT_EVERY:
            return
        self._hinted[key] = now
        method = SendMessage(
            chat_id=self.chat_id,
            message_thread_id=thread,
            text=text,
            reply_parameters=ReplyParameters(message_id=message.message_id, allow_sending_without_reply=True),
        )
        self._spawn(self._logged(self.sender.submit(self.chat_id, method), "hint"))

    # -- topics and the card --------------------------------------------------------------------

    async def _ensure_topic(self, ticket_id: int) -> int | None:
        """The ticket's topic; created (with the card) when it has none and the forum works."""
        async with self._lock(ticket_id):
            async with self.sessions() as session:
                ticket = await self.tickets.get(session, ticket_id=ticket_id)
            if ticket is None:
                return None
            if ticket.topic_id is not None:
                return ticket.topic_id
            if not self._forum_usable():
                return None
            # Created late (the forum was down): the card carries what the customer said since.
            late = await self._has_messages(ticket.id)
            return await self._open_topic(ticket, direct=False, full=late)

    async def _open_topic(self, ticket: TicketView, *, direct: bool, full: bool) -> int | None:
        """Create the topic, post and pin the card, attach the transcript when it is long.

        ``direct``: bypass the sender's queue (when the sender itself asks, to repair a call);
        ``full``: a recreated topic: the card and the file carry everything up to now.
        """

        async def call(method: TelegramMethod[Any]) -> Any:
            if direct:
                assert self._bot is not None
                return await self._bot(method)
            return await self.sender.send(self.chat_id, method)

        try:
            topic = await call(CreateForumTopic(chat_id=self.chat_id, name=topic_name(ticket)))
        except TelegramAPIError as exc:
            self._fail(f"cannot create a topic in the agents' chat {self.chat_id}: {exc.message}")
            return None
        if self.problem is not None:
            log.info("hand-over: the agents' forum works again")
        self.problem = None
        thread = topic.message_thread_id
        async with self.sessions() as session:
            await self.tickets.set_topic(session, ticket_id=ticket.id, topic_id=thread, card_message_id=None)
            card = await self.tickets.card(
                session, ticket_id=ticket.id, until=None if full else ticket.opened_at
            )
            whole = await self.tickets.card(session, ticket_id=ticket.id)
        html, attach = card_html(card, self.texts, zone=self.zone)
        try:
            sent = await call(
                SendMessage(
                    chat_id=self.chat_id,
                    message_thread_id=thread,
                    text=html,
                    reply_markup=keyboards.card(self.texts, ticket.id, open_=card.ticket.is_open),
                )
            )
        except TelegramAPIError as exc:
            log.error("ticket #%s: the card could not be posted: %s", ticket.id, exc)
            return thread
        async with self.sessions() as session:
            await self.tickets.set_topic(
                session, ticket_id=ticket.id, topic_id=thread, card_message_id=sent.message_id
            )
        with contextlib.suppress(TelegramAPIError):
            await call(
                PinChatMessage(chat_id=self.chat_id, message_id=sent.message_id, disable_notification=True)
            )
        if attach or full:
            document = BufferedInputFile(
                transcript_text(whole, self.texts, zone=self.zone).encode("utf-8"),
                filename=f"ticket-{ticket.id}-transcript.txt",
            )
            caption = self.texts.transcript_caption.format(ticket=ticket.id, count=len(whole.lines))
            try:
                await call(
                    SendDocument(
                        chat_id=self.chat_id, message_thread_id=thread, document=document, caption=caption
                    )
                )
            except TelegramAPIError as exc:
                log.warning("ticket #%s: the transcript could not be attached: %s", ticket.id, exc)
        log.info("ticket #%s: topic %s in the agents' chat", ticket.id, thread)
        return thread

    async def _repair(
        self, chat_id: int, method: TelegramMethod[Any], error: TelegramBadRequest
    ) -> TelegramMethod[Any] | None:
        """The sender's hook: a call into a deleted topic goes to its replacement (made now)."""
        thread = getattr(method, "message_thread_id", None)
        if chat_id != self.chat_id or not thread or "thread not found" not in error.message.lower():
            return None
        replacement = self._moved.get(thread)
        if replacement is None:
            async with self.sessions() as session:
                ticket = await self.tickets.by_topic(session, topic_id=thread)
            if ticket is None:
                return None
            log.warning("ticket #%s: its topic %s was deleted; recreating it", ticket.id, thread)
            replacement = await self._open_topic(ticket, direct=True, full=True)
            if replacement is None:
                return None
            self._moved[thread] = replacement
        return method.model_copy(update={"message_thread_id": replacement})

    async def refresh_card(self, ticket_id: int) -> None:
        """Edit the pinned card to the ticket's state (who has it, resolved, the rating)."""
        async with self.sessions() as session:
            ticket = await self.tickets.get(session, ticket_id=ticket_id)
            if ticket is None or ticket.card_message_id is None:
                return
            card = await self.tickets.card(session, ticket_id=ticket_id, until=ticket.opened_at)
        html, _ = card_html(card, self.texts, zone=self.zone)
        method = EditMessageText(
            chat_id=self.chat_id,
            message_id=ticket.card_message_id,
            text=html,
            reply_markup=keyboards.card(self.texts, ticket.id, open_=ticket.is_open),
        )
        try:
            await self._to_topic(ticket.id, method)
        except TelegramBadRequest as exc:
            if "not modified" not in exc.message:
                log.warning("ticket #%s: the card was not updated: %s", ticket_id, exc.message)
        except TelegramAPIError as exc:
            log.warning("ticket #%s: the card was not updated: %s", ticket_id, exc)

    async def notice(
        self,
        ticket_id: int,
        text: str,
        *,
        reply_to: int | None = None,
        markup: InlineKeyboardMarkup | None = None,
    ) -> int | None:
        """Post a line from the bot into the ticket's topic (queued in order with the relays)."""
        thread = await self._ensure_topic(ticket_id)
        if thread is None:
            return None
        reply = ReplyParameters(message_id=reply_to, allow_sending_without_reply=True) if reply_to else None
        method = SendMessage(
            chat_id=self.chat_id,
            message_thread_id=thread,
            text=text,
            reply_markup=markup,
            reply_parameters=reply,
        )
        try:
            sent = await self._to_topic(ticket_id, method)
        except TelegramAPIError as exc:
            log.warning("ticket #%s: a notice was not posted: %s", ticket_id, exc)
            return None
        return sent.message_id

    async def _ended(self, ticket: TicketView, text: str) -> None:
        await self.notice(ticket.id, text)
        await self.refresh_card(ticket.id)
        if ticket.topic_id is not None:
            await self._quietly(CloseForumTopic(chat_id=self.chat_id, message_thread_id=ticket.topic_id))

    async def _told_customer(
        self, future: asyncio.Future[Any], ticket: TicketView, text: str, kind: str
    ) -> None:
        if not await self._delivered(future, ticket, reply_to=None):
            return
        async with self.sessions() as session:
            await self.tickets.bot_said(
                session,
                ticket_id=ticket.id,
                text=text,
                decision=kind,
                telegram_message_id=(await future).message_id,
            )

    # -- small helpers --------------------------------------------------------------------------

    def _to_topic(
        self, ticket_id: int, method: TelegramMethod[Any], *, merge_html: str | None = None
    ) -> asyncio.Future[Any]:
        """Queue a call into the ticket's topic; one merge key per ticket keeps them in order."""
        return self.sender.submit(
            self.chat_id, method, merge_key=("ticket", ticket_id), merge_html=merge_html
        )

    async def _has_messages(self, ticket_id: int) -> bool:
        async with self.sessions() as session:
            return await self.tickets.customer_messages(session, ticket_id=ticket_id) > 0

    async def _counterpart(
        self, session: AsyncSession, ticket_id: int, message_id: int | None, *, in_topic: bool
    ) -> ReplyParameters | None:
        if message_id is None:
            return None
        target = await self.tickets.counterpart(
            session, ticket_id=ticket_id, message_id=message_id, in_topic=in_topic
        )
        return ReplyParameters(message_id=target, allow_sending_without_reply=True) if target else None

    async def _checked(
        self, session: AsyncSession, ticket_id: int, thread_id: int | None
    ) -> TicketView | None:
        """The ticket a button names, only when the button was pressed in that ticket's topic."""
        ticket = await self.tickets.get(session, ticket_id=ticket_id)
        if ticket is None or thread_id is None:
            return None
        if ticket.topic_id != thread_id and self._moved.get(thread_id) != ticket.topic_id:
            log.warning("a button for ticket #%s was pressed in topic %s: refused", ticket_id, thread_id)
            return None
        return ticket

    async def _quietly(self, method: TelegramMethod[Any]) -> None:
        try:
            await self.sender.send(self.chat_id, method)
        except TelegramAPIError as exc:
            log.info("%s: %s", type(method).__name__, exc)

    async def _logged(self, future: asyncio.Future[Any], what: str) -> None:
        try:
            await future
        except TelegramAPIError as exc:
            log.warning("%s: %s", what, exc)


def _edited_text(message: Message, *, room: int) -> str:
    """The edited message as HTML; cut (plain, with "…") when it would not fit in ``room``
    characters, as a 4096-character edit under the notice line would not."""
    plain = message.text or message.caption or ""
    if len(plain) <= room:
        return message.html_text
    return escape(plain[: room - 1] + "…")
