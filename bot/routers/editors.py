"""Editors in a private chat: a document is ingested through the normal pipeline; /kb shows counts.

Only users listed in ``telegram.editors`` reach these handlers; anyone else who sends a document
is a customer, handled by the customer router.
"""

from __future__ import annotations

import logging

from aiogram import Bot, F, Router
from aiogram.enums import ChatType
from aiogram.filters import Command
from aiogram.types import Message

from bot.editing import EditorDesk, UploadRefused
from bot.texts import EDITOR_EN as T
from bot.texts import format_ingest_summary, format_kb_overview

log = logging.getLogger(__name__)


def build_router(editors: frozenset[int]) -> Router:
    router = Router(name="editors")
    router.message.filter(F.chat.type == ChatType.PRIVATE, F.from_user.id.in_(editors))
    router.message.register(on_document, F.document)
    router.message.register(on_kb, Command("kb"))
    return router


async def on_document(message: Message, bot: Bot, editor_desk: EditorDesk) -> None:
    document = message.document
    await message.answer(T.ingesting.format(name=document.file_name or "file"))
    try:
        report = await editor_desk.ingest_document(bot, document, author=f"telegram:{message.from_user.id}")
    except UploadRefused as refused:
        await message.answer(T.refused.format(reason=refused.reason))
        return
    await message.answer(format_ingest_summary(report))


async def on_kb(message: Message, editor_desk: EditorDesk) -> None:
    await message.answer(format_kb_overview(await editor_desk.overview()))
