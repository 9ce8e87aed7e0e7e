"""Delivery: every accepted update gets one reaction, every Bot API call is made once.

Inbound (:class:`Inbox`)
    An update is stored in ``inbox`` before Telegram learns it arrived: in polling mode the
    offset that confirms a batch goes out with the next ``getUpdates``, after the batch is
    committed; in webhook mode the 200 goes out after the commit. Stored updates are claimed
    (a compare-and-set on the row: ``owner`` and ``lease_until``, so one replica processes an
    update), fed to the dispatcher in update order, and marked done. On start, what is left
    (pending, or claimed by this replica before it died, or by a replica whose lease ran out) is
    processed first. A transient failure (Telegram or the database unreachable) is handled
    again in place after a growing pause (:class:`RetryInTurn`, within the chat's turn, so the
    chat's later messages wait for it), up to ``delivery.max_attempts``; then it is marked
    failed. A failure outside the handlers puts the update back in the inbox with such a pause.

Outbound (:class:`Journal`, a request middleware of the bot's session)
    A call made while an update is handled gets a key: the update, the method, the chat and its
    count among such calls, so the same call gets the same key when the update is handled
    again. The key is written ``sending`` before the call and ``sent`` after it, with what a
    replay needs of Telegram's result (ids, not texts); a reprocessed update that reaches a
    ``sent`` key gets the stored result back and nothing is sent. Calls are retried on 429
    (after ``retry_after``), 5xx and network errors with a doubling pause; permanent errors
    (blocked, chat not found, bad request) are written ``failed`` and raised to the caller.

Writes (inbox rows, journal rows, done marks) go through one :class:`kb.db.GroupCommit`: each
is awaited until committed, as if alone, but what concurrent updates queue while a transaction
commits shares the next one, so under load a handful of transactions carries the bookkeeping of
many answers, and at rest nothing waits for company.

The one gap Telegram leaves open (the Bot API takes no idempotency key): a call that Telegram
carried out but whose answer the bot never recorded (the process died in between) is in doubt.
It is made again (at least once rather than at most once) and the log says so. At most
``in_flight`` calls (8) are ever in that state at once, so one crash repeats at most that many
messages; a dropped connection before Telegram acted repeats nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import logging
import random
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from aiogram import BaseMiddleware, Bot, Dispatcher
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.methods import GetUpdates, TelegramMethod
from aiogram.methods.base import TelegramType
from aiogram.types import Message, TelegramObject, Update
from aiohttp import web
from pydantic import BaseModel, TypeAdapter
from sqlalchemy import Table, and_, bindparam, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import DeliverySettings
from kb.db import Batched, GroupCommit, parameters
from kb.models import InboxState, InboxUpdate, OutboxCall, OutboxState, utcnow
from kb.store import chunks

log = logging.getLogger(__name__)

# Calls that change nothing at Telegram (or that are made outside of updates) are not journaled.
_UNJOURNALED = frozenset(
    {"sendChatAction", "setWebhook", "deleteWebhook", "setMyCommands", "deleteMyCommands", "logOut", "close"}
)

TRANSIENT = (
    TelegramNetworkError,
    TelegramServerError,
    TelegramRetryAfter,
    OperationalError,
    OSError,
    TimeoutError,
)


MAX_RETRY_PAUSE = 300.0  # seconds: the longest pause between two attempts at an update


def retry_pause(first: float, attempt: int) -> float:
    """The pause after the ``attempt``-th attempt at an update: ``first``, doubling, capped."""
    return min(first * 2 ** (attempt - 1), MAX_RETRY_PAUSE)


def is_transient(exc: BaseException) -> bool:
    """Worth processing the update again later: Telegram or the database was unreachable."""
    if isinstance(exc, DBAPIError) and not isinstance(exc, OperationalError):
        return False
    return isinstance(exc, TRANSIENT)


# -- the update being handled, and the keys of its calls -----------------------------------------


@dataclass(eq=False)
class UpdateScope:
    """What the handling of one update has done so far (one per processing of the update)."""

    update_id: int
    attempt: int = 1  # this processing of the update is its attempt-th
    max_attempts: int = 1  # no further attempt follows a transient failure of the last one
    retry_pause: float = 1.0  # the pause before the second attempt (it doubles after each)
    settle_timeout: float = 30.0  # how long the calls an attempt queued are waited for
    counts: dict[tuple[str, Any], int] = field(default_factory=dict)
    pending: set[asyncio.Future[Any]] = field(default_factory=set)
    failure: BaseException | None = None
    erased: set[int] = field(default_factory=set)  # chats whose data was erased in this update
    # Called with each attempt after the first, before it is made (the inbox records the count).
    on_attempt: Callable[[int], Awaitable[None]] | None = None

    @property
    def replay(self) -> bool:
        """The update was processed before: its calls are looked up in the journal."""
        return self.attempt > 1

    @property
    def final(self) -> bool:
        return self.attempt >= self.max_attempts

    def pause(self) -> float:
        """The pause before the attempt after this one."""
        return retry_pause(self.retry_pause, self.attempt)

    async def next_attempt(self) -> None:
        """Make this scope the update's next attempt: what the last one queued is sent (or given
        up) first, so the calls of the next one find it in the journal under the same keys."""
        await self.settle(self.settle_timeout)
        self.attempt += 1
        self.counts.clear()
        self.failure = None
        if self.on_attempt is not None:
            await self.on_attempt(self.attempt)

    def next_key(self, method: TelegramMethod[Any]) -> str:
        name = method.__api_method__
        chat = getattr(method, "chat_id", None)
        number = self.counts.get((name, chat), 0) + 1
        self.counts[(name, chat)] = number
        return f"{self.update_id}:{name}:{chat}:{number}"

    async def settle(self, timeout: float) -> None:  # noqa: ASYNC109
        """Wait for the calls and follow-ups this update queued (sends the paced sender holds)."""
        while self.pending:
            done, _ = await asyncio.wait(set(self.pending), timeout=timeout)
            if not done:
                log.warning(
                    "update %s: %d calls still queued after %.0fs", self.update_id, len(self.pending), timeout
                )
                return
            self.pending.difference_update(done)


_SCOPE: ContextVar[UpdateScope | None] = ContextVar("helpdesk_update_scope", default=None)
_PROBE: ContextVar[bool] = ContextVar("helpdesk_probe", default=False)
_PINNED: ContextVar[tuple[str, ...] | None] = ContextVar("helpdesk_call_keys", default=None)


def current_scope() -> UpdateScope | None:
    return _SCOPE.get()


def journaled(method: TelegramMethod[Any]) -> bool:
    name = method.__api_method__
    return not name.startswith("get") and name not in _UNJOURNALED


def reserve(method: TelegramMethod[Any]) -> str | None:
    """The journal key of a call about to be queued in the current update (None outside one)."""
    scope = _SCOPE.get()
    if scope is None or not journaled(method) or getattr(method, "chat_id", None) in scope.erased:
        return None
    return scope.next_key(method)


def erased(chat_id: int) -> None:
    """The person of ``chat_id`` had their data erased in this update: its journal entries are
    gone, and the calls still made into their chat (the confirmation) are not journaled."""
    scope = _SCOPE.get()
    if scope is not None:
        scope.erased.add(chat_id)


def track(awaitable: asyncio.Future[Any]) -> None:
    """The current update is not done until ``awaitable`` is (a queued send, a follow-up task)."""
    scope = _SCOPE.get()
    if scope is not None and not awaitable.done():
        scope.pending.add(awaitable)
        awaitable.add_done_callback(scope.pending.discard)


@contextlib.contextmanager
def probing() -> Any:
    """Calls inside are made once, without retries (health checks want the truth, now)."""
    token = _PROBE.set(True)
    try:
        yield
    finally:
        _PROBE.reset(token)


@contextlib.contextmanager
def pinned(keys: Sequence[str | None]) -> Any:
    """Make the calls inside use these journal keys (the first; the rest are aliases of it:
    texts coalesced into one message). No keys: the calls inside are not journaled."""
    token = _PINNED.set(tuple(k for k in keys if k))
    try:
        yield
    finally:
        _PINNED.reset(token)


class RetryInTurn(BaseMiddleware):
    """An update whose handling failed transiently (Telegram or the database unreachable) is
    handled again after a doubling pause, up to its scope's ``max_attempts``, without leaving
    its chat's turn: as the outer middleware right after :class:`bot.sequencing.ChatSequencer`,
    it keeps the chat's later messages waiting, so they are still answered after it, in order.
    The last attempt's failure goes on to the dispatcher's error handler."""

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        scope = _SCOPE.get()
        if scope is None:  # not fed by the inbox: no attempts to count
            return await handler(event, data)
        while True:
            try:
                return await handler(event, dict(data))  # inner middlewares add to their copy
            except Exception as exc:
                if scope.final or not is_transient(exc):
                    raise
                pause = scope.pause()
                log.warning(
                    "update %s: %r; handling it again in %.1fs (attempt %d of %d), its chat waiting",
                    scope.update_id, exc, pause, scope.attempt + 1, scope.max_attempts,
                )  # fmt: skip
                await asyncio.sleep(pause)
                await scope.next_attempt()


# -- outbound: the journal ---------------------------------------------------------------------


@dataclass
class JournalStats:
    calls: int = 0
    replayed: int = 0  # calls answered from the journal, not sent again
    in_doubt: int = 0  # calls found 'sending' on a replay: made again
    retried_after_429: int = 0
    retried_after_error: int = 0
    failed: int = 0


RetryHook = Callable[[str], None]


class Journal(BaseRequestMiddleware):
    """The bot session's request middleware: retries, and the journal of calls made in updates."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession] | None,
        *,
        retries: int = 5,
        backoff: float = 1.0,
        max_pause: float = 30.0,
        in_flight: int = 8,
        on_retry: RetryHook | None = None,
        writes: GroupCommit | None = None,
    ) -> None:
        self.sessions = sessions
        self.writes = writes or (GroupCommit(sessions) if sessions is not None else None)
        self.in_flight = in_flight
        self._slots = asyncio.Semaphore(in_flight)  # Bot API calls at once (Telegram allows ~30/s)
        self.retries = retries
        self.backoff = backoff
        self.max_pause = max_pause
        self.on_retry = on_retry
        self.stats = JournalStats()

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> TelegramType:
        if isinstance(method, GetUpdates) or _PROBE.get():
            return await make_request(bot, method)
        keys = _PINNED.get()
        if keys is None:
            key = reserve(method)
            keys = (key,) if key else ()
        scope = _SCOPE.get()
        if not keys or self.sessions is None:
            return await self._retrying(make_request, bot, method)
        self.stats.calls += 1
        if scope is None or scope.replay:
            stored = await self._stored(bot, method, keys[0])
            if stored is not None:
                return stored

        # Once "sending" is written, "sent" and "failed" only update that row: should the
        # person's data be erased meanwhile (/forget in another update), nothing comes back.
        begun = False

        async def begin() -> None:
            nonlocal begun
            begun = await self._write(keys, method, OutboxState.SENDING)

        async def record(response: TelegramType) -> None:
            result = json.dumps(_jsonable(response), ensure_ascii=False)
            await self._write(keys, method, OutboxState.SENT, result=result, existing=begun)

        try:
            return await self._retrying(make_request, bot, method, begin=begin, record=record)
        except TelegramAPIError as exc:
            self.stats.failed += 1
            error = f"{type(exc).__name__}: {exc.message}"
            await self._write(keys, method, OutboxState.FAILED, error=error, existing=begun)
            raise

    async def _stored(self, bot: Bot, method: TelegramMethod[TelegramType], key: str) -> TelegramType | None:
        assert self.sessions is not None
        async with self.sessions() as session:
            row = await session.get(OutboxCall, key)
        if row is None:
            return None
        if row.state == OutboxState.SENT and row.method == method.__api_method__ and row.result is not None:
            self.stats.replayed += 1
            log.info("journal: %s was made before; not made again", key)
            adapter: TypeAdapter[Any] = TypeAdapter(method.__returning__)
            return cast(TelegramType, adapter.validate_python(json.loads(row.result), context={"bot": bot}))
        if row.state == OutboxState.SENDING:
            self.stats.in_doubt += 1
            log.warning(
                "journal: %s was in flight when the bot stopped; Telegram may have it: made again", key
            )
        return None

    async def _write(
        self,
        keys: Iterable[str],
        method: TelegramMethod[Any],
        state: OutboxState,
        *,
        result: str | None = None,
        error: str | None = None,
        existing: bool = False,
    ) -> bool:
        """Record ``state`` for the calls ``keys`` (committed with what else is queued); whether
        it was recorded. ``existing``: the rows were written before and are only updated (a row
        deleted meanwhile, by an erasure, stays deleted)."""
        assert self.writes is not None
        scope = _SCOPE.get()
        now = utcnow()
        if existing:
            marks = [{"k": key, "s": state, "r": result, "e": error, "d": now} for key in keys]
            try:
                await self.writes.write(MARK_CALLS, marks)
            except (OperationalError, OSError) as exc:
                log.error("journal: could not record %s (%s): %s", marks[0]["k"], state, exc)
                return False
            return True
        chat = getattr(method, "chat_id", None)
        rows = [
            {
                "key": key,
                "update_id": int(key.split(":", 1)[0]),
                "method": method.__api_method__,
                "chat_id": chat if isinstance(chat, int) else None,
                "state": state,
                "attempts": 1,
                "result": result,
                "error": error,
                "created_at": now,
                "done_at": None if state == OutboxState.SENDING else now,
            }
            for key in keys
        ]
        try:
            await self.writes.write(RECORD_CALLS, rows)  # committed with what else is queued
        except (OperationalError, OSError) as exc:
            # The call itself is what matters; a replay of this update may repeat it.
            log.error("journal: could not record %s (%s): %s", rows[0]["key"], state, exc)
            if scope is not None and state == OutboxState.SENDING:
                raise
            return False
        return True

    async def _retrying(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
        *,
        begin: Callable[[], Awaitable[None]] | None = None,
        record: Callable[[TelegramType], Awaitable[None]] | None = None,
    ) -> TelegramType:
        """Make the call, retrying. ``begin`` and ``record`` (the journal's "sending" and "sent")
        run within the call's slot of :attr:`in_flight`, so at most that many calls are ever
        "sending" (in doubt should the process die)."""
        failures = 0
        while True:
            try:
                async with self._slots:
                    if begin is not None and not failures:
                        await begin()
                    response = await make_request(bot, method)
                    if record is not None:
                        await record(response)
                return response
            except TelegramRetryAfter as exc:
                failures += 1
                if failures > self.retries:
                    raise
                self.stats.retried_after_429 += 1
                self._retrying_hook("429")
                pause = min(float(exc.retry_after), self.max_pause * 4)
                log.warning("429 on %s: waiting %ss before retrying", method.__api_method__, pause)
                await asyncio.sleep(pause)
            except (TelegramServerError, TelegramNetworkError) as exc:
                failures += 1
                if failures > self.retries:
                    raise
                self.stats.retried_after_error += 1
                self._retrying_hook("server" if isinstance(exc, TelegramServerError) else "network")
                pause = min(self.backoff * 2 ** (failures - 1), self.max_pause) * random.uniform(0.8, 1.2)
                log.warning("%s on %s: retrying in %.2fs", exc.message, method.__api_method__, pause)
                await asyncio.sleep(pause)

    def _retrying_hook(self, reason: str) -> None:
        if self.on_retry is not None:
            self.on_retry(reason)


def _no_default(value: Any) -> None:
    """aiogram's ``Default`` placeholders (unset bot defaults) are not stored."""
    return None


_MESSAGE_KEPT = ("message_id", "date", "message_thread_id", "is_topic_message", "media_group_id")
_MESSAGE_INCLUDE: dict[str, Any] = {key: True for key in _MESSAGE_KEPT} | {"chat": {"id", "type"}}


def _jsonable(result: Any) -> Any:
    """What a replay needs of a call's result: ids, never the text (the journal is not a second
    copy of conversations; an erasure deletes a customer's entries all the same)."""
    if isinstance(result, list):
        return [_jsonable(item) for item in result]
    if not isinstance(result, BaseModel):
        return result
    if isinstance(result, Message):  # the common case: only what is kept is dumped
        return result.model_dump(
            mode="json", exclude_none=True, fallback=_no_default, include=_MESSAGE_INCLUDE
        )
    dumped = result.model_dump(mode="json", exclude_none=True, fallback=_no_default)
    if "message_thread_id" in dumped and "icon_color" in dumped:  # a ForumTopic: its name names people
        return {**dumped, "name": "", "icon_custom_emoji_id": None}
    return dumped


async def _record_calls(session: AsyncSession, items: list[list[dict[str, Any]]]) -> list[None]:
    """Journal rows of many calls in one upsert (a key queued twice: the later row wins)."""
    latest = {row["key"]: row for rows in items for row in rows}
    for chunk in chunks(list(latest.values()), 200):
        await upsert(session, OutboxCall, chunk, ["key"], ["state", "result", "error", "done_at"])
    return [None] * len(items)


async def _store_updates(session: AsyncSession, items: list[list[dict[str, Any]]]) -> list[set[int]]:
    """Inbox rows of many receptions in one insert; each gets the update ids new to it (an
    update received twice at once is new to the first reception only)."""
    owner: dict[int, int] = {}
    rows = []
    for number, item in enumerate(items):
        for row in item:
            if row["update_id"] not in owner:
                owner[row["update_id"]] = number
                rows.append(row)
    new: set[int] = set()
    for chunk in chunks(rows, 200):
        new |= await insert_new(session, chunk)
    out: list[set[int]] = [set() for _ in items]
    for update_id in new:
        out[owner[update_id]].add(update_id)
    return out


async def _mark_done(session: AsyncSession, items: list[tuple[str, list[int]]]) -> list[None]:
    """Updates processed by their owner: done, their payload dropped."""
    by_owner: dict[str, list[int]] = {}
    for owner, update_ids in items:
        by_owner.setdefault(owner, []).extend(update_ids)
    now = utcnow()
    for owner, update_ids in by_owner.items():
        for chunk in chunks(update_ids):
            await session.execute(
                update(InboxUpdate)
                .where(InboxUpdate.update_id.in_(chunk), InboxUpdate.owner == owner)
                .values(
                    state=InboxState.DONE,
                    processed_at=now,
                    payload=None,
                    error=None,
                    owner=None,
                    lease_until=None,
                )
            )
    return [None] * len(items)


async def _mark_calls(session: AsyncSession, items: list[list[dict[str, Any]]]) -> list[None]:
    """Outcomes of calls journaled before, in one executemany of UPDATEs by key."""
    marks = [mark for item in items for mark in item]
    await session.execute(_mark_statement(), parameters(marks))
    return [None] * len(items)


RECORD_CALLS = Batched("journal", _record_calls)
MARK_CALLS = Batched("journal outcomes", _mark_calls)
STORE_UPDATES = Batched("inbox", _store_updates)
MARK_DONE = Batched("inbox done", _mark_done)


def install_journal(bot: Bot, journal: Journal) -> Journal:
    """Put ``journal`` on the bot's session (replacing an earlier one)."""
    manager = bot.session.middleware
    for existing in [m for m in manager._middlewares if isinstance(m, Journal)]:
        manager.unregister(existing)
    manager(journal)
    return journal


@functools.cache
def _upsert_statement(dialect: str, table: Table, keys: tuple[str, ...], update_cols: tuple[str, ...]) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(table)
    return statement.on_conflict_do_update(
        index_elements=list(keys), set_={col: statement.excluded[col] for col in update_cols}
    )


@functools.cache
def _mark_statement() -> Any:
    """UPDATE of one journal row's outcome, parameters k(ey), s(tate), r(esult), e(rror), d(one_at)."""
    table = OutboxCall.__table__
    return (
        update(table)
        .where(table.c.key == bindparam("k"))
        .values(state=bindparam("s"), result=bindparam("r"), error=bindparam("e"), done_at=bindparam("d"))
    )


@functools.cache
def _insert_new_statement(dialect: str) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        insert(InboxUpdate.__table__)
        .on_conflict_do_nothing(index_elements=["update_id"])
        .returning(InboxUpdate.__table__.c.update_id)
    )


async def upsert(
    session: AsyncSession, table: Any, rows: list[dict[str, Any]], keys: list[str], update_cols: list[str]
) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE SET update_cols, on SQLite and PostgreSQL.

    The statement is built once per table and columns and the rows passed as parameters: built
    anew with ``.values(rows)`` it cost more CPU than the transaction around it (~1 ms a call)."""
    statement = _upsert_statement(session.bind.dialect.name, table.__table__, tuple(keys), tuple(update_cols))
    await session.execute(statement, parameters(rows))


async def insert_new(session: AsyncSession, rows: list[dict[str, Any]]) -> set[int]:
    """Insert inbox rows that are not there yet; the update ids that were new."""
    statement = _insert_new_statement(session.bind.dialect.name)
    return set((await session.scalars(statement, parameters(rows))).all())


# -- inbound: the inbox ---------------------------------------------------------------------------


def instance_name(settings: DeliverySettings) -> str:
    return settings.instance or socket.gethostname()


class Inbox:
    """Stores updates, claims them, feeds them to the dispatcher in order, marks them done."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        dispatcher: Dispatcher,
        bot: Bot,
        settings: DeliverySettings,
        *,
        retry_pause: float = 1.0,
        writes: GroupCommit | None = None,
    ) -> None:
        self.sessions = sessions
        self.writes = writes or GroupCommit(sessions)
        self.dp = dispatcher
        self.bot = bot
        self.settings = settings
        self.owner = instance_name(settings)
        self.retry_pause = retry_pause
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._done: list[int] = []  # processed, not yet marked done in the database
        self._flusher: asyncio.Task[None] | None = None
        self.on_received: Callable[[], None] | None = None
        # Called with the updates of each arrival, before they are stored (e.g. to start work
        # that does not depend on the database: the search of a customer's question).
        self.on_arrival: Callable[[Sequence[Update]], None] | None = None
        self.on_processed: Callable[[str], None] | None = None
        self.processed = 0

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    # -- receiving --------------------------------------------------------------------------------

    async def accept(self, updates: Sequence[Update]) -> None:
        """Store ``updates`` (those not stored yet) claimed by this replica, then process them.

        Returns once they are committed: only then may Telegram hear they arrived."""
        if not updates:
            return
        if self.on_arrival is not None:
            try:
                self.on_arrival(updates)
            except Exception:  # only a head start: the updates are handled all the same
                log.exception("inbox: the arrival hook failed on updates %s", [u.update_id for u in updates])
        now = utcnow()
        lease = now + timedelta(seconds=self.settings.lease_seconds)
        rows = [
            {
                "update_id": u.update_id,
                "payload": u.model_dump_json(exclude_unset=True),
                "state": InboxState.PROCESSING,
                "attempts": 1,
                "owner": self.owner,
                "lease_until": lease,
                "next_try_at": now,
                "received_at": now,
            }
            for u in updates
        ]
        new = await self.writes.write(STORE_UPDATES, rows)  # committed with what else is queued
        if self.on_received is not None:
            for _ in new:
                self.on_received()
        for u in sorted(updates, key=lambda u: u.update_id):
            if u.update_id in new:
                self._start(u.update_id, u, attempts=1)

    # -- processing --------------------------------------------------------------------------------

    def _start(
        self, update_id: int, update: Update | None, *, attempts: int, payload: str | None = None
    ) -> None:
        if update_id in self._inflight:
            return
        if update is None:
            try:
                update = Update.model_validate_json(payload or "", context={"bot": self.bot})
            except ValueError as exc:
                log.error("inbox: update %s cannot be read back (%s); marked failed", update_id, exc)
                failed = asyncio.create_task(self._finish(update_id, exc, attempts=attempts))
                self._inflight[update_id] = failed
                failed.add_done_callback(lambda _t: self._inflight.pop(update_id, None))
                return
        task = asyncio.create_task(self._process(update, attempts), name=f"update-{update_id}")
        self._inflight[update_id] = task
        task.add_done_callback(lambda _t: self._inflight.pop(update_id, None))

    async def _process(self, update: Update, attempts: int) -> None:
        # No await before feed_update: updates of one chat must reach the sequencer in order.
        scope = UpdateScope(
            update.update_id,
            attempt=attempts,
            max_attempts=self.settings.max_attempts,
            retry_pause=self.retry_pause,
            settle_timeout=self.settle_timeout,
            on_attempt=functools.partial(self._count_attempt, update.update_id),
        )
        token = _SCOPE.set(scope)
        try:
            try:
                await self.dp.feed_update(self.bot, update)
            except Exception as exc:  # the dispatcher's error handler did not take it
                scope.failure = scope.failure or exc
                log.error("update %s failed: %r", update.update_id, exc, exc_info=exc)
            await scope.settle(scope.settle_timeout)
        finally:
            _SCOPE.reset(token)
        try:
            await self._finish(update.update_id, scope.failure, attempts=scope.attempt)
        except (OperationalError, OSError) as exc:
            log.error(
                "inbox: could not mark update %s done (%s); it will be processed again", update.update_id, exc
            )

    @property
    def settle_timeout(self) -> float:
        """How long an update waits for the calls it queued before it counts as handled."""
        return max(self.settings.lease_seconds / 2, 1.0)

    async def _count_attempt(self, update_id: int, attempt: int) -> None:
        """An update handled again in place (:class:`RetryInTurn`): its row counts the attempt,
        so a crash now leaves the next start the right number of attempts still allowed."""
        if self.on_processed is not None:
            self.on_processed("retry")
        try:
            async with self.sessions() as session, session.begin():
                await session.execute(
                    update(InboxUpdate)
                    .where(InboxUpdate.update_id == update_id, InboxUpdate.owner == self.owner)
                    .values(attempts=attempt)
                )
        except (OperationalError, OSError) as exc:  # the attempt goes ahead all the same
            log.warning("inbox: could not count attempt %d of update %s (%s)", attempt, update_id, exc)

    async def _finish(self, update_id: int, failure: BaseException | None, *, attempts: int) -> None:
        now = utcnow()
        values: dict[str, Any]
        if failure is None:  # the common case: marked in batches
            self._done.append(update_id)
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.create_task(self._write_done())
            self.processed += 1
            if self.on_processed is not None:
                self.on_processed("done")
            return
        if is_transient(failure) and attempts < self.settings.max_attempts:
            outcome = "retry"
            pause = retry_pause(self.retry_pause, attempts)
            values = {"state": InboxState.PENDING, "next_try_at": now + timedelta(seconds=pause)}
            log.warning("update %s: %s; processing it again in %.0fs", update_id, failure, pause)
        else:
            outcome = "failed"
            values = {
                "state": InboxState.FAILED,
                "attempts": attempts,
                "processed_at": now,
                "error": f"{type(failure).__name__}: {failure}",
            }
        values |= {"owner": None, "lease_until": None}
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(InboxUpdate)
                .where(InboxUpdate.update_id == update_id, InboxUpdate.owner == self.owner)
                .values(**values)
            )
        if self.on_processed is not None:
            self.on_processed(outcome)

    async def flush(self) -> None:
        """Mark the updates finished so far done (a crash before that only means they are
        processed again, answered from the journal)."""
        flusher = self._flusher
        if flusher is not None and not flusher.done() and flusher is not asyncio.current_task():
            await asyncio.wait({flusher})
        await self._write_done()

    async def _write_done(self) -> None:
        """What finished while the last mark was written goes in the next one (group commit)."""
        while self._done:
            batch, self._done = self._done, []
            try:
                await self.writes.write(MARK_DONE, (self.owner, batch))
            except (OperationalError, OSError) as exc:
                log.error("inbox: could not mark %d updates done (%s); will retry", len(batch), exc)
                self._done.extend(batch)
                await asyncio.sleep(1.0)

    async def claim_due(self, *, recovering: bool = False, page: int = 200) -> int:
        """Claim what is due (pending past its pause, leases run out, and at start what this
        replica held when it stopped) and process it in update order; returns how many.

        All of it, ``page`` rows at a time: what this replica held at a crash can be hundreds of
        updates, and one left for the sweep would be answered after its chat's later messages."""
        now = utcnow()
        due = or_(
            and_(InboxUpdate.state == InboxState.PENDING, InboxUpdate.next_try_at <= now),
            and_(InboxUpdate.state == InboxState.PROCESSING, InboxUpdate.lease_until < now),
        )
        if recovering:
            due = or_(due, and_(InboxUpdate.state == InboxState.PROCESSING, InboxUpdate.owner == self.owner))
        lease = now + timedelta(seconds=self.settings.lease_seconds)
        total = 0
        after = -1
        while True:
            async with self.sessions() as session:
                candidates = list(
                    await session.scalars(
                        select(InboxUpdate.update_id)
                        .where(due, InboxUpdate.update_id > after)
                        .order_by(InboxUpdate.update_id)
                        .limit(page)
                    )
                )
            if not candidates:
                return total
            after = candidates[-1]
            ids = [update_id for update_id in candidates if update_id not in self._inflight]
            if ids:
                total += await self._claim(ids, due, lease, recovering=recovering)
            if len(candidates) < page:
                return total

    async def _claim(self, ids: list[int], due: Any, lease: datetime, *, recovering: bool) -> int:
        async with self.sessions() as session, session.begin():
            # one compare-and-set: rows another replica claimed meanwhile no longer match ``due``
            result = await session.execute(
                update(InboxUpdate)
                .where(InboxUpdate.update_id.in_(ids), due)
                .values(
                    state=InboxState.PROCESSING,
                    owner=self.owner,
                    lease_until=lease,
                    attempts=InboxUpdate.attempts + 1,
                )
                .returning(InboxUpdate.update_id, InboxUpdate.attempts, InboxUpdate.payload)
                .execution_options(synchronize_session=False)
            )
            claimed = sorted((row[0], row[1], row[2]) for row in result.all())
        for update_id, attempts, payload in claimed:
            if recovering:
                log.info("inbox: update %s left unfinished; processing it (attempt %d)", update_id, attempts)
            self._start(update_id, None, attempts=attempts, payload=payload)
        return len(claimed)

    async def renew_leases(self) -> None:
        if not self._inflight:
            return
        lease = utcnow() + timedelta(seconds=self.settings.lease_seconds)
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(InboxUpdate)
                .where(InboxUpdate.update_id.in_(list(self._inflight)), InboxUpdate.owner == self.owner)
                .values(lease_until=lease)
            )

    async def sweep(self, interval: float, stop: asyncio.Event) -> None:
        """Every ``interval`` seconds: renew leases, claim what became due."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await stop.wait()
            if stop.is_set():
                return
            try:
                await self.renew_leases()
                await self.claim_due()
            except (OperationalError, OSError) as exc:
                log.warning("inbox: sweep failed (%s); will retry", exc)

    async def drain(self, timeout: float) -> int:  # noqa: ASYNC109
        """Let in-flight updates finish for up to ``timeout`` seconds; cancel the rest (they stay
        claimed by this replica and are processed again at its next start). Returns how many
        were cancelled."""
        tasks = list(self._inflight.values())
        late: set[asyncio.Task[None]] = set()
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=timeout)
            for task in late:
                task.cancel()
            for task in late:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        with contextlib.suppress(OperationalError, OSError):
            await self.flush()
        return len(late)

    async def room(self, limit: int) -> None:
        """Wait until fewer than ``limit`` updates are being handled."""
        while len(self._inflight) >= limit:
            await asyncio.wait(list(self._inflight.values()), return_when=asyncio.FIRST_COMPLETED)

    @property
    def busy(self) -> bool:
        """Whether an update is being handled (its follow-ups included: see :func:`track`)."""
        return bool(self._inflight)

    async def wait_idle(self) -> None:
        while self._inflight:
            await asyncio.wait(list(self._inflight.values()))
        await self.flush()


async def depth(sessions: async_sessionmaker[AsyncSession]) -> int:
    """Updates stored and not yet processed: for health checks and metrics."""
    async with sessions() as session:
        updates = await session.scalar(
            select(func.count())
            .select_from(InboxUpdate)
            .where(InboxUpdate.state.in_([InboxState.PENDING, InboxState.PROCESSING]))
        )
    return int(updates or 0)


async def forget_done(sessions: async_sessionmaker[AsyncSession], *, older_than: timedelta) -> int:
    """Drop inbox rows processed long ago and their journal entries (the daily purge)."""
    cutoff = utcnow() - older_than
    async with sessions() as session, session.begin():
        finished = select(InboxUpdate.update_id).where(
            InboxUpdate.state.in_([InboxState.DONE, InboxState.FAILED]), InboxUpdate.processed_at < cutoff
        )
        await session.execute(delete(OutboxCall).where(OutboxCall.update_id.in_(finished)))
        result = await session.execute(delete(InboxUpdate).where(InboxUpdate.update_id.in_(finished)))
    return int(result.rowcount or 0)


# -- receiving: long polling and the webhook ----------------------------------------------------


async def poll(
    bot: Bot,
    inbox: Inbox,
    stop: asyncio.Event,
    *,
    poll_timeout: int,
    allowed_updates: list[str] | None,
    backoff: float = 1.0,
    max_inflight: int = 1000,
) -> None:
    """getUpdates until ``stop``; a batch is confirmed (next offset) only after it is stored.
    With ``max_inflight`` updates being handled, no more are fetched until one is done."""
    offset: int | None = None
    failures = 0
    while not stop.is_set():
        await inbox.room(max_inflight)
        try:
            updates = await bot(
                GetUpdates(offset=offset, timeout=poll_timeout, allowed_updates=allowed_updates),
                request_timeout=poll_timeout + 10,
            )
            await inbox.accept(updates)
        except (TelegramAPIError, OperationalError, OSError, TimeoutError) as exc:
            failures += 1
            pause = min(backoff * 2 ** min(failures - 1, 6), 60.0)
            log.warning("receiving updates failed (%s); retrying in %.1fs", exc, pause)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await stop.wait()
            continue
        failures = 0
        if updates:
            offset = updates[-1].update_id + 1


SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


def webhook_app(
    inbox: Inbox, bot: Bot, *, path: str, secret: str, max_inflight: int = 1000
) -> web.Application:
    """The webhook endpoint: 401 without the secret header, 200 once the update is stored.

    With ``max_inflight`` updates being handled, a new one is not taken (nor answered) until one
    is done: Telegram holds it, and sends no more than its open connections meanwhile."""

    async def receive(request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), secret.encode()):
            log.warning("webhook: a request without the right secret token from %s", request.remote)
            return web.json_response({"ok": False, "description": "Unauthorized"}, status=401)
        try:
            update = Update.model_validate(await request.json(), context={"bot": bot})
        except ValueError as exc:
            log.warning("webhook: not an update: %s", exc)
            return web.json_response({"ok": False, "description": "Bad Request"}, status=400)
        await inbox.room(max_inflight)
        try:
            await inbox.accept([update])
        except (OperationalError, OSError) as exc:
            log.error("webhook: could not store update %s: %s", update.update_id, exc)
            return web.json_response({"ok": False, "description": "try again"}, status=503)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post(path or "/", receive)
    return app


async def start_webhook(
    inbox: Inbox,
    bot: Bot,
    *,
    listen: tuple[str, int],
    path: str,
    secret: str,
    max_inflight: int = 1000,
) -> web.AppRunner:
    """Bind the webhook endpoint (before setWebhook, so no delivery finds it closed); the
    caller cleans the runner up."""
    app = webhook_app(inbox, bot, path=path, secret=secret, max_inflight=max_inflight)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, listen[0], listen[1]).start()
    log.info("webhook: listening on %s:%s%s", listen[0], listen[1], path)
    return runner
