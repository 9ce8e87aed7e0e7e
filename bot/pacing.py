"""A paced sender: Bot API calls queued per destination chat, sent within Telegram's limits.

Telegram lets a bot send about one message a second into a chat, about twenty a minute into a
group, and about thirty a second in all; beyond that it answers 429 with ``retry_after``. The
:class:`PacedSender` keeps one queue per chat and one worker per non-empty queue:

* calls to one chat go out in the order they were submitted, at most one per ``*_interval`` and,
  for groups, at most ``group_limit`` per ``window`` seconds; all chats share ``overall_per_second``;
* a 429 pauses that chat for ``retry_after`` seconds, then the call is retried; 5xx and network
  errors are retried with a growing pause; ``retries`` bounds both;
* while a chat's queue is backed up, consecutive texts submitted with the same ``merge_key``
  (a customer writing many short messages into one forum topic) are coalesced into one message;
* a ``repair`` hook may rewrite a call that failed with 400 (e.g. into a recreated forum topic).

The interface is one call, ``submit(chat_id, method)`` (a future of the method's result) or
``await send(chat_id, method)``, so a durable outbox can replace it later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiogram import Bot
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.methods import SendMessage, TelegramMethod

from bot import delivery

log = logging.getLogger(__name__)

T = TypeVar("T")
MERGE_LIMIT = 4000  # a coalesced text stays under Telegram's 4096 characters
Repair = Callable[[int, TelegramMethod[Any], TelegramBadRequest], Awaitable[TelegramMethod[Any] | None]]


@dataclass(frozen=True, slots=True)
class Pacing:
    """The limits. The defaults are Telegram's documented ones; tests shrink them."""

    group_interval: float = 1.0  # seconds between two messages into one group
    group_limit: int = 20  # ...and at most this many messages into one group
    window: float = 60.0  # ...per this many seconds
    private_interval: float = 1.0  # seconds between two messages into one private chat
    overall_per_second: float = 30.0  # all chats together
    retries: int = 3  # retries of a call after 429, 5xx or a network error
    backoff: float = 1.0  # first pause after a 5xx or network error (doubles each time)

    @classmethod
    def fast(cls) -> Pacing:
        """For the sandbox (demo): no real limits to respect."""
        return cls(group_interval=0.0, group_limit=1000, window=1.0, private_interval=0.0,
                   overall_per_second=1000.0, backoff=0.05)  # fmt: skip


@dataclass
class Stats:
    sent: int = 0
    merged: int = 0  # submissions folded into an earlier queued message
    retried_after_429: int = 0
    retried_after_error: int = 0
    failed: int = 0


@dataclass(eq=False)
class _Job:
    method: TelegramMethod[Any]
    futures: list[asyncio.Future[Any]]
    merge_key: Hashable | None = None
    merged_html: list[str] = field(default_factory=list)
    keys: list[str | None] = field(default_factory=list)  # journal keys of the calls it carries


@dataclass
class _Chat:
    queue: deque[_Job] = field(default_factory=deque)
    sent_at: deque[float] = field(default_factory=deque)  # recent sends, for the window
    tail: dict[Hashable, _Job] = field(default_factory=dict)  # last queued job per merge key
    worker: asyncio.Task[None] | None = None


class PacedSender:
    def __init__(self, pacing: Pacing | None = None, *, repair: Repair | None = None) -> None:
        self.pacing = pacing or Pacing()
        self.repair = repair
        self.stats = Stats()
        self._bot: Bot | None = None
        self._chats: dict[int, _Chat] = {}
        self._next_slot = 0.0  # monotonic time of the next send, all chats together

    def bind(self, bot: Bot) -> None:
        self._bot = bot

    # -- the interface ------------------------------------------------------------------------

    def submit(
        self,
        chat_id: int,
        method: TelegramMethod[T],
        *,
        merge_key: Hashable | None = None,
        merge_html: str | None = None,
    ) -> asyncio.Future[T]:
        """Queue ``method`` for ``chat_id``; the future gets its result (or its error).

        ``merge_html``: the call is a text (``method`` sends it as is); while it waits in the
        queue, later texts with the same ``merge_key`` join it as one HTML message, and the
        futures of all of them get that message.
        """
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        delivery.track(future)  # the update that queued it is done once it is sent
        key = delivery.reserve(method)
        chat = self._chats.setdefault(chat_id, _Chat())
        waiting = chat.tail.get(merge_key) if merge_key is not None else None
        if (
            waiting is not None
            and merge_html
            and waiting.merged_html
            and sum(len(t) + 2 for t in waiting.merged_html) + len(merge_html) <= MERGE_LIMIT
        ):
            waiting.merged_html.append(merge_html)
            waiting.method = SendMessage(
                chat_id=getattr(waiting.method, "chat_id", chat_id),
                message_thread_id=getattr(waiting.method, "message_thread_id", None),
                text="\n\n".join(waiting.merged_html),
                parse_mode="HTML",
            )
            waiting.futures.append(future)
            waiting.keys.append(key)
            self.stats.merged += 1
            return future
        job = _Job(method, [future], merge_key, [merge_html] if merge_html else [], [key])
        chat.queue.append(job)
        if merge_key is not None:
            chat.tail[merge_key] = job
        if chat.worker is None or chat.worker.done():
            chat.worker = asyncio.create_task(self._work(chat_id, chat), name=f"paced-sender-{chat_id}")
        return future

    async def send(self, chat_id: int, method: TelegramMethod[T], **merge: Any) -> T:
        return await self.submit(chat_id, method, **merge)

    def pending(self, chat_id: int | None = None) -> int:
        chats = [self._chats.get(chat_id)] if chat_id is not None else list(self._chats.values())
        return sum(len(c.queue) for c in chats if c is not None)

    async def close(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Let the queues drain for up to ``timeout`` seconds, then give up on the rest."""
        workers = [c.worker for c in self._chats.values() if c.worker is not None and not c.worker.done()]
        if workers:
            _, late = await asyncio.wait(workers, timeout=timeout)
            for task in late:
                task.cancel()
            for task in late:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for chat in self._chats.values():
            for job in chat.queue:
                for future in job.futures:
                    if not future.done():
                        future.cancel()
            chat.queue.clear()

    # -- the workers --------------------------------------------------------------------------

    async def _work(self, chat_id: int, chat: _Chat) -> None:
        while chat.queue:
            job = chat.queue.popleft()
            if job.merge_key is not None and chat.tail.get(job.merge_key) is job:
                del chat.tail[job.merge_key]  # on its way: nothing joins it any more
            try:
                result = await self._call(chat_id, chat, job)
            except asyncio.CancelledError:
                for future in job.futures:
                    future.cancel()
                raise
            except Exception as exc:  # handed to whoever waits for the call
                self.stats.failed += 1
                for future in job.futures:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for future in job.futures:
                    if not future.done():
                        future.set_result(result)

    async def _call(self, chat_id: int, chat: _Chat, job: _Job) -> Any:
        if self._bot is None:
            raise RuntimeError("PacedSender.bind(bot) was not called")
        failures = 0
        repaired = False
        while True:
            await self._wait_turn(chat_id, chat)
            try:
                with delivery.pinned(job.keys):
                    result = await self._bot(job.method)
            except TelegramRetryAfter as exc:
                failures += 1
                if failures > self.pacing.retries:
                    raise
                self.stats.retried_after_429 += 1
                log.warning("429 in chat %s: waiting %ss before retrying", chat_id, exc.retry_after)
                await asyncio.sleep(exc.retry_after)
            except (TelegramServerError, TelegramNetworkError) as exc:
                failures += 1
                if failures > self.pacing.retries:
                    raise
                self.stats.retried_after_error += 1
                pause = self.pacing.backoff * 2 ** (failures - 1)
                log.warning("%s in chat %s: retrying in %.1fs", exc, chat_id, pause)
                await asyncio.sleep(pause)
            except TelegramBadRequest as exc:
                if repaired or self.repair is None:
                    raise
                replacement = await self.repair(chat_id, job.method, exc)
                if replacement is None:
                    raise
                job.method, repaired = replacement, True
            else:
                self.stats.sent += 1
                return result

    async def _wait_turn(self, chat_id: int, chat: _Chat) -> None:
        pacing = self.pacing
        group = chat_id < 0
        interval = pacing.group_interval if group else pacing.private_interval
        now = time.monotonic()
        start = now
        if chat.sent_at:
            start = max(start, chat.sent_at[-1] + interval)
        if group:
            while chat.sent_at and chat.sent_at[0] <= now - pacing.window:
                chat.sent_at.popleft()
            if len(chat.sent_at) >= pacing.group_limit:
                start = max(start, chat.sent_at[-pacing.group_limit] + pacing.window)
        start = max(start, self._next_slot)
        self._next_slot = start + 1.0 / pacing.overall_per_second
        if start > now:
            await asyncio.sleep(start - now)
        chat.sent_at.append(time.monotonic())
        if len(chat.sent_at) > max(pacing.group_limit, 1) * 2:
            chat.sent_at.popleft()
