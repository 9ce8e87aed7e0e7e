"""Inline keyboards and their callback data.

Callback data names a thing (a stored message, an article version, a ticket, a suggestion) and
never proves anything: a modified client can send any data with a press. So every handler
checks on the server that the presser may act on what the data names (see
:mod:`bot.routers`): the stored message or ticket belongs to them, the ticket is the one of the
topic the button was pressed in, the presser is an editor; and where nothing on the server says
what was offered (the "did you mean" articles, the agents' "Send" buttons), the data must be one
of the buttons of the message it was pressed on, as Telegram has that message
(:func:`offers`). Free-text fields only take the values these keyboards produce
(:data:`HUMAN_REASONS`; the routers filter the ``action`` of :class:`TicketCb` and
:class:`ReviewCb`, one handler per action).
"""

from __future__ import annotations

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from bot.texts import EditorTexts, Texts
from kb.conversations import Shown

TITLE_LIMIT = 60
HUMAN_REASONS = frozenset({"no_answer", "not_helpful", "no_match", "unanswered"})  # HumanCb.reason


class FeedbackCb(CallbackData, prefix="fb"):
    message: int  # the stored outgoing message the feedback is about
    helpful: bool


class ArticleCb(CallbackData, prefix="art"):
    version: int


class HumanCb(CallbackData, prefix="human"):
    reason: str


class TicketCb(CallbackData, prefix="tk"):
    """A button on the hand-over card; checked against the topic it is pressed in."""

    action: str  # claim / close
    ticket: int


class SendAnswerCb(CallbackData, prefix="tks"):
    """``/suggest``: send this article version to the ticket's customer."""

    ticket: int
    version: int


class CsatCb(CallbackData, prefix="csat"):
    ticket: int
    score: int


class ReviewCb(CallbackData, prefix="sg"):
    """An editor's decision on a suggestion; only the id travels, checked on the server."""

    action: str  # approve / edit / reject
    suggestion: int


class ForgetCb(CallbackData, prefix="forget"):
    """The customer confirms (or not) erasing their data; acts on the presser only."""

    confirm: bool


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


def ask_human(texts: Texts, reason: str, *, label: str | None = None) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text=label or texts.button_human, callback_data=HumanCb(reason=reason).pack()
                )
            ]
        ]
    )


def offers(markup: InlineKeyboardMarkup | None, data: str | None) -> bool:
    """Whether ``data`` is the callback data of one of the buttons of ``markup``."""
    if markup is None or not data:
        return False
    return any(button.callback_data == data for row in markup.inline_keyboard for button in row)


def _short(title: str) -> str:
    """A button label: one line, at most ``TITLE_LIMIT`` characters, never empty."""
    title = " ".join(title.split()) or "…"
    return title if len(title) <= TITLE_LIMIT else title[: TITLE_LIMIT - 1].rstrip() + "…"


def suggestions(texts: Texts, shown: list[Shown], *, human: bool = True) -> InlineKeyboardMarkup:
    rows = [
        [InlineKeyboardButton(text=_short(s.title), callback_data=ArticleCb(version=s.version_id).pack())]
        for s in shown
    ]
    if human:
        rows.append(
            [InlineKeyboardButton(text=texts.button_human, callback_data=HumanCb(reason="no_match").pack())]
        )
    return InlineKeyboardMarkup(inline_keyboard=rows)


def card(texts: Texts, ticket_id: int, *, open_: bool) -> InlineKeyboardMarkup | None:
    """Claim and Close on the hand-over card while the ticket is open; nothing after."""
    if not open_:
        return None
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text=texts.button_claim, callback_data=TicketCb(action="claim", ticket=ticket_id).pack()
                ),
                InlineKeyboardButton(
                    text=texts.button_close, callback_data=TicketCb(action="close", ticket=ticket_id).pack()
                ),
            ]
        ]
    )


def send_answers(texts: Texts, ticket_id: int, shown: list[Shown]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text=texts.button_send.format(n=number),
                    callback_data=SendAnswerCb(ticket=ticket_id, version=s.version_id).pack(),
                )
                for number, s in enumerate(shown, start=1)
            ]
        ]
    )


def rating(ticket_id: int) -> InlineKeyboardMarkup:
    """The 1-5 CSAT buttons under the closing message."""
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text=f"{score} ⭐", callback_data=CsatCb(ticket=ticket_id, score=score).pack()
                )
                for score in range(1, 6)
            ]
        ]
    )


def review(texts: EditorTexts, suggestion_id: int) -> InlineKeyboardMarkup:
    """Approve / Edit / Reject under a suggestion sent to an editor."""
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text=label, callback_data=ReviewCb(action=action, suggestion=suggestion_id).pack()
                )
                for action, label in (
                    ("approve", texts.button_approve),
                    ("edit", texts.button_edit),
                    ("reject", texts.button_reject),
                )
            ]
        ]
    )


def forget(texts: Texts) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text=texts.button_forget_yes, callback_data=ForgetCb(confirm=True).pack()
                ),
                InlineKeyboardButton(
                    text=texts.button_forget_no, callback_data=ForgetCb(confirm=False).pack()
                ),
            ]
        ]
    )
