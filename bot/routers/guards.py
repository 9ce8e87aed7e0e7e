"""What a button press must be to be acted on, and the polite refusal when it is not.

Callback data comes from the client and can be anything (see :mod:`bot.keyboards`). Handlers
check ownership on the server; :class:`Offered` covers the buttons whose choices the server
does not keep, by looking the data up among the buttons of the message it was pressed on, as
Telegram sends that message with the press.
"""

from __future__ import annotations

import logging

from aiogram.filters import Filter
from aiogram.types import CallbackQuery, Message

from bot.keyboards import offers
from bot.texts import Texts

log = logging.getLogger(__name__)


class Offered(Filter):
    """The pressed data is one of the buttons of the message it was pressed on.

    Telegram fills in the message (with its keyboard as it is now), not the client, so a forged
    press fails here. A message Telegram no longer shows the bot (deleted, too old) fails too.
    """

    async def __call__(self, query: CallbackQuery) -> bool:
        message = query.message
        return isinstance(message, Message) and offers(message.reply_markup, query.data)


async def refuse_press(query: CallbackQuery, texts: Texts) -> None:
    """A press no handler accepts (forged, stale, or from another chat's keyboard): say so, do nothing."""
    chat = query.message.chat.id if query.message else None
    log.info("refused a button press %r by user %s in chat %s", query.data, query.from_user.id, chat)
    await query.answer(texts.button_refused)
