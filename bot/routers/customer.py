"""The customer's private chat with the bot: commands, questions, buttons, everything else.

Two routers, tried in order: while the customer has an open ticket (``with agents``) their
messages go to the agents' topic and the bot does not answer from the KB; otherwise (``with the
bot``) questions are answered from the KB. ``/human`` and the "ask a person" buttons escalate,
``/cancel`` hands back to the bot, the 1-5 buttons after a resolved ticket store the rating.

Presses are checked on the server (see :mod:`bot.routers`): "Helped" / "Didn't help" only for
the presser's own stored answer, a rating only for the presser's own ticket, a "did you mean"
article only when it is a button of the message it was pressed on, "ask a person" only with the
reasons the keyboards produce. Anything else (forged, stale, another router's button pressed in
a private chat) is refused with a short toast by the last router, and changes nothing.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from aiogram import Bot, F, Router
from aiogram.enums import ChatType, ContentType
from aiogram.filters import Command, CommandStart, Filter
from aiogram.types import CallbackQuery, Message, TelegramObject, User
from sqlalchemy.ext.asyncio import AsyncSession

from bot import keyboards, metrics
from bot.handover import Desk, acknowledgement
from bot.keyboards import HUMAN_REASONS, ArticleCb, CsatCb, FeedbackCb, HumanCb
from bot.render import escape
from bot.replies import person_of, say, send_reply
from bot.routers.guards import Offered, refuse_press
from bot.texts import Texts
from kb.conversations import FeedbackOutcome, Helpdesk, HumanOffer, Person
from kb.tickets import Change, TicketView

log = logging.getLogger(__name__)

_MEANINGFUL = re.compile(r"\w")
EXAMPLE_QUESTION = "How do I reset my password?"


class WithAgents(Filter):
    """The customer has an open ticket; the handler gets it as ``ticket``."""

    async def __call__(
        self, event: TelegramObject, session: AsyncSession, desk: Desk, event_from_user: User | None = None
    ) -> bool | dict[str, Any]:
        if event_from_user is None or not desk.enabled:
            return False
        ticket = await desk.open_ticket(session, telegram_id=event_from_user.id)
        return {"ticket": ticket} if ticket is not None else False


def likely_question(message: Message) -> bool:
    """Whether ``message`` will likely reach :func:`on_question`, told from the message alone
    (before routing; a customer with an open ticket is relayed instead)."""
    text = message.text
    sender = message.from_user
    return (
        message.chat.type == ChatType.PRIVATE
        and sender is not None
        and not sender.is_bot
        and bool(text)
        and not text.startswith("/")
        and _MEANINGFUL.search(text) is not None
    )


def build_router() -> Router:
    router = Router(name="customer")
    router.message.filter(F.chat.type == ChatType.PRIVATE, F.from_user)
    router.edited_message.filter(F.chat.type == ChatType.PRIVATE, F.from_user)
    router.callback_query.filter(F.message.chat.type == ChatType.PRIVATE)
    router.include_router(_with_agents())
    router.include_router(_with_the_bot())
    refusals = Router(name="customer-refused-presses")
    refusals.callback_query.register(refuse_press)  # last: whatever no handler above accepted
    router.include_router(refusals)
    return router


def _with_agents() -> Router:
    router = Router(name="customer-with-agents")
    for observer in (router.message, router.edited_message, router.callback_query):
        observer.filter(WithAgents())
    router.message.register(on_cancel, Command("cancel"))
    router.message.register(on_human, Command("human"))
    router.message.register(on_help_with_agents, CommandStart())
    router.message.register(on_help_with_agents, Command("help"))
    router.message.register(on_relay)
    router.edited_message.register(on_edit_relay)
    router.callback_query.register(on_article_with_agents, ArticleCb.filter(), Offered())
    router.callback_query.register(on_human_button, HumanCb.filter(F.reason.in_(HUMAN_REASONS)))
    return router


def _with_the_bot() -> Router:
    router = Router(name="customer-with-the-bot")
    router.message.register(on_start, CommandStart())
    router.message.register(on_help, Command("help"))
    router.message.register(on_human, Command("human"))
    router.message.register(on_cancel, Command("cancel"))
    router.message.register(on_unknown_command, F.text.startswith("/"))
    router.message.register(on_question, F.text)
    router.message.register(on_other)
    router.callback_query.register(on_feedback, FeedbackCb.filter())
    router.callback_query.register(on_article, ArticleCb.filter(), Offered())
    router.callback_query.register(on_human_button, HumanCb.filter(F.reason.in_(HUMAN_REASONS)))
    router.callback_query.register(on_rating, CsatCb.filter())
    return router


async def _record(
    message: Message, session: AsyncSession, helpdesk: Helpdesk, *, content_type: str, text: str | None
) -> Person:
    """Store a customer message that is not searched for; returns who sent it."""
    person = person_of(message.from_user)
    await helpdesk.note_incoming(
        session,
        person=person,
        chat_id=message.chat.id,
        telegram_message_id=message.message_id,
        content_type=content_type,
        text=text,
    )
    return person


# -- with the bot ------------------------------------------------------------------------------


async def on_start(
    message: Message, bot: Bot, session: AsyncSession, helpdesk: Helpdesk, texts: Texts
) -> None:
    person = await _record(message, session, helpdesk, content_type="command", text=message.text)
    text = texts.start.format(name=escape(person.first_name), example=escape(EXAMPLE_QUESTION))
    await say(bot, session, helpdesk, person=person, chat_id=message.chat.id, text=text, kind="start")


async def on_help(
    message: Message, bot: Bot, session: AsyncSession, helpdesk: Helpdesk, texts: Texts
) -> None:
    person = await _record(message, session, helpdesk, content_type="command", text=message.text)
    await say(bot, session, helpdesk, person=person, chat_id=message.chat.id, text=texts.help, kind="help")


on_unknown_command = on_help


async def on_question(
    message: Message, bot: Bot, session: AsyncSession, helpdesk: Helpdesk, texts: Texts
) -> None:
    text = message.text or ""
    if not _MEANINGFUL.search(text):
        person = await _record(message, session, helpdesk, content_type="text", text=text)
        await say(bot, session, helpdesk, person=person, chat_id=message.chat.id, text=texts.empty_question)
        return
    reply = await helpdesk.ask(
        session,
        person=person_of(message.from_user),
        chat_id=message.chat.id,
        telegram_message_id=message.message_id,
        text=text,
    )
    await send_reply(bot, session, helpdesk, chat_id=message.chat.id, reply=reply, texts=texts)
    metrics.answered(reply.action)


async def on_other(
    message: Message,
    bot: Bot,
    session: AsyncSession,
    helpdesk: Helpdesk,
    texts: Texts,
    album: list[Message] | None = None,
) -> None:
    """Stickers, photos, voice and the rest: stored, and answered with a short polite note."""
    person = await _record(
        message, session, helpdesk, content_type=ContentType(message.content_type).value, text=message.caption
    )
    await say(bot, session, helpdesk, person=person, chat_id=message.chat.id, text=texts.not_text)


async def on_feedback(
    query: CallbackQuery,
    callback_data: FeedbackCb,
    bot: Bot,
    session: AsyncSession,
    helpdesk: Helpdesk,
    texts: Texts,
) -> None:
    person = person_of(query.from_user)
    result = await helpdesk.feedback(
        session, person=person, message_id=callback_data.message, helpful=callback_data.helpful
    )
    if result.outcome == FeedbackOutcome.UNKNOWN:
        await query.answer(texts.feedback_unknown)
        return
    if result.outcome == FeedbackOutcome.ALREADY:
        await query.answer(texts.feedback_already)
        return
    if callback_data.helpful:
        await query.answer(texts.thanks_feedback)
        await query.message.edit_reply_markup(reply_markup=None)
        return
    await query.answer(texts.sorry_feedback, show_alert=False)
    if result.human is HumanOffer.BUTTON:
        await query.message.edit_reply_markup(reply_markup=keyboards.ask_human(texts, "not_helpful"))
        return
    await query.message.edit_reply_markup(reply_markup=None)
    if result.human is HumanOffer.OFFER:
        markup = keyboards.ask_human(texts, "unanswered", label=texts.button_connect)
        await say(
            bot,
            session,
            helpdesk,
            person=person,
            chat_id=query.message.chat.id,
            text=texts.offer_after_feedback,
            markup=markup,
            kind="offer",
        )


async def on_article(
    query: CallbackQuery,
    callback_data: ArticleCb,
    bot: Bot,
    session: AsyncSession,
    helpdesk: Helpdesk,
    texts: Texts,
) -> None:
    person = person_of(query.from_user)
    reply = await helpdesk.show(
        session, person=person, chat_id=query.message.chat.id, version_id=callback_data.version
    )
    await query.answer()
    if reply is None:
        await say(
            bot, session, helpdesk, person=person, chat_id=query.message.chat.id, text=texts.article_gone
        )
        return
    await send_reply(bot, session, helpdesk, chat_id=query.message.chat.id, reply=reply, texts=texts)


async def on_rating(
    query: CallbackQuery, callback_data: CsatCb, session: AsyncSession, desk: Desk, texts: Texts
) -> None:
    rated = await desk.rate(
        session, telegram_id=query.from_user.id, ticket_id=callback_data.ticket, score=callback_data.score
    )
    if rated.change is Change.ALREADY:
        await query.answer(texts.csat_already)
        return
    if rated.change is not Change.DONE:
        await query.answer(texts.csat_unknown)
        return
    thanks = texts.csat_thanks.format(score=rated.score)
    await query.answer(thanks)
    closing = texts.ticket_resolved.format(ticket=callback_data.ticket)
    await query.message.edit_text(f"{closing}\n\n<b>{thanks}</b>", reply_markup=None)


# -- asking for a person, either way -------------------------------------------------------------


async def on_human(
    message: Message, bot: Bot, session: AsyncSession, helpdesk: Helpdesk, desk: Desk, texts: Texts
) -> None:
    person = await _record(message, session, helpdesk, content_type="command", text=message.text)
    await _hand_over(
        bot, session, helpdesk, desk, texts, person=person, chat_id=message.chat.id, reason="command"
    )


async def on_human_button(
    query: CallbackQuery,
    callback_data: HumanCb,
    bot: Bot,
    session: AsyncSession,
    helpdesk: Helpdesk,
    desk: Desk,
    texts: Texts,
) -> None:
    await query.answer()
    await _hand_over(
        bot,
        session,
        helpdesk,
        desk,
        texts,
        person=person_of(query.from_user),
        chat_id=query.message.chat.id,
        reason=callback_data.reason,
    )


async def _hand_over(
    bot: Bot,
    session: AsyncSession,
    helpdesk: Helpdesk,
    desk: Desk,
    texts: Texts,
    *,
    person: Person,
    chat_id: int,
    reason: str,
) -> None:
    escalation = await desk.escalate(session, person=person, chat_id=chat_id, reason=reason)
    text = acknowledgement(escalation, texts)
    await say(bot, session, helpdesk, person=person, chat_id=chat_id, text=text, kind="handover")


async def on_cancel(
    message: Message, bot: Bot, session: AsyncSession, helpdesk: Helpdesk, desk: Desk, texts: Texts
) -> None:
    person = await _record(message, session, helpdesk, content_type="command", text=message.text)
    ticket = await desk.cancel(session, telegram_id=person.telegram_id)
    text = texts.cancelled.format(ticket=ticket.id) if ticket else texts.nothing_to_cancel
    await say(bot, session, helpdesk, person=person, chat_id=message.chat.id, text=text, kind="cancel")


# -- with agents ---------------------------------------------------------------------------------


async def on_help_with_agents(
    message: Message, bot: Bot, session: AsyncSession, helpdesk: Helpdesk, texts: Texts, ticket: TicketView
) -> None:
    person = await _record(message, session, helpdesk, content_type="command", text=message.text)
    text = texts.with_agent_help.format(ticket=ticket.id)
    await say(bot, session, helpdesk, person=person, chat_id=message.chat.id, text=text, kind="help")


async def on_relay(
    message: Message,
    session: AsyncSession,
    desk: Desk,
    ticket: TicketView,
    album: list[Message] | None = None,
) -> None:
    await desk.relay_from_customer(
        session, ticket=ticket, person=person_of(message.from_user), message=message, album=album
    )


async def on_edit_relay(message: Message, session: AsyncSession, desk: Desk, ticket: TicketView) -> None:
    await desk.relay_customer_edit(session, ticket=ticket, message=message)


async def on_article_with_agents(query: CallbackQuery, texts: Texts) -> None:
    await query.answer(texts.with_agent_toast, show_alert=True)
