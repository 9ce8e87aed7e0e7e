"""Assembly: the Bot (pointed at ``telegram.api_url``), the Dispatcher and its services.

App-wide services live in the dispatcher's workflow data (``helpdesk``, ``kb``, ``settings``,
``desk`` for the agents' forum, ``sender`` for paced sending, ``reviews`` for the editors' review
of suggestions); handlers ask for them by parameter name. Outer middlewares, in order: one turn
at a time per chat (and albums as one), a database session per update, the user's language table
(``texts``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware, Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.exceptions import TelegramAPIError
from aiogram.types import BotCommand, BotCommandScopeChat, ErrorEvent, TelegramObject, User

from bot.config import Settings
from bot.editing import EditorDesk
from bot.errors import ConfigError
from bot.handover import Desk
from bot.middlewares import DbSessionMiddleware
from bot.pacing import PacedSender, Pacing
from bot.reviewing import Reviews
from bot.routers import agents, customer, editors, privacy
from bot.runtime import Services, ingest_options, open_services
from bot.sequencing import ChatSequencer
from bot.texts import EN, texts_for
from kb.conversations import Helpdesk
from kb.errors import KbError
from kb.privacy import purge
from kb.tickets import Tickets

log = logging.getLogger(__name__)


class TextsMiddleware(BaseMiddleware):
    """Puts the language table of the update's user into ``texts``."""

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        user: User | None = data.get("event_from_user")
        data["texts"] = texts_for(user.language_code if user else None)
        return await handler(event, data)


def build_bot(settings: Settings) -> Bot:
    token = settings.telegram.token.get_secret_value()
    if not token:
        raise ConfigError("telegram.token is not set: put it in HELPDESK_TELEGRAM__TOKEN")
    api_url = settings.telegram.api_url.rstrip("/")
    session = AiohttpSession(api=TelegramAPIServer.from_base(api_url)) if api_url else AiohttpSession()
    return Bot(
        token,
        session=session,
        default=DefaultBotProperties(parse_mode=ParseMode.HTML, link_preview_is_disabled=True),
    )


def build_dispatcher(services: Services, *, pacing: Pacing | None = None) -> Dispatcher:
    """The dispatcher with its routers; ``pacing`` overrides Telegram's limits (tests, demo)."""
    settings = services.settings
    escalation = bool(settings.telegram.agents_chat_id)
    helpdesk = Helpdesk(
        services.kb,
        services.thresholds,
        escalation=escalation,
        offer_after=settings.helpdesk.escalate_after_unanswered,
    )
    sender = PacedSender(pacing)
    desk = Desk(settings, sessions=services.sessions, tickets=Tickets(), helpdesk=helpdesk, sender=sender)
    dp = Dispatcher(settings=settings, kb=services.kb, helpdesk=helpdesk, desk=desk, sender=sender)
    dp.update.outer_middleware(ChatSequencer())
    dp.update.outer_middleware(DbSessionMiddleware(services.sessions))
    dp.update.outer_middleware(TextsMiddleware())
    reviews = None
    if settings.telegram.editors:  # editors' documents go before the customers' router
        editor_ids = frozenset(settings.telegram.editors)
        dp["editor_desk"] = EditorDesk(services, ingest_options(settings), settings.ingest.uploads_dir)
        reviews = Reviews(services, editor_ids, sender, interval=settings.kb.refresh_seconds)
        dp["reviews"] = reviews
        desk.on_suggestion = reviews.wake
        dp.include_router(editors.build_router(editor_ids))
    dp.include_router(privacy.build_router())  # before the customer's: never relayed to agents
    dp.include_router(customer.build_router())
    if escalation:
        dp.include_router(agents.build_router(settings.telegram.agents_chat_id))
    dp.startup.register(desk.start)
    dp.shutdown.register(desk.stop)
    if reviews is not None:  # after the desk, which binds the paced sender
        dp.startup.register(reviews.start)
        dp.shutdown.register(reviews.stop)
    dp.errors.register(on_error)
    return dp


async def on_error(event: ErrorEvent, bot: Bot) -> None:
    """Log the detail; tell the person, plainly, that it was our fault (in their forum topic)."""
    update = event.update
    log.error("update %s failed: %r", update.update_id, event.exception, exc_info=event.exception)
    chat_id, user, thread = None, None, None
    message = update.message or update.edited_message
    if message:
        chat_id, user = message.chat.id, message.from_user
        thread = message.message_thread_id if message.is_topic_message else None
    elif update.callback_query and update.callback_query.message:
        chat_id, user = update.callback_query.message.chat.id, update.callback_query.from_user
    if chat_id is None:
        return
    texts = texts_for(user.language_code if user else None) if user else EN
    with contextlib.suppress(TelegramAPIError):
        await bot.send_message(chat_id, texts.error, message_thread_id=thread)


async def set_commands(bot: Bot, settings: Settings | None = None) -> None:
    texts = EN
    await bot.set_my_commands(
        [
            BotCommand(command="start", description=texts.command_start),
            BotCommand(command="help", description=texts.command_help),
            BotCommand(command="human", description=texts.command_human),
            BotCommand(command="cancel", description=texts.command_cancel),
            BotCommand(command="mydata", description=texts.command_mydata),
            BotCommand(command="forget", description=texts.command_forget),
        ]
    )
    agents_chat = settings.telegram.agents_chat_id if settings else 0
    if agents_chat:
        try:
            await bot.set_my_commands(
                [
                    BotCommand(command="close", description=texts.command_close),
                    BotCommand(command="reopen", description=texts.command_reopen),
                    BotCommand(command="note", description=texts.command_note),
                    BotCommand(command="suggest", description=texts.command_suggest),
                    BotCommand(command="faq", description=texts.command_faq),
                    BotCommand(command="profile", description=texts.command_profile),
                    BotCommand(command="tag", description=texts.command_tag),
                    BotCommand(command="stats", description=texts.command_stats),
                    BotCommand(command="help", description=texts.command_help),
                ],
                scope=BotCommandScopeChat(chat_id=agents_chat),
            )
        except TelegramAPIError as exc:
            log.warning("could not set the agents' commands in chat %s: %s", agents_chat, exc)


async def keep_kb_fresh(services: Services, interval: float) -> None:
    """Follow the database: pick up what another process (``helpdesk ingest``) changed."""
    while True:
        await asyncio.sleep(interval)
        try:
            await services.kb.sync(services.sessions)
        except (KbError, OSError) as exc:
            log.warning("could not refresh the knowledge base: %s", exc)
        except Exception:
            log.exception("unexpected error while refreshing the knowledge base; will retry")


PURGE_EVERY = 86400.0  # seconds: the retention purge runs daily (and once at start)


async def purge_daily(services: Services, *, every: float = PURGE_EVERY) -> None:
    """``[privacy] retention_days``: drop conversations older than that, daily."""
    days = services.settings.privacy.retention_days
    while True:
        try:
            erased = await purge(services.sessions, older_than_days=days)
            if erased.conversations or erased.customers:
                log.info("retention purge (older than %d days): %s", days, erased.as_dict())
        except (KbError, OSError) as exc:
            log.warning("the retention purge failed: %s", exc)
        except Exception:
            log.exception("unexpected error in the retention purge; will retry")
        await asyncio.sleep(every)


async def serve(services: Services, bot: Bot, dp: Dispatcher, *, handle_signals: bool = True) -> None:
    """Long-poll until stopped, with the KB refresher (and the retention purge) alongside."""
    refresher = asyncio.create_task(keep_kb_fresh(services, services.settings.kb.refresh_seconds))
    background = [refresher]
    if services.settings.privacy.retention_days:
        background.append(asyncio.create_task(purge_daily(services)))
    try:
        await bot.delete_webhook(drop_pending_updates=False)
        await set_commands(bot, services.settings)
        await dp.start_polling(
            bot,
            handle_signals=handle_signals,
            close_bot_session=False,
            polling_timeout=services.settings.telegram.poll_timeout,
            allowed_updates=dp.resolve_used_update_types(),
        )
    finally:
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def polling(services: Services, bot: Bot, *, pacing: Pacing | None = None) -> AsyncIterator[Dispatcher]:
    """Run the bot in the background for the body of the ``async with`` (demo and tests)."""
    dp = build_dispatcher(services, pacing=pacing)
    started = asyncio.Event()
    dp.startup.register(started.set)
    task = asyncio.create_task(serve(services, bot, dp, handle_signals=False))
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiter.cancel()
        task.result()  # raises what stopped it
    try:
        yield dp
    finally:
        if not task.done():
            await dp.stop_polling()
        await task


async def run_polling(settings: Settings) -> None:
    bot = build_bot(settings)
    try:
        async with open_services(settings) as services:
            me = await bot.get_me()
            log.info("running as @%s with %d articles", me.username, services.kb.size)
            await serve(services, bot, build_dispatcher(services))
    finally:
        await bot.session.close()
