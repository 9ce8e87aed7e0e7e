"""The bot's HTTP session: what it keeps between Bot API calls."""

from __future__ import annotations

import gc
import weakref

from aiogram.methods.base import Response
from aiogram.types import User as TelegramUser

from bot.app import BotSession, build_bot
from bot.config import Settings
from bot.sandbox import BotAPISandbox
from tests.conftest import live_settings


async def test_parsed_response_types_outlive_a_garbage_collection(settings: Settings) -> None:
    """pydantic caches ``Response[User]`` by weak reference; if nothing else holds it, every
    Bot API call builds the class and its validator again (milliseconds of event-loop CPU)."""
    async with BotAPISandbox() as sandbox:
        bot = build_bot(live_settings(settings, sandbox))
        try:
            assert isinstance(bot.session, BotSession)
            await bot.get_me()
            parsed = weakref.ref(Response[TelegramUser])
            gc.collect()
            me = await bot.get_me()
            gc.collect()
            assert parsed() is not None, "Response[User] was collected: the next call rebuilds it"
            assert parsed() is Response[TelegramUser]
            assert me.is_bot and me.username
        finally:
            await bot.session.close()
