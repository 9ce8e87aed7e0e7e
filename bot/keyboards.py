"""Inline keyboards and their callback data."""

from __future__ import annotations

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from bot.texts import Texts
from kb.conversations import Shown

TITLE_LIMIT = 60


class FeedbackCb(CallbackData, prefix="fb"):
    message: int  # the stored outgoing message the feedback is about
    helpful: bool


class ArticleCb(CallbackData, prefix="art"):
    version: int


class HumanCb(CallbackData, prefix="human"):
    reason: str


def feedback(texts: Texts, message_id: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text=texts.button_helped,
                    callback_data=FeedbackCb(message=message_id, helpful=True).pack(),
                ),
                InlineKeyboardButton(
                    text=texts.button_not_helped,
                    callback_data=FeedbackCb(message=message_id, helpful=False).pack(),
                ),
            ]
        ]
    )


def ask_human(texts: Texts, reason: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [InlineKeyboardButton(text=texts.button_human, callback_data=HumanCb(reason=reason).pack())]
        ]
    )


def _short(title: str) -> str:
    return title if len(title) <= TITLE_LIMIT else title[: TITLE_LIMIT - 1].rstrip() + "…"


def suggestions(texts: Texts, shown: list[Shown]) -> InlineKeyboardMarkup:
    rows = [
        [InlineKeyboardButton(text=_short(s.title), callback_data=ArticleCb(version=s.version_id).pack())]
        for s in shown
    ]
    rows.append(
        [InlineKeyboardButton(text=texts.button_human, callback_data=HumanCb(reason="no_match").pack())]
    )
    return InlineKeyboardMarkup(inline_keyboard=rows)
