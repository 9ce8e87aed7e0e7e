"""Assembly: the Bot (pointed at ``telegram.api_url``), the Dispatcher and its services.

App-wide services live in the dispatcher's workflow data (``helpdesk``, ``kb``, ``settings``,
``desk`` for the agents' forum, ``sender`` for paced sending, ``reviews`` for the editors' review
of suggestions; ``inbox``, ``journal`` and ``stop`` once serving); handlers ask for them by
parameter name. Outer middlewares, in order: the update's fields for every log line, one turn at
a time per chat (and albums as one), a database session per update, the user's language table
(``texts``), per-customer flood control.

:func:`serve` receives updates (long polling or the webhook) into the inbox and runs the
background jobs; see :mod:`bot.delivery` for what is guaranteed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, ClassVar
from urllib.parse import urlsplit

from aiogram import BaseMiddleware, Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.exceptions import TelegramAPIError, TelegramForbiddenError, TelegramUnauthorizedError
from aiogram.methods.base import Response, TelegramMethod, TelegramType
from aiogram.types import BotCommand, BotCommandScopeChat, ErrorEvent, TelegramObject, Update, User

from bot import delivery, metrics
from bot.config import Settings, _host_port
from bot.editing import EditorDesk
from bot.errors import BotApiUnreachable, ConfigError
from bot.flood import FloodControl
from bot.handover import Desk
from bot.logs import LogContextMiddleware
from bot.middlewares import DbSessionMiddleware
from bot.pacing import PacedSender, Pacing
from bot.reviewing import Reviews
from bot.routers import agents, customer, editors, privacy
from bot.runtime import Services, ingest_options, open_services
from bot.sequencing import ChatSequencer
from bot.texts import EN, texts_for
from kb import heap
from kb.conversations import Helpdesk
from kb.errors import KbError
from kb.privacy import purge
from kb.tickets import Tickets

log = logging.getLogger(__name__)


class BotSession(AiohttpSession):
    """aiogram's session, keeping the parsed response types alive.

    aiogram parses every Bot API response into pydantic's ``Response[T]``, and pydantic caches
    parametrised generic classes by weak reference only: once a response has been handled
    nothing holds ``Response[Message]``, the garbage collector takes it, and the next call builds
    the class and its validator again (~7 ms of event-loop CPU per call on 2 cores, measured with
    ``benchmarks/e2e.py``: a third of the bot's CPU per answer). One strong reference per type
    keeps the cache warm.
    """

    _response_types: ClassVar[dict[Any, type]] = {}

    def check_response(
        self, bot: Bot, method: TelegramMethod[TelegramType], status_code: int, content: str
    ) -> Response[TelegramType]:
        returning = method.__returning__
        with contextlib.suppress(TypeError):  # an unhashable annotation: no cache, as before
            if returning not in self._response_types:
                self._response_types[returning] = Response[returning]  # type: ignore[valid-type]
        return super().check_response(bot, method, status_code, content)


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
    session = BotSession(api=TelegramAPIServer.from_base(api_url)) if api_url else BotSession()
    bot = Bot(
        token,
        session=session,
        default=DefaultBotProperties(parse_mode=ParseMode.HTML, link_preview_is_disabled=True),
    )
    # retries (429, 5xx, network) from the first call; serving adds the journal
    delivery.install_journal(bot, delivery.Journal(None, retries=settings.delivery.send_retries))
    return bot


def build_dispatcher(services: Services, *, pacing: Pacing | None = None) -> Dispatcher:
    """The dispatcher with its routers; ``pacing`` overrides Telegram's limits (tests, demo)."""
    settings = services.settings
    escalation = bool(settings.telegram.agents_chat_id)
    helpdesk = Helpdesk(
        services.kb,
        services.thresholds,
        escalation=escalation,
        offer_after=settings.helpdesk.escalate_after_unanswered,
        writes=services.writes,
    )
    sender = PacedSender(pacing)
    desk = Desk(settings, sessions=services.sessions, tickets=Tickets(), helpdesk=helpdesk, sender=sender)
    dp = Dispatcher(settings=settings, kb=services.kb, helpdesk=helpdesk, desk=desk, sender=sender)
    dp.update.outer_middleware(LogContextMiddleware())  # first: the update's fields in every log line
    dp.update.outer_middleware(ChatSequencer())
    dp.update.outer_middleware(delivery.RetryInTurn())  # in the chat's turn: its later messages wait
    dp.update.outer_middleware(DbSessionMiddleware(services.sessions))
    dp.update.outer_middleware(TextsMiddleware())
    dp["flood"] = FloodControl(settings)
    dp.update.outer_middleware(dp["flood"])  # needs the session (stores) and the texts
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
    """Log the detail; tell the person, plainly, that it was our fault (in their forum topic).

    A transient failure (Telegram or the database unreachable) of an update that the inbox will
    process again is only logged: the person gets the real answer shortly."""
    metrics.count_error(event.exception)
    update = event.update
    scope = delivery.current_scope()
    if scope is not None:
        scope.failure = event.exception
        if delivery.is_transient(event.exception) and not scope.final:
            log.warning("update %s: %r; it will be processed again", update.update_id, event.exception)
            return
    if isinstance(event.exception, TelegramForbiddenError):  # blocked by the person, or removed
        log.warning("update %s: %s", update.update_id, event.exception.message)
        return
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
    """Follow the database: pick up what another process (``helpdesk ingest``) changed, and
    embed a few seconds' worth of what the secondary model still lacks (``kb.backlog``)."""
    while True:
        await asyncio.sleep(interval)
        try:
            await services.kb.sync(services.sessions)
            await services.kb.catch_up(services.sessions)
        except (KbError, OSError) as exc:
            log.warning("could not refresh the knowledge base: %s", exc)
        except Exception:
            log.exception("unexpected error while refreshing the knowledge base; will retry")


PURGE_EVERY = 86400.0  # seconds: the retention purge runs daily (and once at start)
INBOX_KEPT = timedelta(days=2)  # processed updates are remembered this long (webhook redeliveries)
# How long a thread may hold the GIL while another waits for it (Python's default: 5 ms). The
# bot's event loop shares the GIL with the search's and SQLite's threads: each of an answer's
# ~30 trips to SQLite's thread and back can wait a whole interval behind a search. At 0.5 ms,
# answers at 10/s came back ~3 ms sooner (p50), with no loss flat out (benchmarks/RESULTS.md).
GIL_SWITCH_INTERVAL = 0.0005


async def purge_daily(services: Services, *, every: float = PURGE_EVERY) -> None:
    """``[privacy] retention_days``: drop conversations older than that, daily; and processed
    updates older than :data:`INBOX_KEPT`."""
    days = services.settings.privacy.retention_days
    while True:
        try:
            forgotten = await delivery.forget_done(services.sessions, older_than=INBOX_KEPT)
            if forgotten:
                log.info("inbox: forgot %d updates processed over %s ago", forgotten, INBOX_KEPT)
            erased = await purge(services.sessions, older_than_days=days) if days else None
            if erased is not None and (erased.conversations or erased.customers):
                log.info("retention purge (older than %d days): %s", days, erased.as_dict())
        except (KbError, OSError) as exc:
            log.warning("the retention purge failed: %s", exc)
        except Exception:
            log.exception("unexpected error in the retention purge; will retry")
        await asyncio.sleep(every)


def _search_early(dp: Dispatcher) -> Callable[[Sequence[Update]], None]:
    """The inbox's arrival hook: a customer's question starts being searched as it arrives, so
    the search runs while the update is stored and routed (see benchmarks/RESULTS.md). Not for
    messages flood control would hold back, counting the earlier ones of the same arrival."""
    helpdesk: Helpdesk = dp["helpdesk"]
    flood: FloodControl = dp["flood"]

    def arrived(updates: Sequence[Update]) -> None:
        seen: Counter[int] = Counter()
        for update in updates:
            message = update.message
            if message is None or message.from_user is None or not customer.likely_question(message):
                continue
            sender = message.from_user
            seen[sender.id] += 1
            if flood.may_pass(sender.id, count=seen[sender.id]):
                helpdesk.expect_question(message.text or "", language=sender.language_code)

    return arrived


async def serve(
    services: Services,
    bot: Bot,
    dp: Dispatcher,
    *,
    handle_signals: bool = True,
    pacing: Pacing | None = None,
    ready: asyncio.Event | None = None,
) -> None:
    """Receive (long polling or the webhook) until stopped, through the inbox, with the KB
    refresher, the inbox sweeper (and the retention purge) alongside. SIGTERM/SIGINT (or
    ``dp["stop"].set()``) stop receiving; in-flight updates get ``delivery.stop_timeout`` seconds,
    what is left stays in the inbox for the next start."""
    settings = services.settings
    pacing = pacing or Pacing()
    sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL))  # for the process
    journal = delivery.install_journal(
        bot,
        delivery.Journal(
            services.sessions,
            retries=settings.delivery.send_retries,
            backoff=pacing.backoff,
            on_retry=lambda reason: metrics.SEND_RETRIES.labels(reason=reason).inc(),
            writes=services.writes,
        ),
    )
    inbox = delivery.Inbox(
        services.sessions,
        dp,
        bot,
        settings.delivery,
        retry_pause=max(pacing.backoff, 0.05),
        writes=services.writes,
    )
    inbox.on_received = metrics.UPDATES_RECEIVED.inc
    inbox.on_arrival = _search_early(dp)
    inbox.on_processed = lambda outcome: metrics.UPDATES_PROCESSED.labels(outcome=outcome).inc()
    sender: PacedSender = dp["sender"]

    async def outbox_depth() -> int:
        """Updates not yet processed, plus calls queued for pacing."""
        return await delivery.depth(services.sessions) + sender.pending()

    stop = asyncio.Event()
    dp.workflow_data.update(inbox=inbox, journal=journal, stop=stop)
    loop = asyncio.get_running_loop()
    if handle_signals:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
    # Upkeep stops with the receiving: a backlog batch begun while in-flight updates drain
    # would hold the exit until its encode ends (a thread cannot be cancelled).
    upkeep = [asyncio.create_task(keep_kb_fresh(services, settings.kb.refresh_seconds))]
    upkeep.append(asyncio.create_task(purge_daily(services)))
    background: list[asyncio.Task[None]] = []
    receiver: asyncio.Task[None] | None = None
    exits = contextlib.AsyncExitStack()
    await exits.enter_async_context(
        metrics.metrics_server(settings, services, bot, outbox_depth=outbox_depth)
    )
    await dp.emit_startup(bot=bot, bots=[bot], dispatcher=dp, **dp.workflow_data)
    try:
        await set_commands(bot, settings)
        allowed = dp.resolve_used_update_types()
        recovered = await inbox.claim_due(recovering=True)
        if recovered:
            log.info("inbox: %d updates left from the last run are being processed", recovered)
        background.append(
            asyncio.create_task(inbox.sweep(min(settings.delivery.lease_seconds / 3, 1.0), stop))
        )
        telegram = settings.telegram
        if telegram.mode == "webhook":
            secret = telegram.webhook_secret.get_secret_value()
            listen = _host_port(telegram.webhook_listen)
            path = urlsplit(telegram.webhook_url).path or "/"
            limit = settings.delivery.max_inflight
            runner = await delivery.start_webhook(
                inbox, bot, listen=listen, path=path, secret=secret, max_inflight=limit
            )
            exits.push_async_callback(runner.cleanup)
            await bot.set_webhook(
                telegram.webhook_url, secret_token=secret, allowed_updates=allowed, drop_pending_updates=False
            )
            receiver = asyncio.create_task(stop.wait())
        else:
            await bot.delete_webhook(drop_pending_updates=False)
            receiver = asyncio.create_task(
                delivery.poll(
                    bot,
                    inbox,
                    stop,
                    poll_timeout=telegram.poll_timeout,
                    allowed_updates=allowed,
                    max_inflight=settings.delivery.max_inflight,
                )
            )
        if ready is not None:
            ready.set()
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({receiver, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if receiver.done():
            receiver.result()  # raises what stopped it
    finally:
        stop.set()
        for task in upkeep:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if receiver is not None and not receiver.done():
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver
        late = await inbox.drain(settings.delivery.stop_timeout)
        if late:
            log.warning("stopping: %d updates unfinished; they stay in the inbox for the next start", late)
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await dp.emit_shutdown(bot=bot, bots=[bot], dispatcher=dp, **dp.workflow_data)
        await exits.aclose()
        if handle_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)


@contextlib.asynccontextmanager
async def polling(services: Services, bot: Bot, *, pacing: Pacing | None = None) -> AsyncIterator[Dispatcher]:
    """Run the bot in the background for the body of the ``async with`` (demo and tests)."""
    dp = build_dispatcher(services, pacing=pacing)
    ready = asyncio.Event()
    task = asyncio.create_task(serve(services, bot, dp, handle_signals=False, pacing=pacing, ready=ready))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiter.cancel()
        task.result()  # raises what stopped it
    try:
        yield dp
    finally:
        if not task.done():
            dp["stop"].set()
        await task


async def run_polling(settings: Settings) -> None:
    """``helpdesk run``: the bot until SIGTERM/SIGINT, in polling or webhook mode."""
    bot = build_bot(settings)
    pacing = Pacing.fast() if settings.delivery.pacing == "none" else Pacing()
    try:
        async with open_services(settings) as services:
            heap.settle()  # the model, the index and the catalog live as long as the process
            api = settings.telegram.api_url or "https://api.telegram.org"
            try:
                me = await bot.get_me()
            except TelegramUnauthorizedError:
                raise ConfigError(f"telegram.token: the Bot API at {api} does not accept it") from None
            except TelegramAPIError as exc:
                raise BotApiUnreachable(f"cannot reach the Bot API at {api}: {exc.message}") from None
            log.info(
                "running as @%s with %d articles (%s mode, replica %s)",
                me.username,
                services.kb.size,
                settings.telegram.mode,
                delivery.instance_name(settings.delivery),
            )
            await serve(services, bot, build_dispatcher(services, pacing=pacing), pacing=pacing)
    finally:
        await bot.session.close()
