"""Updates of one chat are handled one at a time, in Telegram's order; albums arrive whole.

aiogram handles every update in a task of its own, so two messages from one customer could be
stored and relayed in either order. :class:`ChatSequencer`, the first outer middleware, takes a
first-in-first-out lock per chat (per topic in a forum) before anything else awaits, so handlers
of one chat run in update order while other chats go on in parallel.

The parts of an album (one ``media_group_id``) come as separate updates: the first one waits
``album_wait`` seconds inside its turn, the others join it and stop there, and the handler
gets them all, in order, as ``album``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import Message, TelegramObject, Update


def chat_key(update: Update) -> Hashable | None:
    """The chat (and forum topic) an update belongs to."""
    message = update.message or update.edited_message
    if message is None and update.callback_query is not None:
        inaccessible = update.callback_query.message
        message = inaccessible if isinstance(inaccessible, Message) else None
        if message is None:
            return ("user", update.callback_query.from_user.id)
    if message is None:
        return None
    thread = message.message_thread_id if message.is_topic_message else None
    return (message.chat.id, thread)


class _Turn:
    def __init__(self) -> None:
        self.lock = asyncio.Lock()  # asyncio locks wake their waiters first in, first out
        self.users = 0


class ChatSequencer(BaseMiddleware):
    def __init__(self, album_wait: float = 0.4) -> None:
        self.album_wait = album_wait
        self._turns: dict[Hashable, _Turn] = {}
        self._albums: dict[tuple[Hashable, str], list[Message]] = {}

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        key = chat_key(event) if isinstance(event, Update) else None
        if key is None:
            return await handler(event, data)
        album: list[Message] | None = None
        album_key: tuple[Hashable, str] | None = None
        message = event.message if isinstance(event, Update) else None
        if message is not None and message.media_group_id:
            album_key = (key, message.media_group_id)
            if album_key in self._albums:
                self._albums[album_key].append(message)  # handled with the first part
                return None
            album = self._albums[album_key] = [message]
        turn = self._turns.setdefault(key, _Turn())
        turn.users += 1
        try:
            async with turn.lock:
                if album is not None and album_key is not None:
                    await asyncio.sleep(self.album_wait)
                    del self._albums[album_key]
                    data["album"] = sorted(album, key=lambda m: m.message_id)
                return await handler(event, data)
        finally:
            turn.users -= 1
            if not turn.users:
                del self._turns[key]
