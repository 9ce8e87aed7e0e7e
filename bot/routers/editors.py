"""Editors in a private chat: a document is ingested through the normal pipeline; /kb shows counts;
FAQ suggestions arrive with Approve / Edit / Reject buttons.

Only users listed in ``telegram.editors`` reach these handlers; anyone else who sends a document
is a customer, handled by the customer router (stored, never ingested), and anyone else who
presses a review button is refused. A press names only the suggestion; whether it can still be
decided is checked on the server. "Edit" waits for the editor's next message in this chat (the
new answer; ``/cancel`` keeps the suggestion pending).
"""

from __future__ import annotations

import logging

from aiogram import Bot, F, Router
from aiogram.enums import ChatType
from aiogram.filters import Command, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, Message

from bot.editing import EditorDesk, UploadRefused
from bot.keyboards import ReviewCb
from bot.render import escape, toast_text
from bot.reviewing import Decision, Reviews
from bot.texts import EDITOR_EN as T
from bot.texts import format_ingest_summary, format_kb_overview

log = logging.getLogger(__name__)


class Review(StatesGroup):
    answer = State()  # waiting for the new answer of the suggestion in the state's data


def build_router(editors: frozenset[int]) -> Router:
    router = Router(name="editors")
    router.message.filter(F.chat.type == ChatType.PRIVATE, F.from_user.id.in_(editors))
    router.callback_query.filter(F.message.chat.type == ChatType.PRIVATE)
    router.message.register(on_edit_cancel, StateFilter(Review.answer), Command("cancel"))
    router.message.register(on_edited_answer, StateFilter(Review.answer), F.text, ~F.text.startswith("/"))
    router.message.register(on_edit_not_text, StateFilter(Review.answer))
    router.message.register(on_document, F.document)
    router.message.register(on_kb, Command("kb"))
    is_editor = F.from_user.id.in_(editors)
    router.callback_query.register(on_approve, ReviewCb.filter(F.action == "approve"), is_editor)
    router.callback_query.register(on_reject, ReviewCb.filter(F.action == "reject"), is_editor)
    router.callback_query.register(on_edit, ReviewCb.filter(F.action == "edit"), is_editor)
    router.callback_query.register(on_review_stranger, ReviewCb.filter(), ~is_editor)
    return router  # any other ReviewCb (a forged action) reaches the customer router's refusal


async def on_document(message: Message, bot: Bot, editor_desk: EditorDesk) -> None:
    document = message.document
    await message.answer(T.ingesting.format(name=escape(document.file_name or "file")))
    try:
        report = await editor_desk.ingest_document(bot, document, author=f"telegram:{message.from_user.id}")
    except UploadRefused as refused:
        await message.answer(T.refused.format(reason=escape(refused.reason)))
        return
    await message.answer(format_ingest_summary(report))


async def on_kb(message: Message, editor_desk: EditorDesk) -> None:
    await message.answer(format_kb_overview(await editor_desk.overview()))


# -- reviewing suggestions -------------------------------------------------------------------------


async def _show(query: CallbackQuery, decision: Decision) -> None:
    await query.answer(toast_text(decision.toast))
    if decision.message is not None:
        await query.message.edit_text(decision.message, reply_markup=None)
    elif decision.done:
        await query.message.edit_reply_markup(reply_markup=None)


async def on_approve(query: CallbackQuery, callback_data: ReviewCb, reviews: Reviews) -> None:
    await _show(query, await reviews.approve(callback_data.suggestion, editor=query.from_user))


async def on_reject(query: CallbackQuery, callback_data: ReviewCb, reviews: Reviews) -> None:
    await _show(query, await reviews.reject(callback_data.suggestion, editor=query.from_user))


async def on_edit(query: CallbackQuery, callback_data: ReviewCb, reviews: Reviews, state: FSMContext) -> None:
    sid = callback_data.suggestion
    row, refused = await reviews.pending(sid)
    if row is None:
        assert refused is not None
        await _show(query, refused)
        return
    await state.set_state(Review.answer)
    await state.update_data(suggestion=sid)
    await query.answer(T.review_edit_toast)
    await query.message.answer(T.review_edit_prompt.format(id=sid, question=escape(row["question"][:500])))


async def on_review_stranger(query: CallbackQuery) -> None:
    await query.answer(T.review_stranger, show_alert=True)


async def on_edited_answer(message: Message, reviews: Reviews, state: FSMContext) -> None:
    sid = (await state.get_data())["suggestion"]
    await state.clear()
    decision = await reviews.approve(sid, editor=message.from_user, answer=message.text)
    await message.answer(decision.message or decision.toast)


async def on_edit_cancel(message: Message, state: FSMContext) -> None:
    sid = (await state.get_data()).get("suggestion")
    await state.clear()
    await message.answer(T.review_edit_cancelled.format(id=sid))


async def on_edit_not_text(message: Message) -> None:
    await message.answer(T.review_edit_text)
