"""Sending what the services decided: rendering, keyboards, splitting, and recording ids."""

from __future__ import annotations

from aiogram import Bot
from aiogram.types import InlineKeyboardMarkup, User
from sqlalchemy.ext.asyncio import AsyncSession

from bot import keyboards
from bot.render import escape, render_answer
from bot.texts import Texts
from kb.conversations import Helpdesk, HumanOffer, Person, Reply
from kb.decision import Action


def person_of(user: User) -> Person:
    return Person(
        telegram_id=user.id,
        first_name=user.first_name,
        last_name=user.last_name,
        username=user.username,
        language_code=user.language_code,
    )


async def send_reply(
    bot: Bot, session: AsyncSession, helpdesk: Helpdesk, *, chat_id: int, reply: Reply, texts: Texts
) -> None:
    """Send an answer, the "did you mean" list, or the honest "no answer": with a person button
    when agents are there, as an offer the customer confirms after repeated misses."""
    markup: InlineKeyboardMarkup | None
    if reply.action is Action.ANSWER and reply.article is not None:
        footer = f"<i>{escape(texts.source.format(title=reply.article.title))}</i>"
        parts = render_answer(reply.article.answer, footer=footer)
        markup = keyboards.feedback(texts, reply.message_id)
    elif reply.action is Action.SUGGEST:
        parts = [texts.did_you_mean]
        markup = keyboards.suggestions(texts, reply.suggestions, human=reply.human is not HumanOffer.NONE)
    elif reply.human is HumanOffer.OFFER:
        parts = [texts.offer_human]
        markup = keyboards.ask_human(texts, "unanswered", label=texts.button_connect)
    elif reply.human is HumanOffer.BUTTON:
        parts = [texts.no_answer]
        markup = keyboards.ask_human(texts, "no_answer")
    else:
        parts = [texts.no_answer_alone]
        markup = None
    last_id = await _send_parts(bot, chat_id, parts, markup)
    await helpdesk.mark_sent(session, message_id=reply.message_id, telegram_message_id=last_id)


async def say(
    bot: Bot,
    session: AsyncSession,
    helpdesk: Helpdesk,
    *,
    person: Person,
    chat_id: int,
    text: str,
    markup: InlineKeyboardMarkup | None = None,
    kind: str | None = None,
) -> None:
    """Send (and record) a message that is not an answer from the KB."""
    row_id = await helpdesk.note_outgoing(session, person=person, chat_id=chat_id, text=text, decision=kind)
    sent_id = await _send_parts(bot, chat_id, [text], markup)
    await helpdesk.mark_sent(session, message_id=row_id, telegram_message_id=sent_id)


async def _send_parts(bot: Bot, chat_id: int, parts: list[str], markup: InlineKeyboardMarkup | None) -> int:
    message_id = 0
    for number, text in enumerate(parts, start=1):
        sent = await bot.send_message(chat_id, text, reply_markup=markup if number == len(parts) else None)
        message_id = sent.message_id
    return message_id
