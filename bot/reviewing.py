"""Editors review FAQ suggestions in Telegram: a message per new suggestion, Approve / Edit / Reject.

:class:`Reviews` finds pending suggestions nobody announced yet (``/faq`` in a topic, or
``helpdesk gaps --suggest`` run from the command line), marks them announced and sends them to
every editor in ``telegram.editors`` (a loop started with the bot, every ``kb.refresh_seconds``;
``/faq`` also wakes it at once). A press is checked on the server: the presser must be an editor,
the suggestion must still be pending. Approving goes through :func:`kb.suggestions.approve`
(author = the editor) and the bot's index follows at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.methods import SendMessage
from aiogram.types import User

from bot import keyboards
from bot.forum import clip
from bot.pacing import PacedSender
from bot.render import escape
from bot.runtime import Services
from bot.texts import EDITOR_EN, EditorTexts
from kb.errors import KbError
from kb.suggestions import (
    SuggestionClosedError,
    SuggestionNotFoundError,
    approve,
    claim_unannounced,
    get_suggestion,
    reject,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Decision:
    """What to tell the editor: a toast, and the suggestion's message as it should now read."""

    toast: str
    message: str | None = None  # None: leave the message as it is
    done: bool = False  # the suggestion is closed: drop the buttons


def editor_name(user: User) -> str:
    return f"telegram:{user.id} ({user.full_name})"


class Reviews:
    """The editors' review desk; app-wide, in the dispatcher's workflow data as ``reviews``."""

    def __init__(
        self,
        services: Services,
        editors: frozenset[int],
        sender: PacedSender,
        *,
        interval: float,
        texts: EditorTexts = EDITOR_EN,
    ) -> None:
        self.services = services
        self.editors = editors
        self.sender = sender
        self.interval = interval
        self.texts = texts
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()

    # -- announcing ----------------------------------------------------------------------------

    async def start(self, bot: Bot) -> None:
        """Startup hook (after the desk bound the paced sender to the bot)."""
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def wake(self) -> None:
        """A suggestion was just made inside the bot: announce it now, not at the next poll."""
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                await self.announce()
            except (KbError, OSError) as exc:
                log.warning("could not announce suggestions to the editors: %s", exc)
            except Exception:
                log.exception("unexpected error while announcing suggestions; will retry")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()

    async def announce(self) -> int:
        """Send every pending suggestion not announced yet to every editor; returns how many."""
        async with self._lock:
            if not self.editors:
                return 0
            rows = await claim_unannounced(self.services.sessions)
            for row in rows:
                for editor in sorted(self.editors):
                    method = SendMessage(
                        chat_id=editor,
                        text=self.render(row),
                        reply_markup=keyboards.review(self.texts, row["id"]),
                    )
                    task = asyncio.create_task(
                        self._logged(self.sender.submit(editor, method), row["id"], editor)
                    )
                    self._sends.add(task)
                    task.add_done_callback(self._sends.discard)
            if rows:
                log.info(
                    "announced suggestion(s) %s to %d editor(s)", [r["id"] for r in rows], len(self.editors)
                )
            return len(rows)

    @staticmethod
    async def _logged(future: asyncio.Future[Any], suggestion_id: int, editor: int) -> None:
        try:
            await future
        except TelegramAPIError as exc:  # e.g. the editor never started a chat with the bot
            log.warning("suggestion #%s was not sent to editor %s: %s", suggestion_id, editor, exc)

    def render(self, row: dict[str, Any]) -> str:
        if row["ticket_id"] and row["agent_id"]:
            source = self.texts.review_from_ticket.format(ticket=row["ticket_id"])
        else:
            source = self.texts.review_from_gaps
        return self.texts.review.format(
            id=row["id"],
            source=source,
            question=escape(clip(row["question"], 500)),
            answer=escape(row["answer"][:3000]),
        )

    # -- decisions -----------------------------------------------------------------------------

    async def pending(self, suggestion_id: int) -> tuple[dict[str, Any] | None, Decision | None]:
        """The suggestion when it can still be decided, else the reason why not."""
        try:
            row = await get_suggestion(self.services.sessions, suggestion_id)
        except SuggestionNotFoundError:
            return None, Decision(self.texts.review_missing.format(id=suggestion_id), done=True)
        if row["status"] != "pending":
            return None, Decision(
                self.texts.review_closed.format(id=suggestion_id, status=row["status"]), done=True
            )
        return row, None

    async def approve(self, suggestion_id: int, *, editor: User, answer: str | None = None) -> Decision:
        try:
            row = await get_suggestion(self.services.sessions, suggestion_id)
            approved = await approve(
                self.services.sessions,
                self.services.encoder,
                suggestion_id,
                editor=editor_name(editor),
                answer=answer,
            )
        except SuggestionNotFoundError:
            return Decision(self.texts.review_missing.format(id=suggestion_id), done=True)
        except SuggestionClosedError as exc:
            return Decision(self.texts.review_closed.format(id=suggestion_id, status=exc.status), done=True)
        await self.services.kb.sync(self.services.sessions)  # live now, not at the next refresh
        line = self.texts.review_approved.format(
            editor=escape(editor.full_name),
            verb=self.texts.verb_created if approved.created else self.texts.verb_updated,
            key=escape(approved.article_key),
            version=approved.version,
        )
        shown = {**row, "answer": answer or row["answer"]}
        return Decision(line, f"{self.render(shown)}\n\n{line}", done=True)

    async def reject(self, suggestion_id: int, *, editor: User) -> Decision:
        try:
            row = await get_suggestion(self.services.sessions, suggestion_id)
            await reject(self.services.sessions, suggestion_id)
        except SuggestionNotFoundError:
            return Decision(self.texts.review_missing.format(id=suggestion_id), done=True)
        except SuggestionClosedError as exc:
            return Decision(self.texts.review_closed.format(id=suggestion_id, status=exc.status), done=True)
        line = self.texts.review_rejected.format(editor=escape(editor.full_name))
        return Decision(line, f"{self.render(row)}\n\n{line}", done=True)
