"""Per-customer flood control: a token bucket per customer, in private chats.

A customer may send ``security.flood_burst`` messages or button presses at once and
``security.flood_per_minute`` in a steady flow. Past that, while they talk to the bot:

* a message is stored (not a command: ``/mydata`` and ``/forget`` are never stored, and the
  others carry nothing) and not answered, so it costs no search and no reply;
* the first refused message of a flood gets one polite notice; the next notice needs a new
  flood, i.e. the customer quiet long enough for the bucket to fill up again;
* a button press is answered with a short toast and does nothing.

Customers with an open ticket are not held back: their messages are for the agents, and the
agents' paced queue already merges bursts and keeps the group within Telegram's limits (see
:mod:`bot.pacing`). Agents and editors (by their ids in ``telegram.agents`` and
``telegram.editors``) are exempt; with ``telegram.agents`` empty, agents writing to the bot
privately count as customers. Other customers are never slowed: buckets are per customer, and
a refused update costs one insert.

The middleware runs after the chat sequencer (an album counts once; a chat's updates are counted
in order), the database session (to store the message and look for an open ticket) and the
language table (the notice is in the customer's language).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiogram import BaseMiddleware, Bot
from aiogram.enums import ChatType, ContentType
from aiogram.types import CallbackQuery, Chat, Message, TelegramObject, Update, User
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Settings
from bot.handover import Desk
from bot.replies import person_of
from bot.texts import Texts
from kb.conversations import Helpdesk

log = logging.getLogger(__name__)

SWEEP_EVERY = 1024  # updates between two sweeps of the buckets of customers gone quiet


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float  # when ``tokens`` was last brought up to date
    noticed: bool = False  # this flood's notice went out


class Buckets:
    """Token buckets by key: ``burst`` tokens at most, ``per_minute`` added back a minute."""

    def __init__(self, burst: int, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = float(burst)
        self.rate = per_minute / 60.0
        self.clock = clock
        self._buckets: dict[int, _Bucket] = {}
        self._seen = 0

    def take(self, key: int) -> bool:
        """Spend a token of ``key``; False (nothing spent) when there is none left."""
        bucket = self._refilled(key)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        return False

    def has_tokens(self, key: int, count: int = 1) -> bool:
        """Whether ``count`` calls of :meth:`take` would succeed now (nothing spent)."""
        bucket = self._buckets.get(key)
        return (self.burst if bucket is None else self._tokens(bucket, self.clock())) >= count

    def first_refusal(self, key: int) -> bool:
        """True once per flood: for the first refused update since the bucket was last full."""
        bucket = self._refilled(key)
        if bucket.noticed:
            return False
        bucket.noticed = True
        return True

    def __len__(self) -> int:
        return len(self._buckets)

    def _refilled(self, key: int) -> _Bucket:
        now = self.clock()
        self._sweep(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self.burst, now)
            return bucket
        bucket.tokens = self._tokens(bucket, now)
        bucket.at = now
        if bucket.tokens >= self.burst:
            bucket.noticed = False  # calm again: a new flood gets a new notice
        return bucket

    def _tokens(self, bucket: _Bucket, now: float) -> float:
        """The tokens ``bucket`` holds at ``now``, refilled since it was last brought up to date."""
        return min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)

    def _sweep(self, now: float) -> None:
        """Forget customers whose bucket would be full again: they are like new ones."""
        self._seen += 1
        if self._seen % SWEEP_EVERY:
            return
        full_after = self.burst / self.rate
        for key in [k for k, b in self._buckets.items() if now - b.at >= full_after]:
            del self._buckets[key]


def _customer(event: Update, user: User | None, chat: Chat | None) -> User | None:
    """The person a counted update comes from: a message or a press in a private chat."""
    if user is None or chat is None or chat.type != ChatType.PRIVATE or user.is_bot:
        return None
    return user if event.message is not None or event.callback_query is not None else None


class FloodControl(BaseMiddleware):
    """Outer update middleware: holds back what a customer sends over their rate."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> None:
        security = settings.security
        self.buckets = Buckets(security.flood_burst, security.flood_per_minute, clock=clock)
        exempt: Iterable[int] = (*settings.telegram.agents, *settings.telegram.editors)
        self.exempt = frozenset(exempt)

    def may_pass(self, user_id: int, *, count: int = 1) -> bool:
        """Whether ``count`` messages of ``user_id`` arriving now would all pass (nothing spent)."""
        return user_id in self.exempt or self.buckets.has_tokens(user_id, count)

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        if not isinstance(event, Update):
            return await handler(event, data)
        customer = _customer(event, data.get("event_from_user"), data.get("event_chat"))
        if customer is None or customer.id in self.exempt or self.buckets.take(customer.id):
            return await handler(event, data)
        desk: Desk = data["desk"]
        session: AsyncSession = data["session"]
        if await desk.open_ticket(session, telegram_id=customer.id) is not None:
            return await handler(event, data)  # for the agents: their paced queue merges bursts
        log.info("flood control: update %s from user %s held back", event.update_id, customer.id)
        if event.message is not None:
            await self._hold_message(event.message, data)
        elif event.callback_query is not None:
            await self._hold_press(event.callback_query, data)
        return None

    async def _hold_message(self, message: Message, data: dict[str, Any]) -> None:
        """Store the message unanswered; the first one of a flood gets the notice."""
        helpdesk: Helpdesk = data["helpdesk"]
        bot: Bot = data["bot"]
        texts: Texts = data["texts"]
        if not (message.text or "").startswith("/"):
            await helpdesk.note_incoming(
                data["session"],
                person=person_of(message.from_user),
                chat_id=message.chat.id,
                telegram_message_id=message.message_id,
                content_type=ContentType(message.content_type).value,
                text=message.text or message.caption,
            )
        if self.buckets.first_refusal(message.from_user.id):
            await bot.send_message(message.chat.id, texts.flood_notice)  # not stored: nothing to keep

    async def _hold_press(self, query: CallbackQuery, data: dict[str, Any]) -> None:
        bot: Bot = data["bot"]
        texts: Texts = data["texts"]
        await bot.answer_callback_query(query.id, text=texts.flood_toast)
