"""The customer's private chat with the bot: commands, questions, buttons, everything else."""

from __future__ import annotations

import logging
import re

from aiogram import Bot, F, Router
from aiogram.enums import ChatType, ContentType
from aiogram.filters import Command, CommandStart
from aiogram.types import CallbackQuery, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot import keyboards
from bot.keyboards import ArticleCb, FeedbackCb, HumanCb
from bot.render import escape
from bot.replies import person_of, say, send_reply
from bot.texts import Texts
from kb.conversations import FeedbackOutcome, Helpdesk, Person

log = logging.getLogger(__name__)

_MEANINGFUL = re.compile(r"\w")
EXAMPLE_QUESTION = "How do I reset my password?"


def build_router() -> Router:
    router = Router(name="customer")
    router.message.filter(F.chat.type == ChatType.PRIVATE, F.from_user)
    router.callback_query.filter(F.message.chat.type == ChatType.PRIVATE)

    router.message.register(on_start, CommandStart())
    router.message.register(on_help, Command("help"))
    router.message.register(on_human, Command("human"))
    router.message.register(on_unknown_command, F.text.startswith("/"))
    router.message.register(on_question, F.text)
    router.message.register(on_other)
    router.callback_query.register(on_feedback, FeedbackCb.filter())
    router.callback_query.register(on_article, ArticleCb.filter())
    router.callback_query.register(on_human_button, HumanCb.filter())
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


async def on_other(
    message: Message, bot: Bot, session: AsyncSession, helpdesk: Helpdesk, texts: Texts
) -> None:
    """Stickers, photos, voice and the rest: stored, and answered with a short polite note."""
    person = await _record(
        message, session, helpdesk, content_type=ContentType(message.content_type).value, text=message.caption
    )
    await say(bot, session, helpdesk, person=person, chat_id=message.chat.id, text=texts.not_text)


async def on_human(
    message: Message, bot: Bot, session: AsyncSession, helpdesk: Helpdesk, texts: Texts
) -> None:
    person = await _record(message, session, helpdesk, content_type="command", text=message.text)
    await _hand_over(bot, session, helpdesk, texts, person=person, chat_id=message.chat.id, reason="command")


async def on_human_button(
    query: CallbackQuery,
    callback_data: HumanCb,
    bot: Bot,
    session: AsyncSession,
    helpdesk: Helpdesk,
    texts: Texts,
) -> None:
    await query.answer()
    person = person_of(query.from_user)
    await _hand_over(
        bot,
        session,
        helpdesk,
        texts,
        person=person,
        chat_id=query.message.chat.id,
        reason=callback_data.reason,
    )


async def _hand_over(
    bot: Bot,
    session: AsyncSession,
    helpdesk: Helpdesk,
    texts: Texts,
    *,
    person: Person,
    chat_id: int,
    reason: str,
) -> None:
    ticket, is_new = await helpdesk.request_human(session, person=person, chat_id=chat_id, reason=reason)
    template = texts.human_requested if is_new else texts.human_already
    await say(bot, session, helpdesk, person=person, chat_id=chat_id, text=template.format(ticket=ticket))


async def on_feedback(
    query: CallbackQuery, callback_data: FeedbackCb, session: AsyncSession, helpdesk: Helpdesk, texts: Texts
) -> None:
    outcome = await helpdesk.feedback(
        session,
        person=person_of(query.from_user),
        message_id=callback_data.message,
        helpful=callback_data.helpful,
    )
    if outcome == FeedbackOutcome.UNKNOWN:
        await query.answer(texts.feedback_unknown)
        return
    if outcome == FeedbackOutcome.ALREADY:
        await query.answer(texts.feedback_already)
        return
    if callback_data.helpful:
        await query.answer(texts.thanks_feedback)
        await query.message.edit_reply_markup(reply_markup=None)
    else:
        await query.answer(texts.sorry_feedback, show_alert=False)
        await query.message.edit_reply_markup(reply_markup=keyboards.ask_human(texts, "not_helpful"))


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
