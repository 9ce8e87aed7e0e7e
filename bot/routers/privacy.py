"""Customers control their data, in their private chat: ``/mydata`` and ``/forget``.

Tried before the customer's router, so they work while a ticket is open too (and are never
relayed to agents). Neither command is recorded: asking what is stored, or asking to be
forgotten, stores nothing. ``/forget`` acts only after the confirmation button, and only on the
person who pressed it.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

from aiogram import Bot, F, Router
from aiogram.enums import ChatType
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command
from aiogram.types import BufferedInputFile, CallbackQuery, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot import keyboards
from bot.handover import Desk
from bot.keyboards import ForgetCb
from bot.texts import Texts
from kb.privacy import export_customer

log = logging.getLogger(__name__)

EXPORT_NAME = "my-data.json"


def build_router() -> Router:
    router = Router(name="privacy")
    router.message.filter(F.chat.type == ChatType.PRIVATE, F.from_user)
    router.callback_query.filter(F.message.chat.type == ChatType.PRIVATE)
    router.message.register(on_mydata, Command("mydata"))
    router.message.register(on_forget, Command("forget"))
    router.callback_query.register(on_forget_answer, ForgetCb.filter())
    return router


def export_file(data: dict[str, Any]) -> BufferedInputFile:
    body = json.dumps(data, ensure_ascii=False, indent=2).encode("utf-8")
    return BufferedInputFile(body, filename=EXPORT_NAME)


async def on_mydata(message: Message, bot: Bot, session: AsyncSession, texts: Texts) -> None:
    data = await export_customer(session, telegram_id=message.from_user.id)
    if data is None:
        await message.answer(texts.mydata_none)
        return
    caption = texts.mydata_caption.format(when=data["exported_at"][:16].replace("T", " ") + " UTC")
    await bot.send_document(message.chat.id, export_file(data), caption=caption)


async def on_forget(message: Message, texts: Texts) -> None:
    await message.answer(texts.forget_confirm, reply_markup=keyboards.forget(texts))


async def on_forget_answer(
    query: CallbackQuery, callback_data: ForgetCb, session: AsyncSession, desk: Desk, texts: Texts
) -> None:
    if callback_data.confirm:
        erased = await desk.forget(session, telegram_id=query.from_user.id)
        text = texts.forget_done if erased is not None else texts.forget_nothing
    else:
        text = texts.forget_kept
    await query.answer()
    with contextlib.suppress(TelegramBadRequest):  # pressed again: "message is not modified"
        await query.message.edit_text(text, reply_markup=None)
