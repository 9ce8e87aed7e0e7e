"""The agents' forum supergroup: ticket topics, the card's buttons, agent commands.

Everything here is scoped to ``telegram.agents_chat_id``. In a ticket's topic an agent's message
goes to the customer, except commands and notes (``/note TEXT``, or text starting with ``//``);
``/close``, ``/reopen``, ``/suggest``, ``/faq`` act on the topic's ticket; ``/profile`` shows the
customer's profile, ``/tag`` tags it, ``/note`` also lands on it; ``/stats`` works anywhere. Only agents (per
``telegram.agents``, or any member when the list is empty) are relayed, may use the commands and
press buttons; anyone else is told so. Messages in General reach nobody, and their authors are told so.

Presses are checked on the server: Claim and Close act only on the ticket of the topic they are
pressed in (:meth:`bot.handover.Desk.claim`), "Send" only with an article that the ``/suggest``
message it was pressed on offers (:class:`~bot.routers.guards.Offered`); any other press here
is refused with a toast.
"""

from __future__ import annotations

import logging
from typing import Any

from aiogram import Bot, F, Router
from aiogram.enums import ContentType
from aiogram.filters import Command, CommandObject, Filter
from aiogram.types import CallbackQuery, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot.forum import clip
from bot.handover import Desk, agent_of
from bot.keyboards import SendAnswerCb, TicketCb
from bot.routers.guards import Offered, refuse_press
from kb.tickets import TicketView

log = logging.getLogger(__name__)

SERVICE = {
    ContentType.FORUM_TOPIC_CREATED, ContentType.FORUM_TOPIC_EDITED, ContentType.FORUM_TOPIC_CLOSED,
    ContentType.FORUM_TOPIC_REOPENED, ContentType.GENERAL_FORUM_TOPIC_HIDDEN,
    ContentType.GENERAL_FORUM_TOPIC_UNHIDDEN, ContentType.PINNED_MESSAGE, ContentType.NEW_CHAT_MEMBERS,
    ContentType.LEFT_CHAT_MEMBER, ContentType.NEW_CHAT_TITLE, ContentType.NEW_CHAT_PHOTO,
    ContentType.DELETE_CHAT_PHOTO,
}  # fmt: skip


class IsAgent(Filter):
    """The sender (or presser) may act for the help desk."""

    async def __call__(self, event: Message | CallbackQuery, bot: Bot, desk: Desk) -> bool:
        return await desk.is_agent(bot, event.from_user)


class InTicketTopic(Filter):
    """The message is in a ticket's topic; the handler gets the ticket as ``ticket``."""

    async def __call__(self, message: Message, session: AsyncSession, desk: Desk) -> bool | dict[str, Any]:
        if not message.is_topic_message or message.message_thread_id is None:
            return False
        ticket = await desk.ticket_of_topic(session, topic_id=message.message_thread_id)
        return {"ticket": ticket} if ticket is not None else False


def build_router(agents_chat_id: int) -> Router:
    router = Router(name="agents")
    router.message.filter(F.chat.id == agents_chat_id)
    router.edited_message.filter(F.chat.id == agents_chat_id)
    router.callback_query.filter(F.message.chat.id == agents_chat_id)

    router.message.register(on_ignored, F.from_user.is_bot | F.sender_chat | ~F.from_user)
    router.message.register(on_ignored, F.content_type.in_(SERVICE))
    router.message.register(on_stats, Command("stats"), IsAgent())
    router.message.register(on_general, ~F.is_topic_message, IsAgent())
    router.message.register(on_stranger_command, ~F.is_topic_message, F.text.startswith("/"))
    router.callback_query.register(on_stranger_press, ~IsAgent())
    router.callback_query.register(on_claim_button, TicketCb.filter(F.action == "claim"))
    router.callback_query.register(on_close_button, TicketCb.filter(F.action == "close"))
    router.callback_query.register(on_send_answer, SendAnswerCb.filter(), Offered())
    router.callback_query.register(on_refused_press)  # forged, stale, or not a button of this chat

    topic = Router(name="agents-topic")
    topic.message.filter(InTicketTopic())
    topic.edited_message.filter(InTicketTopic(), IsAgent())
    topic.message.register(on_stranger, ~IsAgent())
    topic.message.register(on_close, Command("close"))
    topic.message.register(on_reopen, Command("reopen"))
    topic.message.register(on_note, Command("note"))
    topic.message.register(on_suggest, Command("suggest"))
    topic.message.register(on_faq, Command("faq"))
    topic.message.register(on_profile, Command("profile"))
    topic.message.register(on_tag, Command("tag"))
    topic.message.register(on_help, Command("help", "start"))
    topic.message.register(on_quick_note, F.text.startswith("//"))
    topic.message.register(on_help, F.text.startswith("/"))
    topic.message.register(on_agent_message)
    topic.edited_message.register(on_agent_edit)
    router.include_router(topic)
    return router


async def on_ignored(message: Message) -> None:
    """Service messages, other bots, anonymous admins and channels: nothing to do."""


async def on_general(message: Message, desk: Desk) -> None:
    """An agent writes in General (or a non-forum chat): no customer gets it; say so."""
    direct = bool(message.text and message.text.startswith("/")) or bool(
        message.reply_to_message
        and message.reply_to_message.from_user
        and message.reply_to_message.from_user.is_bot
    )
    await desk.hint(message, desk.texts.general_hint, always=direct)


async def on_stranger(message: Message, desk: Desk) -> None:
    await desk.hint(message, desk.texts.stranger_refused)


async def on_stranger_command(message: Message, desk: Desk) -> None:
    """A command in General from someone who is not an agent: nothing happens; say so."""
    await desk.hint(message, desk.texts.stranger_command)


async def on_stranger_press(query: CallbackQuery, desk: Desk) -> None:
    await query.answer(desk.texts.stranger_toast, show_alert=True)


async def on_refused_press(query: CallbackQuery, desk: Desk) -> None:
    await refuse_press(query, desk.texts)


def _thread(query: CallbackQuery) -> int | None:
    message = query.message
    if isinstance(message, Message) and message.is_topic_message:
        return message.message_thread_id
    return None


async def on_claim_button(
    query: CallbackQuery, callback_data: TicketCb, session: AsyncSession, desk: Desk
) -> None:
    toast = await desk.claim(
        session, ticket_id=callback_data.ticket, thread_id=_thread(query), agent=agent_of(query.from_user)
    )
    await query.answer(clip(toast, 190))


async def on_close_button(
    query: CallbackQuery, callback_data: TicketCb, session: AsyncSession, desk: Desk
) -> None:
    toast = await desk.close(
        session, ticket_id=callback_data.ticket, thread_id=_thread(query), agent=agent_of(query.from_user)
    )
    await query.answer(clip(toast, 190))


async def on_send_answer(
    query: CallbackQuery, callback_data: SendAnswerCb, session: AsyncSession, desk: Desk
) -> None:
    toast = await desk.send_answer(
        session,
        ticket_id=callback_data.ticket,
        thread_id=_thread(query),
        version_id=callback_data.version,
        agent=agent_of(query.from_user),
    )
    await query.answer(clip(toast, 190))


async def on_close(message: Message, session: AsyncSession, desk: Desk, ticket: TicketView) -> None:
    await desk.close(
        session, ticket_id=ticket.id, thread_id=message.message_thread_id, agent=agent_of(message.from_user)
    )


async def on_reopen(message: Message, session: AsyncSession, desk: Desk, ticket: TicketView) -> None:
    await desk.reopen(session, ticket=ticket, agent=agent_of(message.from_user))


async def on_note(
    message: Message, command: CommandObject, session: AsyncSession, desk: Desk, ticket: TicketView
) -> None:
    await desk.note(
        session,
        ticket=ticket,
        agent=agent_of(message.from_user),
        message=message,
        text=command.args or "",
        confirm=True,
        profile=True,
    )


async def on_quick_note(message: Message, session: AsyncSession, desk: Desk, ticket: TicketView) -> None:
    text = (message.text or "").removeprefix("//").strip()
    await desk.note(
        session, ticket=ticket, agent=agent_of(message.from_user), message=message, text=text, confirm=False
    )


async def on_suggest(message: Message, session: AsyncSession, desk: Desk, ticket: TicketView) -> None:
    await desk.suggest(session, ticket=ticket)


async def on_faq(
    message: Message, command: CommandObject, session: AsyncSession, desk: Desk, ticket: TicketView
) -> None:
    await desk.faq(session, ticket=ticket, agent=agent_of(message.from_user), answer=command.args)


async def on_profile(message: Message, session: AsyncSession, desk: Desk, ticket: TicketView) -> None:
    await desk.profile(session, ticket=ticket, agent=agent_of(message.from_user))


async def on_tag(
    message: Message, command: CommandObject, session: AsyncSession, desk: Desk, ticket: TicketView
) -> None:
    await desk.tag(session, ticket=ticket, agent=agent_of(message.from_user), args=command.args)


async def on_stats(message: Message, desk: Desk) -> None:
    await desk.stats(message)


async def on_help(message: Message, desk: Desk) -> None:
    await desk.hint(message, desk.texts.agents_help, always=True)


async def on_agent_message(
    message: Message,
    session: AsyncSession,
    desk: Desk,
    ticket: TicketView,
    album: list[Message] | None = None,
) -> None:
    await desk.relay_from_agent(
        session, ticket=ticket, agent=agent_of(message.from_user), message=message, album=album
    )


async def on_agent_edit(message: Message, session: AsyncSession, desk: Desk, ticket: TicketView) -> None:
    await desk.relay_agent_edit(session, ticket=ticket, message=message)
